"""k-means: deterministic for a seed, a Lloyd fixed point, recovers separated blobs; the figure."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from personvit.viz.cli import main
from personvit.viz.inputs import load_model
from personvit.viz.patch_clusters import kmeans, patch_features


def blobs(seed=0, k=4, per=30, dim=8):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, dim, generator=g) * 10
    labels = torch.arange(k).repeat_interleave(per)
    return centres[labels] + torch.randn(k * per, dim, generator=g), labels


def test_same_seed_same_clusters_and_fixed_point():
    x = torch.randn(200, 16, generator=torch.Generator().manual_seed(1))
    c1, a1 = kmeans(x, 5, seed=3)
    c2, a2 = kmeans(x, 5, seed=3)
    assert torch.equal(a1, a2) and torch.equal(c1, c2)
    others = [kmeans(x, 5, seed=s)[1] for s in range(4, 8)]
    assert any(not torch.equal(a1, o) for o in others)  # the seed really drives the initialisation
    # Every point sits in its nearest centroid's cluster.
    assert torch.equal(torch.cdist(x.double(), c1.double()).argmin(dim=1), a1)


def test_recovers_separated_blobs():
    x, labels = blobs()
    _, assign = kmeans(x, 4, seed=0)
    # Same partition up to renaming: each true blob maps to exactly one cluster and vice versa.
    pairs = {(int(a), int(b)) for a, b in zip(labels, assign)}
    assert len(pairs) == 4 and len({a for a, _ in pairs}) == 4 and len({b for _, b in pairs}) == 4


def test_bad_k():
    import pytest

    with pytest.raises(ValueError, match="k must be"):
        kmeans(torch.randn(3, 2), 4)


def test_cli_figure(pretrain_run, shard_set, tmp_path):
    args = ["patch-clusters", "--ckpt", str(pretrain_run), "--shards", str(shard_set), "--num", "12",
            "--k", "3", "--show", "4", "--out", str(tmp_path)]
    assert main(args) == 0
    (path,) = tmp_path.glob("patch-clusters_step7_backbone-k3-12imgs-*.png")
    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"))
    # 3 cluster rows of 192 px panels, 4 image columns of 96 px.
    assert arr.shape[0] > 3 * 192 and arr.shape[1] > 4 * 96
    red = (arr[..., 0] > 200) & (arr[..., 1] < 40) & (arr[..., 2] < 40)
    assert red.sum() > 50  # the dots are drawn
    # Same seed -> byte-identical figure.
    again = tmp_path / "again"
    assert main(args[:-1] + [str(again)]) == 0
    assert (again / path.name).read_bytes() == path.read_bytes()


def test_head_features_are_the_checkpoint_heads_projection(pretrain_run, shard_set, tmp_path):
    from tests.support.viz_fixtures import IMG_SIZE, tiny_head, tiny_model

    lm = load_model(pretrain_run)
    x = torch.randn(2, 3, *IMG_SIZE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = tiny_head(0).project(tiny_model(0).forward_features(x)[:, 1:])
    torch.testing.assert_close(patch_features(lm.model, x, lm.head_mlp), expected)
    assert main(["patch-clusters", "--ckpt", str(pretrain_run), "--shards", str(shard_set), "--num", "6",
                 "--k", "2", "--features", "head", "--out", str(tmp_path)]) == 0
    assert len(list(tmp_path.glob("patch-clusters_step7_head-k2-6imgs-*.png"))) == 1
