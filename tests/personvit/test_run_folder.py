"""open_run_folder in-process: the first start's record, a refused rerun, a legacy folder, faults on the way out."""

from __future__ import annotations

import errno

import pytest
import yaml

from personvit.checkpoint import CheckpointManager
from personvit.config.core import ConfigError, load_config, save_config
from personvit.config.pretrain import PretrainConfig
from personvit.run_folder import Interrupted, ResumeContractError, open_run_folder
from personvit.write_errors import WriteFailedError
from tests.support.pretrain import TINY_CONFIG


def _cfg(tmp_path, *overrides):
    shards = tmp_path / "shards"
    if not shards.exists():
        shards.mkdir()
        (shards / "manifest.json").write_text('{"splits": {}}')
    return load_config(PretrainConfig, TINY_CONFIG, [f"data.shards={shards}", f"run.dir={tmp_path / 'run'}",
                                                     *overrides])


def test_first_start_writes_config_and_history_then_a_changed_manifest_is_refused(tmp_path):
    with open_run_folder(_cfg(tmp_path), "pretrain", 0, 1) as folder:
        assert folder.lock is not None and folder.lock.enforced
    first = yaml.safe_load((tmp_path / "run" / "configs" / "0000.yaml").read_text())
    assert first["start"] == 0 and first["changed"] == [] and first["config"]["run"]["seed"] == 0
    assert len(first["fingerprint"]["data.manifest_sha256"]) == 64
    # Another shard set of the same size under the same path: only the digest tells.
    (tmp_path / "shards" / "manifest.json").write_text('{"splits": {"train": {}}}')
    with pytest.raises(ResumeContractError, match=r"\n  data.manifest_sha256: [0-9a-f]{64} -> [0-9a-f]{64}\n"):
        with open_run_folder(_cfg(tmp_path), "pretrain", 0, 1):
            pass
    assert not (tmp_path / "run" / "configs" / "0001.yaml").exists()


def test_a_typo_in_allow_change_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'optim.base_lr'"):
        with open_run_folder(_cfg(tmp_path), "pretrain", 0, 1, allow_change=["optim.base_l"]):
            pass


def test_legacy_folder_with_only_config_yaml_is_compared_on_its_keys(tmp_path):
    save_config(_cfg(tmp_path), tmp_path / "run" / "config.yaml")
    with pytest.raises(ResumeContractError) as info:
        with open_run_folder(_cfg(tmp_path, "loss.lambda2=0.5"), "pretrain", 0, 1):
            pass
    assert "\n  loss.lambda2: 1.0 -> 0.5\n" in str(info.value) and "world_size" not in str(info.value)


def test_faults_in_the_block_name_the_last_checkpoint(tmp_path):
    cfg = _cfg(tmp_path)
    with pytest.raises(WriteFailedError) as info:
        with open_run_folder(cfg, "pretrain", 0, 1) as folder:
            saved = CheckpointManager(folder.checkpoints).save({"w": 1}, step=3, epoch=0)
            raise WriteFailedError(folder.path / "metrics.jsonl", OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert str(info.value) == (f"cannot write {tmp_path}/run/metrics.jsonl: Disk quota exceeded; "
                               f"last complete checkpoint: {saved}")
    with pytest.raises(Interrupted, match=f"interrupted before training started; last checkpoint {saved}; rerun"):
        with open_run_folder(cfg, "pretrain", 0, 1):
            raise KeyboardInterrupt
    with open_run_folder(cfg, "pretrain", 0, 1):  # each of those released the lock on the way out
        pass
    assert len(list((tmp_path / "run" / "configs").glob("*.yaml"))) == 3
