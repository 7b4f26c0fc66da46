"""Per-iteration schedules: iBOT cosine semantics, warm-up, per-epoch use, the pretraining trio."""

from __future__ import annotations

import math

import numpy as np
import pytest

from personvit.config.pretrain import PretrainOptimConfig
from personvit.engine.schedules import cosine_schedule, pretrain_schedules


def test_warmup_is_linear_and_reaches_base_then_cosine_starts_at_base():
    s = cosine_schedule(1e-3, 1e-6, epochs=5, niter_per_ep=4, warmup_epochs=2, start_warmup_value=0.0)
    assert s.shape == (20,) and s.dtype == np.float64
    np.testing.assert_allclose(s[:8], np.linspace(0.0, 1e-3, 8))
    assert s[7] == pytest.approx(1e-3) and s[8] == pytest.approx(1e-3)  # end of warm-up, start of cosine
    assert np.all(np.diff(s[8:]) < 0)
    # Cosine over the 12 remaining iterations, written out independently.
    for i in range(12):
        expected = 1e-6 + 0.5 * (1e-3 - 1e-6) * (1 + math.cos(math.pi * i / 12))
        assert s[8 + i] == pytest.approx(expected, rel=1e-12)
    assert 1e-6 < s[-1] < 1e-6 + 2e-5


def test_increasing_schedule_without_warmup():
    s = cosine_schedule(0.04, 0.4, epochs=3, niter_per_ep=10)
    assert s[0] == pytest.approx(0.04)
    assert np.all(np.diff(s) > 0) and s[-1] < 0.4


def test_per_epoch_use_with_one_iteration_per_epoch():
    s = cosine_schedule(4e-4, 8e-7, epochs=120, niter_per_ep=1, warmup_epochs=20, start_warmup_value=4e-6)
    assert len(s) == 120
    assert s[0] == pytest.approx(4e-6) and s[19] == pytest.approx(4e-4) and s[20] == pytest.approx(4e-4)


def test_all_warmup_and_bad_arguments():
    s = cosine_schedule(1.0, 0.0, epochs=2, niter_per_ep=3, warmup_epochs=2)
    np.testing.assert_allclose(s, np.linspace(0, 1, 6))
    with pytest.raises(ValueError, match="warmup_epochs"):
        cosine_schedule(1.0, 0.0, epochs=2, niter_per_ep=3, warmup_epochs=3)
    with pytest.raises(ValueError, match="niter_per_ep"):
        cosine_schedule(1.0, 0.0, epochs=2, niter_per_ep=0)


def test_pretrain_schedules_trio_and_step_lookup():
    sched = pretrain_schedules(2e-3, 1e-6, 1, 0.04, 0.4, 0.996, 1.0, epochs=3, niter_per_ep=5)
    lr, wd, m = sched.at(5)
    assert lr == pytest.approx(2e-3) and wd > 0.04 and 0.996 < m < 1.0
    assert sched.momentum[0] == pytest.approx(0.996) and sched.momentum[-1] < 1.0
    assert sched.lr[0] == 0.0
    with pytest.raises(IndexError, match="step 15"):
        sched.at(15)


@pytest.mark.parametrize(("batch", "expected"), [(256, 5e-4), (1024, 2e-3), (4096, 2e-3), (32, 6.25e-5)])
def test_lr_scales_with_batch_and_is_capped(batch, expected):
    assert PretrainOptimConfig().scaled_lr(batch) == pytest.approx(expected)
