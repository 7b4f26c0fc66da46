"""Backbone loading from timm state dicts, iBOT/PersonViT-format files and our own checkpoints."""

from __future__ import annotations

import argparse
import copy
import fractions

import pytest
import timm
import torch

from personvit.checkpoint import CheckpointError, CheckpointManager
from personvit.models import DINOHead, MultiCropWrapper, build_vit, interpolate_pos_embed
from personvit.models.loading import load_backbone


def small_vit(**kw):
    return build_vit("vit_small", depth=2, **kw).eval()


def timm_small(img_size=(256, 128)):
    return timm.create_model("vit_small_patch16_224", img_size=img_size, depth=2, pretrained=False).eval()


def ibot_checkpoint(student: torch.nn.Module, teacher: torch.nn.Module) -> dict:
    """The layout iBOT's main_ibot.py saves: DDP student, wrapper teacher, args, optimizer."""
    return {
        "student": {f"module.{k}": v for k, v in student.state_dict().items()},
        "teacher": teacher.state_dict(),
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0, 1]}]},
        "epoch": 3,
        "args": argparse.Namespace(arch="vit_small", patch_size=16),
    }


def wrapper(seed: int) -> MultiCropWrapper:
    torch.manual_seed(seed)
    return MultiCropWrapper(
        small_vit(), DINOHead(384, out_dim=64, patch_out_dim=64, hidden_dim=32, bottleneck_dim=8)
    )


def test_timm_state_dict_loads_with_classifier_skipped_and_same_features():
    torch.manual_seed(0)
    ref = timm_small()
    model = small_vit()
    report = load_backbone(model, ref.state_dict())
    assert report.missing == ["masked_embed"] and report.unexpected == []
    assert report.skipped == ["head.bias", "head.weight"] and report.resized == []
    assert len(report.loaded) == len(ref.state_dict()) - 2
    x = torch.randn(2, 3, 256, 128)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref.forward_features(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("which", ["teacher", "student"])
def test_ibot_file_loads_the_chosen_network_and_skips_heads(tmp_path, which):
    student, teacher = wrapper(1), wrapper(2)
    path = tmp_path / "checkpoint.pth"
    torch.save(ibot_checkpoint(student, teacher), path)
    model = small_vit()
    report = load_backbone(model, path, which=which)
    source = {"teacher": teacher, "student": student}[which].backbone
    assert report.missing == [] and report.unexpected == []  # masked_embed is in iBOT checkpoints
    assert report.skipped and all(k.startswith("head.") for k in report.skipped)
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_imagenet_grid_is_resized_to_the_person_grid():
    torch.manual_seed(0)
    ref = timm_small(img_size=224)  # 14x14 positions
    model = small_vit()
    report = load_backbone(model, ref.state_dict())
    assert report.resized == ["pos_embed 14x14 -> 16x8"]
    expected = interpolate_pos_embed(ref.pos_embed.detach(), (14, 14), (16, 8))
    torch.testing.assert_close(model.pos_embed.detach(), expected)
    assert model(torch.randn(1, 3, 256, 128)).shape == (1, 129, 384)


def test_non_square_foreign_grid_needs_src_grid():
    source = small_vit(img_size=(160, 80))  # 10x5 grid
    model = small_vit()
    with pytest.raises(CheckpointError, match=r"50 patch positions on an unknown grid; pass src_grid"):
        load_backbone(model, source.state_dict())
    report = load_backbone(model, source.state_dict(), src_grid=(10, 5))
    assert report.resized == ["pos_embed 10x5 -> 16x8"]


def test_own_pretraining_checkpoint_loads_teacher(tmp_path):
    student, teacher = wrapper(1), wrapper(2)
    manager = CheckpointManager(tmp_path / "checkpoints")
    state = {
        "student": student.state_dict(),
        "teacher": teacher.state_dict(),
        "loss": {"center": torch.zeros(64)},
    }
    path = manager.save(state, step=10, epoch=1)
    model = small_vit()
    report = load_backbone(model, path, strict=True)
    assert report.missing == [] and report.unexpected == []
    assert torch.equal(model.blocks[1].mlp.fc2.weight, teacher.backbone.blocks[1].mlp.fc2.weight)


def test_mismatches_are_one_line_errors(tmp_path):
    model = small_vit()
    wide = build_vit("vit_base", depth=2).state_dict()
    with pytest.raises(CheckpointError, match="pos_embed .* does not fit"):
        load_backbone(model, wide)
    wide.pop("pos_embed")
    with pytest.raises(
        CheckpointError, match=r"cls_token has shape \(1, 1, 768\) in the checkpoint but \(1, 1, 384\)"
    ):
        load_backbone(model, wide)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_backbone(model, tmp_path / "nope.pth")
    with pytest.raises(CheckpointError, match="no 'student' entry"):
        load_backbone(model, {"teacher": copy.deepcopy(model.state_dict())}, which="student")
    with pytest.raises(CheckpointError, match="no backbone key matched"):
        load_backbone(model, {"foo.weight": torch.zeros(2)})
    bad = tmp_path / "pickled.pth"
    torch.save({"model": model.state_dict(), "extra": fractions.Fraction(1, 3)}, bad)
    with pytest.raises(CheckpointError, match="cannot load with weights_only=True") as info:
        load_backbone(model, bad)
    assert "\n" not in str(info.value)
    strict_fail = {k: v for k, v in model.state_dict().items() if k != "norm.weight"}
    with pytest.raises(CheckpointError, match="strict load failed"):
        load_backbone(model, strict_fail, strict=True)
