"""Projection head (SPEC.md section 2) and the multi-crop wrapper."""

from __future__ import annotations

import copy

import pytest
import torch

from personvit.models import DINOHead, MultiCropWrapper, WeightNormLinear, build_vit


def tiny_vit():
    return build_vit("vit_tiny", img_size=(64, 32), patch_size=8, embed_dim=64, depth=2, num_heads=4)


def test_head_shapes_shared_and_separate():
    tokens = torch.randn(3, 1 + 32, 64)
    shared = DINOHead(64, out_dim=100, patch_out_dim=100, hidden_dim=48, bottleneck_dim=16)
    cls, patch = shared(tokens)
    assert cls.shape == (3, 100) and patch.shape == (3, 32, 100)
    assert shared.last_layer2 is None and len(shared.last_layers()) == 1

    separate = DINOHead(
        64, out_dim=100, patch_out_dim=30, hidden_dim=48, bottleneck_dim=16, shared_head=False
    )
    cls, patch = separate(tokens)
    assert cls.shape == (3, 100) and patch.shape == (3, 32, 30)
    cls_only, none = separate(tokens[:, 0])
    assert none is None
    torch.testing.assert_close(cls_only, cls)
    assert {"mlp.0.weight", "mlp.2.weight", "mlp.4.weight", "last_layer.weight_g", "last_layer.weight_v",
            "last_layer2.weight_v"} <= set(separate.state_dict())  # fmt: skip


def test_logits_are_bounded_by_the_weight_norm():
    # L2-normalised bottleneck x rows of norm g=1 -> every logit is a cosine, in [-1, 1].
    head = DINOHead(64, out_dim=50, patch_out_dim=50, hidden_dim=48, bottleneck_dim=16)
    cls, patch = head(torch.randn(4, 9, 64) * 100)
    assert cls.abs().max() <= 1 + 1e-5 and patch.abs().max() <= 1 + 1e-5
    with torch.no_grad():
        head.last_layer.weight_g.fill_(3.0)
    w = head.last_layer.weight
    torch.testing.assert_close(w.norm(dim=1), torch.full((50,), 3.0))


def test_norm_last_layer_freezes_the_norm_only():
    frozen = WeightNormLinear(16, 8, fix_norm=True)
    free = WeightNormLinear(16, 8)
    assert not frozen.weight_g.requires_grad and frozen.weight_v.requires_grad
    assert free.weight_g.requires_grad
    free(torch.randn(2, 16)).sum().backward()
    assert free.weight_g.grad is not None and free.weight_v.grad is not None


def test_head_deepcopies_for_the_teacher():
    head = DINOHead(64, out_dim=20, patch_out_dim=20, hidden_dim=32, bottleneck_dim=8)
    teacher = copy.deepcopy(head)
    x = torch.randn(2, 5, 64)
    torch.testing.assert_close(teacher(x)[0], head(x)[0])
    with torch.no_grad():
        teacher.last_layer.weight_v.add_(1.0)
    assert not torch.allclose(teacher(x)[0], head(x)[0])


def test_shared_head_needs_equal_dims():
    with pytest.raises(ValueError, match="shared_head needs patch_out_dim == out_dim"):
        DINOHead(64, out_dim=100, patch_out_dim=30)


def test_multicrop_matches_per_view_calls_and_runs_once_per_resolution():
    torch.manual_seed(0)
    vit, head = tiny_vit().eval(), DINOHead(64, out_dim=40, patch_out_dim=40, hidden_dim=32, bottleneck_dim=8)
    wrapper = MultiCropWrapper(vit, head)
    calls = []
    vit.register_forward_hook(lambda mod, args, out: calls.append(tuple(args[0].shape)))
    crops = [torch.randn(2, 3, 64, 32) for _ in range(2)] + [torch.randn(2, 3, 24, 16) for _ in range(3)]
    masks = torch.zeros(2, 2, 32, dtype=torch.bool)
    masks[0, :, :6] = True
    masks[1, 1, 10:20] = True
    with torch.no_grad():
        out = wrapper(crops, masks)
    assert calls == [(4, 3, 64, 32), (6, 3, 24, 16)]
    assert out.cls.shape == (5, 2, 40) and out.patch.shape == (2, 2, 32, 40)
    with torch.no_grad():
        for v, crop in enumerate(crops):
            tokens = vit(crop, masks[v] if v < 2 else None)
            cls, patch = head(tokens)
            torch.testing.assert_close(out.cls[v], cls, atol=1e-5, rtol=0)
            if v < 2:
                torch.testing.assert_close(out.patch[v], patch, atol=1e-5, rtol=0)


def test_multicrop_teacher_without_masks_and_patch_view_choice():
    wrapper = MultiCropWrapper(
        tiny_vit().eval(), DINOHead(64, out_dim=40, patch_out_dim=40, hidden_dim=32, bottleneck_dim=8)
    )
    globals_ = [torch.randn(2, 3, 64, 32) for _ in range(2)]
    with torch.no_grad():
        teacher = wrapper(globals_)
        one = wrapper(globals_, patch_views=1)
        none = wrapper(globals_, patch_views=0)
    assert teacher.patch.shape == (2, 2, 32, 40) and one.patch.shape == (1, 2, 32, 40) and none.patch is None
    torch.testing.assert_close(one.patch[0], teacher.patch[0])
    with pytest.raises(ValueError, match="patch_views=3"):
        wrapper(globals_, patch_views=3)
    with pytest.raises(ValueError, match="same batch size"):
        wrapper([torch.randn(2, 3, 64, 32), torch.randn(3, 3, 64, 32)])
