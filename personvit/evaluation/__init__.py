"""Retrieval evaluation: Market-protocol metrics, chunked distances, k-reciprocal re-ranking."""

from personvit.evaluation.distance import pairwise_distance
from personvit.evaluation.rank import evaluate_rank, write_per_query_csv
from personvit.evaluation.rerank import rerank, rerank_distances

__all__ = ["evaluate_rank", "pairwise_distance", "rerank", "rerank_distances", "write_per_query_csv"]
