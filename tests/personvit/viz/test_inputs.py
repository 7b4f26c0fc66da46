"""load_model: a run's teacher, or its architecture with fresh weights (the random-init baseline)."""

from __future__ import annotations

import torch

from personvit.viz.inputs import load_model
from tests.support.viz_fixtures import tiny_model


def _equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_teacher_weights_are_the_checkpoints(pretrain_run):
    lm = load_model(pretrain_run)
    assert _equal(lm.model, tiny_model(0)) and lm.step == 7 and lm.head_mlp is not None


def test_random_weights_keep_the_architecture_and_the_callers_seed(pretrain_run):
    torch.manual_seed(5)
    lm = load_model(pretrain_run, random_weights=True)
    assert _equal(lm.model, tiny_model(5))  # the run's shapes, initialised under the caller's seed
    assert not _equal(lm.model, load_model(pretrain_run).model)
    assert lm.step is None and lm.head_mlp is None and not lm.model.training
