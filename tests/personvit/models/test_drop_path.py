"""`SampleDropPath`: timm's draw without uniforms, the sample's own decision with them."""

from __future__ import annotations

import torch
from timm.layers import DropPath

from personvit.models.drop_path import (
    SampleDropPath,
    drop_path_uniforms,
    install_sample_drop_path,
    sample_drop_uniforms,
)
from personvit.models.vit import build_vit


def test_without_uniforms_it_draws_exactly_like_timms_drop_path():
    x = torch.randn(64, 5, 8)
    ours, timms = SampleDropPath(0.3, slot=0).train(), DropPath(0.3).train()
    torch.manual_seed(7)
    a = ours(x)
    torch.manual_seed(7)
    b = timms(x)
    assert torch.equal(a, b)
    assert torch.equal(ours.eval()(x), x)


def test_with_uniforms_each_row_follows_its_own_uniform():
    x = torch.randn(6, 3, 4)
    u = torch.tensor([[0.1, 0.9], [0.8, 0.1], [0.69, 0.2], [0.71, 0.0], [0.0, 0.99], [0.5, 0.5]])
    layer = SampleDropPath(0.3, slot=0).train()
    with drop_path_uniforms(u):
        out = layer(x)
    keep = (u[:, 0] < 0.7).float() / 0.7
    assert torch.equal(out, x * keep.view(-1, 1, 1))
    # Rows reordered together with their uniforms give the same rows back: no dependence on the neighbours.
    order = torch.tensor([5, 4, 3, 2, 1, 0])
    with drop_path_uniforms(u[order]):
        assert torch.equal(layer(x[order]), out[order])
    # Global generator untouched: the decision is the sample's.
    state = torch.get_rng_state()
    with drop_path_uniforms(u):
        layer(x)
    assert torch.equal(torch.get_rng_state(), state)


def test_vit_blocks_get_slots_and_no_state_dict_change():
    vit = build_vit("vit_tiny", img_size=(32, 16), patch_size=8, embed_dim=16, depth=3, num_heads=2, drop_path_rate=0.2)
    plain = build_vit("vit_tiny", img_size=(32, 16), patch_size=8, embed_dim=16, depth=3, num_heads=2)
    slots = sorted(m.slot for m in vit.modules() if isinstance(m, SampleDropPath))
    assert vit.drop_path_slots == 6 and slots == [2, 3, 4, 5]  # block 0 has rate 0: Identity
    assert set(vit.state_dict()) == set(plain.state_dict())
    assert install_sample_drop_path(plain.blocks) == 6 and not any(isinstance(m, SampleDropPath) for m in plain.modules())


def test_sample_uniforms_depend_on_seed_epoch_and_position_only():
    a = sample_drop_uniforms(3, 1, [10, 11, 12], views=4, slots=6)
    b = sample_drop_uniforms(3, 1, [12, 10], views=4, slots=6)
    assert a.shape == (4, 3, 6) and torch.equal(a[:, 2], b[:, 0]) and torch.equal(a[:, 0], b[:, 1])
    assert not torch.equal(a, sample_drop_uniforms(3, 2, [10, 11, 12], views=4, slots=6))
    assert not torch.equal(a, sample_drop_uniforms(4, 1, [10, 11, 12], views=4, slots=6))
