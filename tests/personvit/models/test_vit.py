"""ViT backbone: timm key/shape parity, timm equivalence, any grid, masking semantics, errors."""

from __future__ import annotations

import pytest
import timm
import torch
from timm.layers import resample_abs_pos_embed
from torch.utils.flop_counter import FlopCounterMode

from personvit.models import VIT_ARCHS, build_vit, interpolate_pos_embed, num_flops_forward
from personvit.rng import seed_step

TIMM_NAMES = {
    "vit_tiny": "vit_tiny_patch16_224",
    "vit_small": "vit_small_patch16_224",
    "vit_base": "vit_base_patch16_224",
}


def tiny(**kw):
    kw = {"patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 4, **kw}
    return build_vit("vit_tiny", img_size=kw.pop("img_size", (64, 32)), **kw)


@pytest.mark.parametrize("name", list(VIT_ARCHS))
def test_named_sizes_have_timm_keys_and_shapes(name):
    ours = build_vit(name, depth=2)  # 2 blocks keep it cheap; widths and heads are the named ones
    ref = timm.create_model(TIMM_NAMES[name], img_size=(256, 128), pretrained=False, num_classes=0, depth=2)
    ours_sd, ref_sd = ours.state_dict(), ref.state_dict()
    assert set(ours_sd) - set(ref_sd) == {"masked_embed"}
    assert set(ref_sd) - set(ours_sd) == set()
    assert all(ours_sd[k].shape == ref_sd[k].shape for k in ref_sd)
    dim, _, heads = VIT_ARCHS[name]
    assert ours.embed_dim == dim and ours.patch_size == 16 and ours.blocks[0].attn.num_heads == heads
    with torch.device("meta"):  # full depth without paying for the weights
        full = build_vit(name)
    n_params = sum(p.numel() for p in full.parameters())
    assert len(full.blocks) == 12 and n_params == 12 * sum(
        p.numel() for p in ours.blocks[0].parameters()
    ) + sum(p.numel() for n, p in ours.named_parameters() if not n.startswith("blocks."))
    with torch.no_grad():
        for img_hw, tokens in (((256, 128), 129), ((96, 64), 25)):
            assert ours.eval()(torch.randn(1, 3, *img_hw)).shape == (1, tokens, dim)


@pytest.mark.parametrize("img_hw", [(256, 128), (96, 64), (128, 64), (224, 224), (64, 128), (16, 16)])
def test_any_size_divisible_by_the_patch(img_hw):
    model = build_vit("vit_small", depth=1).eval()
    with torch.no_grad():
        out = model.forward_features(torch.randn(2, 3, *img_hw))
    h, w = model.grid_size(img_hw)
    assert out.shape == (2, 1 + h * w, 384)
    assert torch.isfinite(out).all()


def test_same_outputs_as_timm_with_the_same_weights():
    torch.manual_seed(0)
    ref = timm.create_model("vit_small_patch16_224", img_size=(256, 128), pretrained=False).eval()
    state = {k: v for k, v in ref.state_dict().items() if not k.startswith("head.")}
    ours = build_vit("vit_small", attn_backend="sdpa").eval()
    result = ours.load_state_dict(state, strict=False)
    assert result.missing_keys == ["masked_embed"] and result.unexpected_keys == []
    x = torch.randn(2, 3, 256, 128)
    with torch.no_grad():
        expected = ref.forward_features(x)
        for backend in ("sdpa", "math", "auto"):
            ours.set_attn_backend(backend)
            torch.testing.assert_close(ours.forward_features(x), expected, atol=1e-5, rtol=0)
        # Under bf16 autocast both keep a float32 residual stream and agree exactly.
        ours.set_attn_backend("auto")
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = ours.forward_features(x)
            assert mixed.dtype == torch.float32
            assert torch.equal(mixed, ref.forward_features(x))


def test_position_grid_interpolation_is_bicubic_non_square_and_keeps_cls():
    torch.manual_seed(0)
    pos = torch.randn(1, 1 + 16 * 8, 32)
    out = interpolate_pos_embed(pos, (16, 8), (6, 4))
    ref = resample_abs_pos_embed(pos, [6, 4], old_size=[16, 8], antialias=False)
    torch.testing.assert_close(out, ref)
    assert torch.equal(out[:, 0], pos[:, 0])
    assert interpolate_pos_embed(pos, (16, 8), (16, 8)) is pos
    # A grid that varies along rows only must stay constant along the columns: catches h/w swaps.
    rows = torch.arange(16.0).repeat_interleave(8).view(1, 128, 1).expand(1, 128, 4)
    by_row = torch.cat([torch.zeros(1, 1, 4), rows], dim=1)
    resized = interpolate_pos_embed(by_row, (16, 8), (32, 4))[:, 1:].reshape(32, 4, 4)
    assert torch.allclose(resized, resized[:, :1].expand_as(resized))
    assert resized[-1, 0, 0] > resized[0, 0, 0]


def test_model_uses_interpolated_positions_for_other_grids():
    model = tiny().eval()
    x = torch.randn(1, 3, 48, 32)  # 6x4 grid vs the 8x4 training grid
    tokens = model.patch_embed(x)
    expected = torch.cat([model.cls_token, tokens], 1) + interpolate_pos_embed(
        model.pos_embed, (8, 4), (6, 4)
    )
    torch.testing.assert_close(model.prepare_tokens(x), expected)


def test_masked_patches_are_replaced_before_positions():
    torch.manual_seed(0)
    model = tiny().eval()
    with torch.no_grad():
        model.masked_embed.normal_()
    x = torch.randn(2, 3, 64, 32)
    mask = torch.zeros(2, 32, dtype=torch.bool)
    mask[0, 5] = mask[1, 17] = True
    tokens = model.prepare_tokens(x, mask)
    pos = model.pos_embed[0]
    torch.testing.assert_close(tokens[0, 1 + 5], model.masked_embed[0] + pos[1 + 5])
    torch.testing.assert_close(tokens[1, 1 + 17], model.masked_embed[0] + pos[1 + 17])
    # Pixels of a masked patch no longer matter; those of an unmasked patch do.
    x2 = x.clone()
    x2[0, :, 8:16, 8:16] += 5.0  # patch (1, 1) -> index 5 in a 8x4 grid
    with torch.no_grad():
        torch.testing.assert_close(model(x2, mask), model(x, mask))
        assert not torch.allclose(model(x2), model(x))


def test_gradient_reaches_masked_embed_only_through_masked_positions():
    torch.manual_seed(0)
    model = tiny()
    x = torch.randn(2, 3, 64, 32, requires_grad=True)
    model(x, torch.zeros(2, 32, dtype=torch.bool)).sum().backward()
    assert model.masked_embed.grad is None or not model.masked_embed.grad.any()
    assert x.grad.abs().sum() > 0

    model.zero_grad()
    x.grad = None
    mask = torch.zeros(2, 32, dtype=torch.bool)
    mask[:, :8] = True  # the first patch row of both images
    model(x, mask).sum().backward()
    assert model.masked_embed.grad.abs().sum() > 0
    assert not x.grad[:, :, :8].any()  # masked pixels get no gradient
    assert x.grad[:, :, 8:].abs().sum() > 0


def test_mask_shape_must_match_the_grid():
    model = tiny()
    with pytest.raises(ValueError, match="mask of shape"):
        model(torch.randn(2, 3, 64, 32), torch.zeros(2, 31, dtype=torch.bool))
    assert model(torch.randn(2, 3, 64, 32), torch.zeros(2, 8, 4, dtype=torch.bool)).shape == (2, 33, 64)


def test_drop_path_is_stochastic_in_training_and_reproducible_per_step():
    model = tiny(drop_path_rate=0.5)
    rates = [b.drop_path1.drop_prob if hasattr(b.drop_path1, "drop_prob") else 0.0 for b in model.blocks]
    assert rates == pytest.approx([0.0, 0.5])
    x = torch.randn(8, 3, 64, 32)
    with torch.no_grad():
        seed_step(0, step=1)
        a = model(x)
        seed_step(0, step=1)
        b = model(x)
        seed_step(0, step=2)
        c = model(x)
        model.eval()
        d, e = model(x), model(x)
    assert torch.equal(a, b) and not torch.equal(a, c) and torch.equal(d, e)


@pytest.mark.parametrize("img_hw", [(64, 32), (24, 16)])
def test_analytic_flops_match_torch_flop_counter(img_hw):
    model = tiny(attn_backend="math").eval()  # math attention: the counter sees its matmuls
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.randn(1, 3, *img_hw))
    assert num_flops_forward(model, img_hw) == counter.get_total_flops()


def test_last_attention_is_a_distribution():
    model = tiny().eval()
    attn = model.last_attention(torch.randn(2, 3, 64, 32))
    assert attn.shape == (2, 4, 33, 33)
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, 4, 33))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: build_vit("vit_huge"), "unknown ViT 'vit_huge'"),
        (lambda: build_vit("vit_tiny", embed_dims=64), "unknown override"),
        (lambda: build_vit("vit_tiny", depth=0), "depth must be a positive integer"),
        (lambda: build_vit("vit_tiny", embed_dim=64, num_heads=5), "not divisible by num_heads"),
        (lambda: build_vit("vit_tiny", img_size=(250, 128)), "not divisible by patch_size"),
        (lambda: build_vit("vit_tiny", attn_backend="flash"), "attn_backend must be one of"),
        (lambda: tiny()(torch.randn(1, 3, 60, 32)), "60x32 is not a positive multiple of the patch size 8"),
        (lambda: tiny()(torch.randn(3, 64, 32)), r"expected images \[B, C, H, W\]"),
    ],
)
def test_bad_input_names_the_culprit(call, match):
    with pytest.raises(ValueError, match=match):
        call()
