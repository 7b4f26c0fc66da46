"""Config merge: defaults <- file (extends) <- overrides; strict errors naming the key."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest
import yaml

from personvit.config.core import ConfigError, config_to_dict, load_config, save_config
from personvit.config.sections import CheckpointConfig, RunConfig


@dataclass
class OptimSection:
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    kind: Literal["adamw", "sgd"] = "adamw"

    def __post_init__(self):
        if self.lr <= 0:
            raise ValueError("lr must be > 0")


@dataclass
class DataSection:
    shards: str  # required
    sizes: list[int] = field(default_factory=lambda: [64, 32])
    workers: int = 0


@dataclass
class Cfg:
    data: DataSection
    run: RunConfig = field(default_factory=RunConfig)
    optim: OptimSection = field(default_factory=OptimSection)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    name: str | None = None


def _write(path, data):
    path.write_text(yaml.safe_dump(data))
    return path


def test_defaults_file_extends_and_overrides(tmp_path):
    _write(tmp_path / "base.yaml", {"data": {"shards": "/a", "workers": 2}, "optim": {"lr": 0.5}})
    child = _write(tmp_path / "child.yaml", {"extends": "base.yaml", "optim": {"kind": "sgd"}})
    cfg = load_config(Cfg, child, ["optim.lr=5e-4", "data.sizes=[96, 48]", "run.dir=/tmp/x", "name=null"])
    assert cfg.data.shards == "/a" and cfg.data.workers == 2  # from base
    assert cfg.optim.kind == "sgd"  # from child
    assert cfg.optim.lr == pytest.approx(5e-4) and isinstance(cfg.optim.lr, float)  # override, '5e-4' parsed
    assert cfg.data.sizes == [96, 48]
    assert cfg.run.dir == "/tmp/x" and cfg.name is None
    assert cfg.optim.betas == (0.9, 0.999) and cfg.checkpoint.keep_last == 2  # defaults


def test_int_accepted_for_float_and_list_for_tuple(tmp_path):
    cfg = load_config(Cfg, None, ["data.shards=/s", "optim.lr=1", "optim.betas=[0.5, 0.6]"])
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)
    assert cfg.optim.betas == (0.5, 0.6)


@pytest.mark.parametrize(
    "overrides, needle",
    [
        (["data.shards=/s", "optim.lrr=1"], "unknown config key 'optim.lrr' (did you mean 'optim.lr'?)"),
        (["data.shards=/s", "optimm.lr=1"], "unknown config key 'optimm' (did you mean 'optim'?)"),
        (["data.shards=/s", "data.workers=two"], "'data.workers': expected an integer"),
        (["data.shards=/s", "data.workers=1.5"], "'data.workers': expected an integer"),
        (["data.shards=/s", "optim.kind=lamb"], "'optim.kind': must be one of ['adamw', 'sgd']"),
        (["data.shards=/s", "optim.betas=[1, 2, 3]"], "'optim.betas': expected 2 values"),
        (["data.shards=/s", "optim.lr=-1"], "'optim': lr must be > 0"),
        (["data.shards=/s", "checkpoint.keep_last=1"], "keep_last must be >= 2"),
        (["data.shards=/s", "run.dir=[1]"], "'run.dir'"),
        ([], "missing required config value 'data.shards'"),
        (["data.shards"], "not of the form key=value"),
    ],
)
def test_errors_name_the_key(overrides, needle):
    with pytest.raises(ConfigError) as exc:
        load_config(Cfg, None, overrides)
    msg = str(exc.value)
    assert needle in msg
    assert "\n" not in msg  # one line


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(Cfg, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(Cfg, bad)
    loop = _write(tmp_path / "loop.yaml", {"extends": "loop.yaml"})
    with pytest.raises(ConfigError, match="cycle"):
        load_config(Cfg, loop)


def test_saved_config_round_trips(tmp_path):
    cfg = load_config(Cfg, None, ["data.shards=/s", "optim.lr=0.25"])
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(Cfg, tmp_path / "config.yaml")
    assert again == cfg
    assert config_to_dict(again)["optim"]["betas"] == [0.9, 0.999]


def test_duplicate_key_names_the_key_and_both_lines(tmp_path):
    dup = tmp_path / "dup.yaml"
    dup.write_text("data:\n  shards: /a\n  workers: 2\noptim:\n  lr: 0.1\n  kind: sgd\n  lr: 0.2\n")
    with pytest.raises(ConfigError) as exc:
        load_config(Cfg, dup)
    message = str(exc.value)
    assert "duplicate key 'lr' (lines 5 and 7)" in message and str(dup) in message, message
    assert "\n" not in message
    # The same key in two different sections is not a duplicate, nor is a key merged in with `<<`.
    ok = tmp_path / "ok.yaml"
    ok.write_text("data: &d\n  shards: /a\n  workers: 1\noptim: {lr: 0.5}\nrun: {seed: 3}\n")
    assert load_config(Cfg, ok).optim.lr == 0.5
    from personvit.config.core import load_yaml_text

    assert load_yaml_text("a: &x {k: 1}\nb:\n  <<: *x\n  j: 2\n") == {"a": {"k": 1}, "b": {"k": 1, "j": 2}}
    flow = tmp_path / "flow.yaml"
    flow.write_text("data: {shards: /a, shards: /b}\n")
    with pytest.raises(ConfigError, match="duplicate key 'shards' \\(lines 1 and 1\\)"):
        load_config(Cfg, flow)


def test_duplicate_key_in_a_cluster_profile_is_refused(tmp_path):
    from slurm.profiles import load_profile

    profile = tmp_path / "p.yaml"
    profile.write_text("executor: local\nnodes: 1\nnodes: 2\n")
    with pytest.raises(ConfigError, match="duplicate key 'nodes' \\(lines 2 and 3\\)"):
        load_profile(str(profile))


def test_evaluate_reads_a_finetune_recipe_without_holding_its_training_keys():
    from pathlib import Path

    from personvit.config.finetune import EvaluateConfig

    recipe = Path(__file__).resolve().parents[2] / "configs" / "finetune" / "market1501_vit_small.yaml"
    cfg = load_config(EvaluateConfig, recipe, ["data.shards=x", "train.amp=bf16"])
    assert not hasattr(cfg, "train") and not hasattr(cfg, "checkpoint") and cfg.amp == "bf16"
    assert load_config(EvaluateConfig, recipe, ["data.shards=x", "train.amp=bf16", "amp=fp16"]).amp == "fp16"
    with pytest.raises(ConfigError, match=r"unknown config key 'train.epocs' \(did you mean 'train.epochs'\?\)"):
        load_config(EvaluateConfig, recipe, ["data.shards=x", "train.epocs=3"])
