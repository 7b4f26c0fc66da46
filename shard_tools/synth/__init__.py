"""Synthetic pedestrians in the Market-1501 layout (demo and tests): `make_synthetic(out, ...)`."""

from shard_tools.synth.dataset import make_synthetic

__all__ = ["make_synthetic"]
