"""The resume contract's pure core: what counts as a change, what is allowed, how it reads."""

from __future__ import annotations

import pytest

from personvit import fingerprint as fp
from personvit.config.core import config_to_dict, load_config
from personvit.config.pretrain import PretrainConfig
from tests.support.pretrain import TINY_CONFIG


def _tiny(*overrides: str) -> dict:
    cfg = load_config(PretrainConfig, TINY_CONFIG, ["data.shards=/data/lup", *overrides])
    return {**fp.flatten(config_to_dict(cfg)), "world_size": 1}


def test_flatten_gives_dotted_leaves_and_lists_for_tuples():
    flat = fp.flatten({"optim": {"lr": 1e-3, "betas": (0.9, 0.99)}, "model": {"head": {"out_dim": 8}}})
    assert flat == {"optim.lr": 1e-3, "optim.betas": [0.9, 0.99], "model.head.out_dim": 8}


def test_identical_configs_have_no_diff():
    assert fp.diff(_tiny(), _tiny()) == []


def test_diff_names_each_changed_key_once_sorted():
    changes = fp.diff(_tiny(), _tiny("run.seed=5", "optim.base_lr=1e-3", "data.global_size=[64,16]"))
    assert [c.key for c in changes] == ["data.global_size", "optim.base_lr", "run.seed"]
    assert fp.format_change(changes[2]) == "run.seed: 0 -> 5"
    assert fp.format_change(changes[0]) == "data.global_size: [64, 32] -> [64, 16]"


def test_int_and_float_spellings_of_one_value_are_equal():
    assert fp.diff({"a": 1}, {"a": 1.0}) == []
    assert fp.diff({"a": [1, 2]}, {"a": (1.0, 2)}) == []
    assert [c.key for c in fp.diff({"a": True}, {"a": 1})] == ["a"]  # a bool is not a number


def test_a_key_present_on_one_side_only_is_a_change():
    (change,) = fp.diff({"a": 1}, {"a": 1, "b": None})
    assert fp.format_change(change) == "b: <unset> -> null"


def test_cadence_and_length_are_allowed_by_default_computation_is_not():
    old = _tiny()
    new = _tiny("train.epochs=9", "run.log_every_steps=1", "checkpoint.every_steps=3", "checkpoint.keep_last=4",
                "dist.timeout_s=60", "data.num_workers=4", "run.dir=/elsewhere", "data.shards=/moved/lup",
                "loss.lambda2=0.5", "model.depth=2", "train.precision=bf16")
    refused = fp.refused_changes(fp.diff(old, new), allowed=())
    assert [c.key for c in refused] == ["loss.lambda2", "model.depth", "train.precision"]


def test_pseudo_keys_count():
    old, new = {**_tiny(), "data.manifest_sha256": "aa"}, {**_tiny(), "data.manifest_sha256": "bb", "world_size": 2}
    assert [c.key for c in fp.refused_changes(fp.diff(old, new), ())] == ["data.manifest_sha256", "world_size"]


def test_allow_change_takes_commas_repeats_and_sections():
    known = _tiny()
    patterns = fp.parse_allow_change(["run.seed,optim", "loss.*", " model.depth "], known)
    assert patterns == ("run.seed", "optim.", "loss.", "model.depth")
    changes = fp.diff(known, _tiny("run.seed=3", "optim.base_lr=1e-3", "loss.lambda2=0.5", "model.depth=3",
                                   "model.num_heads=2"))
    assert [c.key for c in fp.refused_changes(changes, patterns)] == ["model.num_heads"]
    assert not fp.is_allowed("optimizer.lr", patterns)  # a section matches at a dot boundary only


def test_allow_change_rejects_a_typo_with_a_suggestion():
    with pytest.raises(ValueError, match=r"'run.sed' is not a config key \(did you mean 'run.seed'\?\)"):
        fp.parse_allow_change("run.sed", _tiny())
    assert fp.parse_allow_change("world_size", _tiny()) == ("world_size",)
    assert fp.parse_allow_change(None, _tiny()) == ()


def test_manifest_digest_is_the_sha256_of_the_bytes():
    assert fp.manifest_digest(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert fp.manifest_digest(b"{}") != fp.manifest_digest(b"{} ")
