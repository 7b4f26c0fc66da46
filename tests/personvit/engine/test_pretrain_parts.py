"""Building blocks of the pretraining loop: param groups, clipping, frozen last layer, EMA, wiring, init."""

from __future__ import annotations

import pytest
import timm
import torch

from personvit.config.pretrain import HeadConfig, PretrainModelConfig
from personvit.engine.optim import (
    apply_schedule,
    build_adamw,
    cancel_last_layer_grads,
    clip_grad_per_tensor_,
    param_groups,
)
from personvit.engine.ssl_model import ema_update_, init_backbone
from personvit.models.build import build_student_teacher
from personvit.models.drop_path import SampleDropPath

TINY = PretrainModelConfig(
    arch="vit_tiny",
    patch_size=8,
    embed_dim=32,
    depth=2,
    num_heads=2,
    drop_path_rate=0.1,
    attn_backend="sdpa",
    head=HeadConfig(out_dim=64, patch_out_dim=64, hidden_dim=48, bottleneck_dim=16),
)
IMG = (64, 32)


@pytest.fixture
def pair():
    return build_student_teacher(TINY, IMG, seed=3)


def test_no_decay_group_holds_biases_and_1d_tensors(pair):
    student, _ = pair
    groups = param_groups(student)
    names = {id(p): n for n, p in student.named_parameters()}
    decay = {names[id(p)] for p in groups[0]["params"]}
    no_decay = {names[id(p)] for p in groups[1]["params"]}
    assert groups[1]["weight_decay"] == 0.0
    assert "backbone.blocks.0.attn.qkv.bias" in no_decay and "backbone.norm.weight" in no_decay
    assert "backbone.blocks.0.attn.qkv.weight" in decay and "head.last_layer.weight_v" in decay
    assert decay.isdisjoint(no_decay) and len(decay) + len(no_decay) == len(names)
    assert all(p.ndim > 1 for p in groups[0]["params"])


def test_scheduled_weight_decay_reaches_only_the_decay_group(pair):
    student, _ = pair
    opt = build_adamw(student)
    apply_schedule(opt, lr=0.1, weight_decay=0.5)
    before = {n: p.detach().clone() for n, p in student.named_parameters()}
    for p in student.parameters():
        p.grad = torch.zeros_like(p)  # Adam's own update is 0: only decoupled decay moves weights
    opt.step()
    after = dict(student.named_parameters())
    assert torch.allclose(
        after["backbone.blocks.0.attn.qkv.weight"], before["backbone.blocks.0.attn.qkv.weight"] * 0.95
    )
    assert torch.equal(after["backbone.norm.weight"], before["backbone.norm.weight"])
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.1]
    assert [g["weight_decay"] for g in opt.param_groups] == [0.5, 0.0]


def test_clip_is_per_tensor():
    big, small = torch.nn.Parameter(torch.zeros(4)), torch.nn.Parameter(torch.zeros(4))
    big.grad = torch.full((4,), 5.0)  # norm 10
    small.grad = torch.full((4,), 0.5)  # norm 1
    clip_grad_per_tensor_([big, small], 3.0)
    assert big.grad.norm().item() == pytest.approx(3.0, rel=1e-5)
    assert torch.equal(small.grad, torch.full((4,), 0.5))


def test_last_layer_frozen_only_in_the_first_epochs(pair):
    student, _ = pair
    for epoch, frozen in ((0, True), (1, False)):
        for p in student.parameters():
            p.grad = torch.ones_like(p)
        cancel_last_layer_grads(student, epoch, freeze_epochs=1)
        grads = {n: p.grad for n, p in student.named_parameters()}
        assert (grads["head.last_layer.weight_v"] is None) == frozen
        assert grads["head.mlp.0.weight"] is not None


def test_student_and_teacher_start_equal_deterministic_and_leave_global_rng_alone(pair):
    student, teacher = pair
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    again, _ = build_student_teacher(TINY, IMG, seed=3)
    assert torch.equal(torch.rand(3), expected_next)
    other, _ = build_student_teacher(TINY, IMG, seed=4)
    s_state, t_state = student.state_dict(), teacher.state_dict()
    assert s_state.keys() == t_state.keys()
    assert all(torch.equal(s_state[k], t_state[k]) for k in s_state)
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in s_state.items())
    assert not torch.equal(
        s_state["backbone.blocks.0.attn.qkv.weight"], other.state_dict()["backbone.blocks.0.attn.qkv.weight"]
    )
    assert not any(p.requires_grad for p in teacher.parameters())
    assert any(isinstance(m, SampleDropPath) for m in student.modules())
    assert not any(isinstance(m, SampleDropPath) for m in teacher.modules())


def test_ema_update_moves_teacher_towards_student(pair):
    student, teacher = pair
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    t0 = {n: p.detach().clone() for n, p in teacher.named_parameters()}
    ema_update_(teacher, student, 0.9)
    s = dict(student.named_parameters())
    for n, p in teacher.named_parameters():
        torch.testing.assert_close(p, 0.9 * t0[n] + 0.1 * s[n].detach(), rtol=1e-6, atol=1e-7)
    # Momentum 1 (the end of the schedule): the teacher stays put.
    before = teacher.head.mlp[0].weight.detach().clone()
    ema_update_(teacher, student, 1.0)
    assert torch.equal(teacher.head.mlp[0].weight, before)


def test_init_from_a_timm_state_dict_file(pair, tmp_path):
    student, teacher = pair
    # A timm ViT laid out for a square 32x32 input (4x4 grid): the position grid must be resized to 8x4.
    vit = timm.models.vision_transformer.VisionTransformer(
        img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=10
    )
    path = tmp_path / "timm_vit.pth"
    torch.save(vit.state_dict(), path)
    report = init_backbone(student, teacher, str(path))
    assert report.resized and report.missing == ["masked_embed"]
    assert torch.equal(student.backbone.blocks[1].mlp.fc2.weight, vit.blocks[1].mlp.fc2.weight)
    assert torch.equal(teacher.backbone.blocks[1].mlp.fc2.weight, vit.blocks[1].mlp.fc2.weight)
    assert student.backbone.pos_embed.shape == (1, 1 + 8 * 4, 32)
