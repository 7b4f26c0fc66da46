"""Correspondences are exactly the mutual nearest neighbours, strongest first; the figure."""

from __future__ import annotations

import torch
from PIL import Image

from personvit.viz.cli import main
from personvit.viz.correspondence import mutual_nearest_neighbours


def brute_force_mutual(fa, fb):
    sim = fa @ fb.t()
    out = set()
    for i in range(fa.shape[0]):
        j = int(sim[i].argmax())
        if int(sim[:, j].argmax()) == i:
            out.add((i, j))
    return out, sim


def test_pairs_are_mutual_nearest_neighbours():
    g = torch.Generator().manual_seed(0)
    fa = torch.nn.functional.normalize(torch.randn(40, 8, generator=g), dim=1)
    fb = torch.nn.functional.normalize(torch.cat([fa[:20] + 0.1 * torch.randn(20, 8, generator=g),
                                                  torch.randn(25, 8, generator=g)]), dim=1)
    expected, sim = brute_force_mutual(fa, fb)
    pairs = mutual_nearest_neighbours(fa, fb)
    got = {(int(a), int(b)) for a, b, _ in pairs}
    assert got == expected and len(got) >= 10
    scores = pairs[:, 2]
    assert torch.all(scores[:-1] >= scores[1:])
    torch.testing.assert_close(scores, torch.stack([sim[int(a), int(b)] for a, b, _ in pairs]))
    top = mutual_nearest_neighbours(fa, fb, top=5)
    torch.testing.assert_close(top, pairs[:5])


def test_cli_figure_for_given_and_random_pairs(pretrain_run, shard_set, tmp_path):
    rc = main(["correspondence", "--ckpt", str(pretrain_run), "--shards", str(shard_set),
               "--keys", "0002_c1_0", "0002_c2_1", "--top", "5", "--out", str(tmp_path)])
    assert rc == 0
    (path,) = tmp_path.glob("correspondence_step7_0002_c1_0--0002_c2_1.png")
    with Image.open(path) as im:
        assert im.width >= 2 * 160 and im.height > 320  # two 160x320 panels side by side
    rc = main(["correspondence", "--ckpt", str(pretrain_run), "--shards", str(shard_set), "--split", "gallery",
               "--num", "2", "--out", str(tmp_path / "random")])
    assert rc == 0
    names = sorted(p.name for p in (tmp_path / "random").glob("*.png"))
    assert len(names) == 2
    for name in names:  # both keys of a pair share the pid prefix (same identity)
        a, b = name.removeprefix("correspondence_step7_").removesuffix(".png").split("--")
        assert a[:4] == b[:4] and a != b and a[:4] != "0000"
