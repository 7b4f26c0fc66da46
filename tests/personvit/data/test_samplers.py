"""PK sampler: P ids x K images, replacement for small ids, keyed by (seed, epoch), equal rank splits."""

from __future__ import annotations

import numpy as np
import pytest

from personvit.data.samplers import KeyBatchSampler, PKSampler


def _pids(seed: int = 0, ids: int = 30) -> np.ndarray:
    # Identities with 1..12 images, in shuffled dataset order.
    rng = np.random.default_rng(seed)
    pids = np.concatenate([np.full(rng.integers(1, 13), 100 + i) for i in range(ids)])
    return rng.permutation(pids)


def test_batches_hold_p_distinct_ids_with_k_images_each() -> None:
    pids = _pids()
    s = PKSampler(pids, num_ids=8, num_instances=4, seed=0)
    batches = s.epoch_batches(0)
    assert batches.shape[1] == 32 and batches.shape[0] >= 3
    for b in batches:
        groups = pids[b].reshape(8, 4)
        assert (groups == groups[:, :1]).all(), "identity-major layout: K consecutive images per id"
        assert len(set(groups[:, 0])) == 8


def test_small_ids_use_replacement_big_ids_never_repeat_within_epoch() -> None:
    pids = _pids(1)
    counts = {p: int((pids == p).sum()) for p in np.unique(pids)}
    s = PKSampler(pids, num_ids=6, num_instances=4, seed=2)
    seen_small = False
    for epoch in range(5):
        flat = s.epoch_batches(epoch).ravel()
        for p, n in counts.items():
            used = flat[pids[flat] == p]
            if n >= 4:
                assert len(used) == len(set(used.tolist())), "an id with >= K images draws without replacement"
                assert len(used) <= (n // 4) * 4
            elif len(used):
                seen_small = True
                assert len(used) == 4 and set(used.tolist()) <= set(np.flatnonzero(pids == p).tolist())
    assert seen_small, "ids with fewer than K images must still be sampled (with replacement)"


def test_keyed_by_seed_and_epoch_only() -> None:
    pids = _pids(2)
    a = PKSampler(pids, 8, 4, seed=7).epoch_batches(3)
    b = PKSampler(pids, 8, 4, seed=7)
    b.epoch_batches(0)  # history must not matter
    assert np.array_equal(a, b.epoch_batches(3))
    assert not np.array_equal(a, b.epoch_batches(4))
    assert not np.array_equal(a, PKSampler(pids, 8, 4, seed=8).epoch_batches(3))


@pytest.mark.parametrize("world", [2, 4])
def test_rank_split_is_equal_and_reassembles_the_global_batch(world: int) -> None:
    pids = _pids(3)
    full = PKSampler(pids, 8, 4, seed=1).epoch_batches(2)
    parts = [PKSampler(pids, 8, 4, seed=1, rank=r, world_size=world).rank_batches(2) for r in range(world)]
    assert all(p.shape == (full.shape[0], 32 // world) for p in parts), "same batch count on every rank"
    assert np.array_equal(np.concatenate(parts, axis=1), full)
    for p in parts:
        for b in p:  # each rank keeps whole identities: K images of each of its P / world ids
            g = pids[b].reshape(-1, 4)
            assert (g == g[:, :1]).all()


def test_keys_carry_global_positions_and_resume_mid_epoch() -> None:
    pids = _pids(4)
    r1 = PKSampler(pids, 8, 4, seed=0, rank=1, world_size=2)
    batches = list(KeyBatchSampler(r1, epoch=5))
    full = PKSampler(pids, 8, 4, seed=0).epoch_batches(5)
    assert len(batches) == len(KeyBatchSampler(r1, 5)) == full.shape[0]
    for i, keys in enumerate(batches):
        assert all(e == 5 for e, _, _ in keys)
        assert [pos for _, pos, _ in keys] == list(range(i * 32 + 16, i * 32 + 32))
        assert [idx for _, _, idx in keys] == full[i, 16:].tolist()
    resumed = list(KeyBatchSampler(r1, epoch=5, start_batch=2))
    assert resumed == batches[2:] and len(KeyBatchSampler(r1, 5, 2)) == len(batches) - 2


def test_cap_and_errors() -> None:
    pids = _pids(5)
    assert PKSampler(pids, 8, 4, seed=0, max_batches=2).epoch_batches(0).shape[0] == 2
    with pytest.raises(ValueError, match="fewer than num_ids"):
        PKSampler(np.array([1, 1, 2, 2]), 4, 2, seed=0)
    with pytest.raises(ValueError, match="divisible by the world size"):
        PKSampler(pids, 6, 4, seed=0, rank=0, world_size=4)


def test_from_config_reads_the_train_section():
    from personvit.config.finetune import FinetuneTrainConfig

    pids = np.repeat(np.arange(12), 5)
    train = FinetuneTrainConfig(num_ids=4, num_instances=2, max_steps_per_epoch=3)
    ours = PKSampler.from_config(pids, train, seed=1, rank=1, world_size=2)
    want = PKSampler(pids, 4, 2, 1, 1, 2, 3)
    assert np.array_equal(ours.epoch_batches(2), want.epoch_batches(2)) and ours.epoch_batches(2).shape[0] == 3
