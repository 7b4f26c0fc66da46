"""kNN retrieval monitor of pretraining: the teacher backbone's mAP / Rank-1 on a small labeled set.

DINO and iBOT users watch kNN accuracy while pretraining; the ReID analogue is retrieval on a
query/gallery split: two features per image, the CLS token and the mean patch token (both of the
final norm, L2-normalised), Euclidean ranking, `evaluate_rank`. Keys of the metrics line:
`knn_cls_map`, `knn_cls_rank1`, `knn_patch_map`, `knn_patch_rank1` (fractions).

It must not change the run: the evaluation runs inside `torch.random.fork_rng` (the DataLoader
draws its base seed from the global generator), under no_grad, and puts the backbone back in the
mode it found. Rank 0 evaluates; every rank then meets at a barrier, so the others wait there
rather than inside the next step's collectives.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from personvit.config.finetune import ReIDDataConfig
from personvit.config.pretrain import KnnMonitorConfig
from personvit.data.device_augment import IMAGENET_MEAN, IMAGENET_STD
from personvit.data.reid import ReIDSplit, read_reid_split
from personvit.data.shards import ShardError
from personvit.distributed import barrier
from personvit.engine.evaluate import EvaluationError, embed_split
from personvit.evaluation import evaluate_rank, pairwise_distance
from personvit.runlog import get_logger

log = get_logger(__name__)

FEATURES = ("cls", "patch")


def token_features(tokens: torch.Tensor) -> torch.Tensor:
    """Backbone tokens [B, 1 + N, D] -> [B, 2D]: the CLS token, then the mean of the patch tokens."""
    return torch.cat([tokens[:, 0], tokens[:, 1:].mean(dim=1)], dim=1)


def retrieval_scores(q_feats: torch.Tensor, g_feats: torch.Tensor, q_pids, g_pids, q_camids, g_camids) -> dict:
    """{"map", "rank1"} of L2-normalised features ranked by Euclidean distance."""
    distmat = pairwise_distance(q_feats, g_feats, metric="euclidean").numpy()
    result = evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=1)
    return {"map": float(result["mAP"]), "rank1": float(result["cmc"][0])}


def has_true_match(query: ReIDSplit, gallery: ReIDSplit) -> bool:
    """Whether some query has a gallery image of its person from another camera (the protocol's match)."""
    return any(bool(((gallery.pids == p) & (gallery.camids != c)).any()) for p, c in zip(query.pids, query.camids))


@contextmanager
def _isolated(module: nn.Module, device: torch.device):
    """Eval mode, no grad and a private RNG inside; the module's modes and the generators restored after."""
    modes = [m.training for m in module.modules()]
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            module.eval()
            yield
    finally:
        for m, mode in zip(module.modules(), modes):
            m.training = mode


class KnnMonitor:
    """Retrieval figures of a backbone every `cfg.every_epochs` epochs (and after the last epoch).

    Args:
        cfg: the `monitor` section.
        img_size: input (H, W) when `cfg.img_size` is unset (the run's global view size).
        epochs: the run's length (the last epoch is always evaluated).
        device: where the backbone lives.
        amp_dtype: the run's autocast dtype (None = full precision).
        is_main: this rank evaluates; the others only meet at the barrier.
    """

    def __init__(self, cfg: KnnMonitorConfig, img_size, epochs: int, device: torch.device,
                 amp_dtype: torch.dtype | None, is_main: bool) -> None:
        self.cfg, self.epochs, self.device, self.amp_dtype, self.is_main = cfg, epochs, device, amp_dtype, is_main
        self.data = ReIDDataConfig(shards=cfg.shards, query_split=cfg.query_split, gallery_split=cfg.gallery_split,
                                   img_size=tuple(cfg.img_size or img_size), num_workers=0,
                                   mean=IMAGENET_MEAN, std=IMAGENET_STD)  # the pretraining normalisation
        self.query = self.gallery = None
        if self.enabled:
            # Read up front on every rank (small sets): a bad shard set fails every rank before training.
            self.query = read_reid_split(cfg.shards, cfg.query_split)
            self.gallery = read_reid_split(cfg.shards, cfg.gallery_split)
            if not has_true_match(self.query, self.gallery):
                # Found here, not at the first epoch end hours later.
                raise ShardError(f"monitor.shards {cfg.shards}: no {cfg.query_split} image has a same-person "
                                 f"{cfg.gallery_split} image from another camera; nothing to retrieve")
            log.info("kNN monitor: %s, %d query / %d gallery images, every %d epochs", cfg.shards,
                     len(self.query), len(self.gallery), cfg.every_epochs)

    @property
    def enabled(self) -> bool:
        return self.cfg.every_epochs > 0

    def due(self, epoch: int) -> bool:
        """Whether the end of (0-based) `epoch` is evaluated."""
        done = epoch + 1
        return self.enabled and (done % self.cfg.every_epochs == 0 or done == self.epochs)

    def at_epoch_end(self, backbone: nn.Module, epoch: int) -> dict[str, float]:
        """Evaluate `backbone` if `epoch` is due; returns the metrics on rank 0 (else `{}`).

        Every rank calls this at every epoch end; all of them reach the barrier when it is due.
        """
        if not self.due(epoch):
            return {}
        out = self.evaluate(backbone) if self.is_main else {}
        if out:
            log.info("kNN monitor after epoch %d: %s", epoch + 1,
                     " ".join(f"{k[4:]}={100 * v:.1f}%" for k, v in out.items()))
        barrier()
        return out

    def evaluate(self, backbone: nn.Module) -> dict[str, float]:
        """`knn_<feature>_<metric>` of `backbone` on the monitor's query / gallery splits."""
        q, g = self.query, self.gallery
        dim = 2 * backbone.embed_dim
        with _isolated(backbone, self.device):
            feats = [embed_split(lambda x: token_features(backbone(x)), dim, split, self.data, self.cfg.batch_size,
                                 self.device, self.amp_dtype, progress=False) for split in (q, g)]
        out: dict[str, float] = {}
        for i, name in enumerate(FEATURES):
            part = slice(i * backbone.embed_dim, (i + 1) * backbone.embed_dim)
            qf, gf = (F.normalize(f[:, part], dim=1) for f in feats)
            try:
                scores = retrieval_scores(qf, gf, q.pids, g.pids, q.camids, g.camids)
            except ValueError as e:
                raise EvaluationError(f"monitor.shards {self.cfg.shards}: {e}") from None
            out.update({f"knn_{name}_{k}": v for k, v in scores.items()})
        return out
