"""Attention maps: a distribution over patches, equal to attention computed by hand; PNG per image."""

from __future__ import annotations

import torch
from PIL import Image

from personvit.viz.attention import cls_attention
from personvit.viz.cli import main
from tests.support.viz_fixtures import IMG_SIZE, tiny_model


def manual_cls_attention(model, x):
    """softmax(q k^T / sqrt(d)) of the last block, CLS row, from its weights."""
    tokens = model.prepare_tokens(x)
    for block in model.blocks[:-1]:
        tokens = block(tokens)
    last = model.blocks[-1]
    y = last.norm1(tokens)
    b, n, dim = y.shape
    heads = last.attn.num_heads
    qkv = torch.nn.functional.linear(y, last.attn.qkv.weight, last.attn.qkv.bias)
    q, k, _ = qkv.reshape(b, n, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
    attn = torch.softmax(q @ k.transpose(-2, -1) / (dim // heads) ** 0.5, dim=-1)
    cls = attn[:, :, 0, 1:]
    return cls / cls.sum(-1, keepdim=True)


def test_maps_sum_to_one_and_match_hand_computation():
    model = tiny_model()
    x = torch.randn(3, 3, *IMG_SIZE, generator=torch.Generator().manual_seed(0))
    maps = cls_attention(model, x)
    h, w = IMG_SIZE[0] // 8, IMG_SIZE[1] // 8
    assert maps.shape == (3, 2, h, w)
    torch.testing.assert_close(maps.sum(dim=(-2, -1)), torch.ones(3, 2))
    assert (maps >= 0).all()
    with torch.no_grad():
        torch.testing.assert_close(maps.reshape(3, 2, -1), manual_cls_attention(model, x), atol=1e-5, rtol=1e-4)


def test_cli_writes_one_png_per_image(pretrain_run, shard_set, tmp_path, capsys):
    keys = ["0001_c1_0", "0003_c2_1"]
    rc = main(["attention", "--ckpt", str(pretrain_run), "--shards", str(shard_set), "--keys", *keys,
               "--out", str(tmp_path)])
    assert rc == 0
    paths = sorted(tmp_path.glob("*.png"))
    assert [p.name for p in paths] == [f"attention_step7_{k}.png" for k in sorted(keys)]
    with Image.open(paths[0]) as im:
        # image + mean + 2 heads, each 128 px wide at the 256 px display height.
        assert im.width >= 4 * 128 and im.height > 256
    assert str(paths[0]) in capsys.readouterr().out


def test_cli_errors_are_one_line(pretrain_run, shard_set, tmp_path, capsys):
    rc = main(["attention", "--ckpt", str(pretrain_run), "--shards", str(shard_set), "--keys", "nope",
               "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "'nope'" in err and len(err.strip().splitlines()) == 1
    ckpt = next((pretrain_run / "checkpoints").glob("ckpt-*.pt"))
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "c.pt").write_bytes(ckpt.read_bytes())  # a checkpoint without its run's config.yaml
    rc = main(["attention", "--ckpt", str(lone / "c.pt"), "--shards", str(shard_set), "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and "pass --arch" in err[-1]
    rc = main(["attention", "--ckpt", str(lone / "c.pt"), "--shards", str(shard_set), "--out", str(tmp_path),
               "--arch", "vit_tiny", "--patch-size", "8", "--embed-dim", "32", "--depth", "2", "--num-heads", "2",
               "--img-size", "64", "32", "--num", "1"])
    assert rc == 0 and len(list(tmp_path.glob("attention_step7_*.png"))) == 1
