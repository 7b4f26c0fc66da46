"""Attention kernels agree; xformers is refused clearly where it cannot run; auto picks SDPA on CPU."""

from __future__ import annotations

import pytest
import torch

from personvit.models import Attention, build_vit, xformers_available


def tiny_vit(backend: str = "sdpa"):
    torch.manual_seed(0)
    return build_vit(
        "vit_tiny", img_size=(64, 32), patch_size=8, embed_dim=64, depth=2, num_heads=4, attn_backend=backend
    )


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 2e-5)])
def test_sdpa_and_math_agree(dtype, tol):
    model = tiny_vit().to(dtype).eval()
    x = torch.randn(3, 3, 64, 32, dtype=dtype)
    with torch.no_grad():
        sdpa = model(x)
        model.set_attn_backend("math")
        ref = model(x)
    torch.testing.assert_close(sdpa, ref, atol=tol, rtol=0)


def test_sdpa_and_math_agree_in_bfloat16_within_dtype_tolerance():
    model = tiny_vit().to(torch.bfloat16).eval()
    x = torch.randn(3, 3, 64, 32, dtype=torch.bfloat16)
    with torch.no_grad():
        sdpa = model(x).float()
        model.set_attn_backend("math")
        ref = model(x).float()
    assert (sdpa - ref).abs().max() < 0.1  # bf16 has ~3 significant digits; LayerNorm output ~N(0, 1)


def test_backends_agree_on_gradients():
    x = torch.randn(2, 3, 64, 32, dtype=torch.float64)
    grads = {}
    for backend in ("sdpa", "math"):
        model = tiny_vit(backend).double()
        model(x).square().mean().backward()
        grads[backend] = model.blocks[0].attn.qkv.weight.grad
    torch.testing.assert_close(grads["sdpa"], grads["math"], atol=1e-12, rtol=0)


def test_auto_is_sdpa_on_cpu():
    model = tiny_vit("auto").eval()
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        auto = model(x)
        model.set_attn_backend("sdpa")
        assert torch.equal(model(x), auto)


@pytest.mark.skipif(xformers_available(), reason="xformers is installed here")
def test_xformers_without_the_package_is_a_clear_error():
    with pytest.raises(RuntimeError, match=r"xformers is not importable.*attn_backend='sdpa'"):
        tiny_vit("xformers")
    with pytest.raises(RuntimeError, match="xformers is not importable"):
        tiny_vit().set_attn_backend("xformers")


@pytest.mark.skipif(not xformers_available(), reason="xformers is not installed")
def test_xformers_on_cpu_float32_is_a_clear_error():
    model = tiny_vit("xformers")
    with pytest.raises(RuntimeError, match="runs only on CUDA tensors in float16/bfloat16; got cpu float32"):
        model(torch.randn(1, 3, 64, 32))


@pytest.mark.skipif(
    not (torch.cuda.is_available() and xformers_available()), reason="needs CUDA and xformers"
)
def test_xformers_matches_sdpa_on_cuda_bf16():
    model = tiny_vit("sdpa").cuda().eval()
    x = torch.randn(4, 3, 64, 32, device="cuda")
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        sdpa = model(x).float()
        model.set_attn_backend("xformers")
        xf = model(x).float()
        model.set_attn_backend("auto")
        auto = model(x).float()
    assert (sdpa - xf).abs().max() < 0.05
    assert torch.equal(auto, xf)


def test_attention_rejects_what_it_does_not_implement():
    with pytest.raises(ValueError, match="qk_norm"):
        Attention(64, 4, qk_norm=True)
    attn = Attention(64, 4)
    with pytest.raises(ValueError, match="attention masks are not supported"):
        attn(torch.randn(1, 5, 64), attn_mask=torch.ones(5, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="attn_backend must be one of"):
        attn.set_backend("flash")
