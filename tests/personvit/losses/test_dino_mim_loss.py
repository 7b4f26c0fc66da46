"""DINO + MIM loss: a loop-by-loop reference, invariances, lambda terms, purity, temperature schedule."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from personvit.losses import DINOMIMLoss, dino_mim_loss, warmup_temperature

TEMPS = {"student_temp": 0.1, "teacher_temp": 0.04, "teacher_patch_temp": 0.07}


def inputs(vs=4, b=3, n=5, k=7, kp=6, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    masks = torch.rand(2, b, n, generator=g) < 0.5
    masks[0, 0] = False  # one image without masked patches: contributes 0, not NaN
    return {
        "student_cls": r(vs, b, k), "student_patch": r(2, b, n, kp), "teacher_cls": r(2, b, k),
        "teacher_patch": r(2, b, n, kp), "masks": masks, "center": r(k) * 0.1, "center2": r(kp) * 0.1,
    }  # fmt: skip


def softmax(xs, t):
    m = max(x / t for x in xs)
    e = [math.exp(x / t - m) for x in xs]
    return [v / sum(e) for v in e]


def reference(x, student_temp, teacher_temp, teacher_patch_temp, lambda1=1.0, lambda2=1.0):
    """SPEC.md section 3 written as plain loops over python floats."""
    s_cls, t_cls = x["student_cls"].tolist(), x["teacher_cls"].tolist()
    s_p, t_p, masks = x["student_patch"].tolist(), x["teacher_patch"].tolist(), x["masks"].tolist()
    c, c2 = x["center"].tolist(), x["center2"].tolist()
    dino_terms = []
    for q in range(2):
        for v in range(len(s_cls)):
            if v == q:
                continue
            per_image = []
            for i in range(len(t_cls[q])):
                t = softmax([a - b for a, b in zip(t_cls[q][i], c)], teacher_temp)
                s = softmax(s_cls[v][i], student_temp)
                per_image.append(-sum(ti * math.log(si) for ti, si in zip(t, s)))
            dino_terms.append(sum(per_image) / len(per_image))
    mim_views = []
    for q in range(2):
        per_image = []
        for i in range(len(t_p[q])):
            total, count = 0.0, 0
            for j in range(len(t_p[q][i])):
                if masks[q][i][j]:
                    t = softmax([a - b for a, b in zip(t_p[q][i][j], c2)], teacher_patch_temp)
                    s = softmax(s_p[q][i][j], student_temp)
                    total += -sum(ti * math.log(si) for ti, si in zip(t, s))
                    count += 1
            per_image.append(total / max(1, count))
        mim_views.append(sum(per_image) / len(per_image))
    dino, mim = sum(dino_terms) / len(dino_terms), sum(mim_views) / 2
    return lambda1 * dino + lambda2 * mim, dino, mim


@pytest.mark.parametrize("vs", [2, 4, 8])
def test_matches_the_loop_reference(vs):
    x = inputs(vs=vs, seed=vs)
    total, dino, mim = dino_mim_loss(**x, **TEMPS, lambda1=0.7, lambda2=1.3)
    ref = reference(x, **TEMPS, lambda1=0.7, lambda2=1.3)
    for got, want in zip((total, dino, mim), ref):
        assert got.dtype == torch.float32 and got.ndim == 0
        assert got.item() == pytest.approx(want, rel=1e-5)


def test_hand_computed_two_prototype_case():
    # K = Kp = 2, B = 1, two global views only, all temperatures 1.
    ln3 = math.log(3)
    t = lambda *rows: torch.tensor(rows, dtype=torch.float64)  # noqa: E731
    x = {
        "student_cls": t([[0.0, 0.0]], [[ln3, 0.0]]),  # softmax: [.5, .5], [.75, .25]
        "teacher_cls": t([[0.0, 0.0]], [[ln3, 0.0]]),
        "student_patch": t([[[0.0, 0.0], [5.0, 1.0]]], [[[ln3, 0.0], [0.0, 0.0]]]),
        "teacher_patch": torch.zeros(2, 1, 2, 2, dtype=torch.float64),  # uniform targets
        "masks": torch.tensor([[[True, False]], [[True, True]]]),
        "center": torch.zeros(2, dtype=torch.float64),
        "center2": torch.zeros(2, dtype=torch.float64),
    }
    total, dino, mim = dino_mim_loss(**x, student_temp=1.0, teacher_temp=1.0, teacher_patch_temp=1.0)
    # Pairs (teacher 0 -> student 1) and (teacher 1 -> student 0).
    h01 = -(0.5 * math.log(0.75) + 0.5 * math.log(0.25))
    h10 = -(0.75 * math.log(0.5) + 0.25 * math.log(0.5))
    assert dino.item() == pytest.approx((h01 + h10) / 2, rel=1e-6)
    # View 0: only patch 0 (uniform student) counts -> ln 2; view 1: mean of h01 and ln 2.
    assert mim.item() == pytest.approx((math.log(2) + (h01 + math.log(2)) / 2) / 2, rel=1e-6)
    assert total.item() == pytest.approx(dino.item() + mim.item(), rel=1e-6)


def test_stays_float32_under_autocast():
    x = inputs(dtype=torch.float32)
    ref = dino_mim_loss(**x, **TEMPS)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = dino_mim_loss(**x, **TEMPS)
    assert torch.equal(out.total, ref.total)


def test_uniform_teacher_and_student_give_log_k():
    x = inputs(k=11, kp=9)
    x["teacher_cls"] = x["center"].expand(2, 3, 11).clone()  # centred -> all zeros -> uniform
    x["teacher_patch"] = x["center2"].expand(2, 3, 5, 9).clone()
    x["student_cls"] = torch.full_like(x["student_cls"], 2.5)
    x["student_patch"] = torch.full_like(x["student_patch"], -1.0)
    x["masks"][:] = True
    _, dino, mim = dino_mim_loss(**x, **TEMPS)
    assert dino.item() == pytest.approx(math.log(11), rel=1e-6)
    assert mim.item() == pytest.approx(math.log(9), rel=1e-6)


def test_uniform_teacher_gives_student_logsumexp_minus_mean():
    x = inputs()
    x["teacher_cls"] = x["center"].expand(2, 3, 7).clone()
    _, dino, _ = dino_mim_loss(**x, **TEMPS)
    s = x["student_cls"] / TEMPS["student_temp"]
    per_view = (torch.logsumexp(s, -1) - s.mean(-1)).mean(-1)  # [Vs]
    expected = (per_view.sum() * 2 - per_view[0] - per_view[1]) / (2 * 4 - 2)
    assert dino.item() == pytest.approx(expected.item(), rel=1e-6)
    assert dino.item() > math.log(7)


def test_lambda_terms_are_separate():
    x = inputs()
    base = dino_mim_loss(**x, **TEMPS)
    weighted = dino_mim_loss(**x, **TEMPS, lambda1=2.0, lambda2=0.5)
    assert torch.equal(base.dino, weighted.dino) and torch.equal(base.mim, weighted.mim)
    assert weighted.total.item() == pytest.approx(2.0 * base.dino.item() + 0.5 * base.mim.item(), rel=1e-6)
    # The DINO term ignores patches, the MIM term ignores CLS logits.
    y = dict(x, student_patch=x["student_patch"] + torch.randn_like(x["student_patch"]))
    z = dict(x, student_cls=x["student_cls"] + torch.randn_like(x["student_cls"]))
    assert torch.equal(dino_mim_loss(**y, **TEMPS).dino, base.dino)
    assert torch.equal(dino_mim_loss(**z, **TEMPS).mim, base.mim)


def test_lambda2_zero_is_dino_only_with_no_patch_gradient():
    x = inputs()
    x["student_patch"].requires_grad_(True)
    x["student_cls"].requires_grad_(True)
    total, dino, mim = dino_mim_loss(**x, **TEMPS, lambda2=0.0)
    assert torch.equal(total, dino) and mim.item() > 0
    total.backward()
    assert x["student_patch"].grad is None and x["student_cls"].grad.abs().sum() > 0


def test_only_masked_patches_count_and_teacher_gets_no_gradient():
    x = inputs()
    x["teacher_cls"].requires_grad_(True)
    x["teacher_patch"].requires_grad_(True)
    x["student_patch"].requires_grad_(True)
    out = dino_mim_loss(**x, **TEMPS)
    out.total.backward()
    assert x["teacher_cls"].grad is None and x["teacher_patch"].grad is None
    g = x["student_patch"].grad.abs().sum(-1)  # [2, B, N]
    assert torch.equal(g > 0, x["masks"])
    no_mask = dict(x, masks=torch.zeros_like(x["masks"]))
    assert dino_mim_loss(**no_mask, **TEMPS).mim.item() == 0.0


def test_pure_and_invariant_to_shifts():
    x = inputs()
    before = {k: v.clone() for k, v in x.items()}
    out = dino_mim_loss(**x, **TEMPS)
    assert all(torch.equal(before[k], x[k]) for k in x)  # nothing modified in place
    shift = torch.randn(7, dtype=torch.float64)
    moved = dict(
        x,
        teacher_cls=x["teacher_cls"] + shift,
        center=x["center"] + shift,
        student_cls=x["student_cls"] + 3.0,
    )
    again = dino_mim_loss(**moved, **TEMPS)
    assert again.total.item() == pytest.approx(out.total.item(), rel=1e-6)


def test_half_precision_inputs_are_computed_in_float32():
    x = inputs(dtype=torch.float32)
    ref = dino_mim_loss(**x, **TEMPS)
    half = {k: (v.bfloat16() if v.is_floating_point() and k != "masks" else v) for k, v in x.items()}
    out = dino_mim_loss(**half, **TEMPS)
    assert out.total.dtype == torch.float32
    assert out.total.item() == pytest.approx(ref.total.item(), rel=0.05)


def test_shape_errors_name_the_argument():
    x = inputs()
    with pytest.raises(ValueError, match=r"masks \(2, 3, 4\) must be \(2, 3, 5\)"):
        dino_mim_loss(**dict(x, masks=x["masks"][..., :4]), **TEMPS)
    with pytest.raises(ValueError, match="center"):
        dino_mim_loss(**dict(x, center=torch.zeros(8)), **TEMPS)
    with pytest.raises(ValueError, match="student_patch"):
        dino_mim_loss(**dict(x, student_patch=x["student_patch"][:1]), **TEMPS)


def test_teacher_temperature_schedule_matches_ibot_linspace():
    expected = np.concatenate([np.linspace(0.04, 0.07, 30), np.full(70, 0.07)])
    got = [warmup_temperature(e, 0.04, 0.07, 30) for e in range(100)]
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert warmup_temperature(0, 0.04, 0.07, 0) == 0.07
    loss = DINOMIMLoss(
        7, 6, teacher_patch_temp=0.05, warmup_teacher_patch_temp=0.03, warmup_teacher_temp_epochs=3
    )
    assert loss.temperatures(0) == (0.04, 0.03)
    assert loss.temperatures(1) == pytest.approx((0.055, 0.04))
    assert loss.temperatures(5) == (0.07, 0.05)


def test_module_uses_the_epoch_temperature_and_updates_centres_after_the_loss():
    x = inputs(dtype=torch.float32)
    module = DINOMIMLoss(7, 6, lambda2=0.5)
    module.center.copy_(x["center"])
    module.center2.copy_(x["center2"])
    out = module(
        x["student_cls"], x["student_patch"], x["teacher_cls"], x["teacher_patch"], x["masks"], epoch=10
    )
    t, t2 = module.temperatures(10)
    ref = dino_mim_loss(**x, student_temp=0.1, teacher_temp=t, teacher_patch_temp=t2, lambda2=0.5)
    assert torch.equal(out.total, ref.total)  # computed with the centres from before the update
    torch.testing.assert_close(module.center, 0.9 * x["center"] + 0.1 * x["teacher_cls"].mean(dim=(0, 1)))
    torch.testing.assert_close(
        module.center2, 0.9 * x["center2"] + 0.1 * x["teacher_patch"].mean(dim=(0, 1, 2))
    )
    assert set(module.state_dict()) == {"center", "center2"}
    with pytest.raises(ValueError, match="student_temp must be > 0"):
        DINOMIMLoss(7, 6, student_temp=0.0)


def test_teacher_entropies_tell_the_two_collapses_apart():
    from personvit.losses import teacher_entropies

    k, b = 64, 32
    center = torch.zeros(k)
    # Uniform collapse: every logit equal -> both entropies ln K.
    ent = teacher_entropies(torch.zeros(2, b, k), center, 0.04)
    torch.testing.assert_close(ent, torch.full((2,), math.log(k)))
    # One-hot collapse: every image on prototype 3 -> both ~0.
    logits = torch.zeros(2, b, k)
    logits[..., 3] = 10.0
    assert teacher_entropies(logits, center, 0.04).max() < 1e-6
    # Healthy: sharp per image, spread over prototypes -> first ~0, second ln(#prototypes used).
    logits = torch.zeros(2, b, k)
    logits[:, torch.arange(b), torch.arange(b) % 16] = 10.0
    per_image, of_mean = teacher_entropies(logits, center, 0.04).tolist()
    assert per_image < 1e-6 and of_mean == pytest.approx(math.log(16), abs=1e-5)
    # The centre is subtracted and the temperature divides, as in the loss.
    x = torch.randn(2, b, k)
    c = torch.randn(k)
    lp = torch.log_softmax((x.double() - c.double()) / 0.07, -1).flatten(0, 1)  # float64 reference
    pm = lp.exp().mean(0)
    ref = torch.stack([-(lp.exp() * lp).sum(-1).mean(), -(pm * pm.log()).sum()]).float()
    torch.testing.assert_close(teacher_entropies(x, c, 0.07), ref, atol=1e-4, rtol=0)
