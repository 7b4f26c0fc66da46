"""Gradient averaging over ranks whose result does not depend on the process's history.

Why not plain DDP: a floating-point all-reduce is exact only for a given split of the values into
buffers (gloo's ring, NCCL's ring/tree both sum chunk by chunk, and the chunks follow the buffer).
DDP reduces the first step after every start in its initial bucket layout (torch 2.14: one bucket
of all parameters, reverse definition order) and rebuilds the buckets after it (gradient-ready
order, 1 MiB first bucket, 25 MiB after). A run resumed at step k reduces step k in the initial
layout where the uninterrupted run used the rebuilt one: at world size 4 on gloo the sums differ in
the last bit (world sizes 1 and 2 are immune: a sum of two values does not depend on the order).

`benchmarks/grad_reduce.py` measured the candidates (benchmarks/RESULTS.md, issue J):
DDP with `static_graph=True` or one huge bucket still rebuilds (reorders) and is not exact; DDP
with `find_unused_parameters=True` never rebuilds and is exact; one flat all-reduce after
backward is exact and was the fastest (or within noise of it) on CPU, so the engines use
`FlatGradReducer`. It gives up DDP's overlap of communication with backward; on GPUs
`find_unused_parameters=True` (exact, overlapped, one extra graph traversal per step) is the
alternative to measure.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["FlatGradReducer"]


class FlatGradReducer:
    """Average the gradients of `params` over ranks in one flat buffer of fixed layout.

    The buffer holds every trainable parameter's gradient in definition order, so each value sits
    at the same offset of the same-sized collective at every step of every run: the sum is a
    function of the gradients alone. A gradient that is None on this rank counts as zeros (and is
    set afterwards, like DDP's), so ranks always agree on the collective's shape.

    Args:
        params: the model's parameters; those not requiring gradients are skipped.
        group: process group (default: the world).
    """

    def __init__(self, params: Iterable[nn.Parameter], group: dist.ProcessGroup | None = None) -> None:
        self.params = [p for p in params if p.requires_grad]
        if not self.params:
            raise ValueError("FlatGradReducer: no trainable parameters")
        kinds = {(p.dtype, p.device) for p in self.params}
        if len(kinds) != 1:
            raise ValueError(f"FlatGradReducer: parameters of several dtypes/devices {sorted(map(str, kinds))}")
        self.group = group
        self.numel = sum(p.numel() for p in self.params)
        self._buffer = torch.empty(self.numel, dtype=self.params[0].dtype, device=self.params[0].device)

    @torch.no_grad()
    def all_reduce_mean_(self) -> None:
        """Replace every gradient by its mean over the ranks (call between backward and step)."""
        views, offset = [], 0
        for p in self.params:
            view = self._buffer[offset : offset + p.numel()]
            offset += p.numel()
            if p.grad is None:
                view.zero_()
            else:
                view.copy_(p.grad.reshape(-1))
            views.append(view)
        dist.all_reduce(self._buffer, op=dist.ReduceOp.SUM, group=self.group)
        self._buffer.div_(dist.get_world_size(self.group))
        for p, view in zip(self.params, views, strict=True):
            if p.grad is None:
                p.grad = view.view_as(p).clone()
            else:
                p.grad.copy_(view.view_as(p))
