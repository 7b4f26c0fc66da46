"""`PersonViTSSL`: the method object's moves (forward/backward, explicit centre update, EMA, groups)."""

from __future__ import annotations

import copy

import pytest
import torch

from personvit.config.pretrain import HeadConfig, PretrainLossConfig, PretrainModelConfig, PretrainOptimConfig
from personvit.engine.optim import no_weight_decay_names
from personvit.engine.schedules import PretrainSchedules, pretrain_schedules
from personvit.engine.ssl_meta_arch import TERMS, MicroBatch, PersonViTSSL
from personvit.losses import DINOMIMLoss
from personvit.models.build import build_student_teacher

TINY = PretrainModelConfig(
    arch="vit_tiny", patch_size=8, embed_dim=32, depth=2, num_heads=2, drop_path_rate=0.0, attn_backend="sdpa",
    head=HeadConfig(out_dim=64, patch_out_dim=48, hidden_dim=48, bottleneck_dim=16, shared_head=False),
)  # fmt: skip
IMG, B = (64, 32), 3
N = (IMG[0] // 8) * (IMG[1] // 8)


@pytest.fixture
def ssl() -> PersonViTSSL:
    student, teacher = build_student_teacher(TINY, IMG, seed=5)
    return PersonViTSSL(student, teacher, DINOMIMLoss.from_config(PretrainLossConfig(), TINY.head))


def _batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    views = [torch.randn(B, 3, *IMG, generator=g) for _ in range(2)]
    views += [torch.randn(B, 3, 32, 16, generator=g) for _ in range(2)]
    masks = torch.rand(2, B, N, generator=g) < 0.3
    return views, masks


def test_param_groups_follow_the_models_no_weight_decay_and_keep_ibots_rule(ssl):
    decay, no_decay = ssl.param_groups()
    names = {id(p): n for n, p in ssl.student.named_parameters()}
    skipped = {names[id(p)] for p in no_decay["params"]}
    assert skipped == {n for n, p in ssl.student.named_parameters() if n.endswith(".bias") or p.ndim == 1}
    assert skipped == no_weight_decay_names(ssl.student)
    # iBOT decays the position embedding and the CLS token (timm's ViT would not).
    assert {"backbone.pos_embed", "backbone.cls_token"} <= {names[id(p)] for p in decay["params"]}
    assert {f"backbone.{n}" for n in ssl.student.backbone.no_weight_decay()} <= skipped


def test_forward_backward_updates_the_centre_once_and_leaves_the_optimizer_alone(ssl):
    views, masks = _batch()
    reference = copy.deepcopy(ssl)
    with torch.no_grad():
        t_out = reference.teacher(views[:2], patch_views=2)
    expected = reference.loss_fn(*(lambda s: (s.cls, s.patch))(reference.student(views, masks=masks, patch_views=2)),
                                 t_out.cls, t_out.patch, masks, 0, update_center=False)
    reference.update_center(t_out.cls, t_out.patch)

    terms = ssl.forward_backward([MicroBatch(views, masks)], epoch=0)
    assert tuple(terms) == TERMS and terms["loss"] == pytest.approx(float(expected.total.detach()), rel=1e-6)
    assert torch.equal(ssl.loss_fn.center, reference.loss_fn.center)
    assert torch.equal(ssl.loss_fn.center2, reference.loss_fn.center2)
    assert not torch.equal(ssl.loss_fn.center, torch.zeros_like(ssl.loss_fn.center))
    assert all(p.grad is not None for p in ssl.student.backbone.parameters() if p.requires_grad)
    assert all(p.grad is None for p in ssl.teacher.parameters())


def test_non_finite_terms_call_back_before_any_backward(ssl):
    views, masks = _batch()
    views[0] = views[0].clone()
    views[0][0, 0, 0, 0] = float("nan")
    seen = {}
    terms = ssl.forward_backward([MicroBatch(views, masks)], epoch=0, on_non_finite=lambda **t: seen.update(t))
    assert seen and not all(map(lambda v: v == v, seen.values()))  # NaN != NaN
    assert all(p.grad is None for p in ssl.student.parameters())
    assert set(terms) == set(TERMS)


def _ssl(drop_path_rate: float) -> PersonViTSSL:
    cfg = PretrainModelConfig(**{**TINY.__dict__, "drop_path_rate": drop_path_rate})
    student, teacher = build_student_teacher(cfg, IMG, seed=5)
    return PersonViTSSL(student, teacher, DINOMIMLoss.from_config(PretrainLossConfig(), cfg.head))


def _grad_atol(ref: torch.Tensor) -> float:
    """Absolute tolerance of a gradient summed in another order: float32 rounding grows with the
    tensor's largest entries, not with each element (an entry that is a small difference of large
    terms missed 1e-6 by 3e-6 on an AMD EPYC host, max |grad| 14)."""
    return 1e-6 * max(1.0, ref.abs().max().item())


def test_micro_batches_accumulate_to_the_whole_batchs_step():
    """Two halves (gradient accumulation) == the whole batch: gradients, centres, terms; drop path per sample."""
    g = torch.Generator().manual_seed(1)
    b = 4
    views = [torch.randn(b, 3, *IMG, generator=g) for _ in range(2)] + [torch.randn(b, 3, 32, 16, generator=g)]
    masks = torch.rand(2, b, N, generator=g) < 0.3
    whole, split = _ssl(0.3), _ssl(0.3)
    slots = whole.student.backbone.drop_path_slots
    uniforms = torch.rand(len(views), b, slots, generator=g)
    terms = whole.forward_backward([MicroBatch(views, masks, uniforms)], epoch=0)
    halves = [
        MicroBatch([v[i : i + 2] for v in views], masks[:, i : i + 2], uniforms[:, i : i + 2]) for i in (0, 2)
    ]
    split_terms = split.forward_backward(halves, epoch=0)
    for name in ("loss", "dino", "mim"):
        assert split_terms[name] == pytest.approx(terms[name], rel=1e-5)
    torch.testing.assert_close(split.loss_fn.center, whole.loss_fn.center, rtol=0, atol=1e-6)
    torch.testing.assert_close(split.loss_fn.center2, whole.loss_fn.center2, rtol=0, atol=1e-6)
    grads = dict(whole.student.named_parameters())
    for name, p in split.student.named_parameters():
        if p.grad is not None:
            ref = grads[name].grad
            torch.testing.assert_close(p.grad, ref, rtol=1e-4, atol=_grad_atol(ref), msg=name)
    # The test can fail: other uniforms for the second half drop other paths, other gradients.
    other = _ssl(0.3)
    other.forward_backward([halves[0], halves[1]._replace(drop_uniforms=1 - halves[1].drop_uniforms)], epoch=0)
    differs = [
        not torch.allclose(p.grad, grads[n].grad, rtol=1e-4, atol=_grad_atol(grads[n].grad))
        for n, p in other.student.named_parameters()
        if p.grad is not None
    ]
    assert any(differs)


def test_update_teacher_is_the_ema_of_the_student(ssl):
    with torch.no_grad():
        for p in ssl.student.parameters():
            p.add_(1.0)
    before = {n: p.clone() for n, p in ssl.teacher.named_parameters()}
    students = dict(ssl.student.named_parameters())
    ssl.update_teacher(0.9)
    for n, p in ssl.teacher.named_parameters():
        torch.testing.assert_close(p, 0.9 * before[n] + 0.1 * students[n], rtol=0, atol=1e-6)


def test_loss_and_schedules_from_their_config_sections_match_the_positional_forms():
    lc = PretrainLossConfig(teacher_temp=0.06, warmup_teacher_temp_epochs=3, lambda2=0.5, center_momentum2=0.8)
    loss = DINOMIMLoss.from_config(lc, TINY.head)
    assert loss.center.shape == (64,) and loss.center2.shape == (48,)
    assert (loss.temperatures(1), loss.lambda2, loss.center_momentum2) == (
        DINOMIMLoss(64, 48, 0.1, 0.06, 0.04, 0.07, 0.04, 3, 0.9, 0.8, 1.0, 0.5).temperatures(1), 0.5, 0.8)
    o = PretrainOptimConfig(warmup_epochs=1)
    got = PretrainSchedules.from_config(o, epochs=3, niter_per_ep=4, total_batch=64)
    want = pretrain_schedules(o.scaled_lr(64), o.min_lr, 1, o.weight_decay, o.weight_decay_end,
                              o.momentum_teacher, o.momentum_teacher_end, 3, 4)
    for field in ("lr", "weight_decay", "momentum"):
        assert (getattr(got, field) == getattr(want, field)).all()
