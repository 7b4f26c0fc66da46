"""One precision vocabulary: both schemas take the same words, one helper maps them to autocast."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from personvit.config.core import ConfigError, load_config
from personvit.config.finetune import FinetuneConfig
from personvit.config.pretrain import PretrainConfig
from personvit.precision import Precision, autocast_settings

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
WORDS = ["auto", "fp32", "bf16", "fp16", '"off"']


@pytest.mark.parametrize("word", WORDS)
def test_both_schemas_take_the_same_words(word: str) -> None:
    pre = load_config(PretrainConfig, CONFIGS / "pretrain" / "tiny_cpu.yaml", ["data.shards=x", f"train.precision={word}"])
    fine = load_config(FinetuneConfig, CONFIGS / "finetune" / "tiny_cpu.yaml", ["data.shards=x", f"train.amp={word}"])
    cpu = torch.device("cpu")
    assert autocast_settings(pre.train.precision, cpu) == autocast_settings(fine.train.amp, cpu)
    # Fine-tuning keeps `off` as written: run folders record it in their resume fingerprint.
    assert fine.train.amp == word.strip('"') and pre.train.precision == word.strip('"').replace("off", "fp32")


def test_cpu_settings_and_the_old_spelling() -> None:
    cpu = torch.device("cpu")
    assert autocast_settings("auto", cpu) == autocast_settings("fp32", cpu) == autocast_settings("off", cpu) == (None, False)
    assert autocast_settings("bf16", cpu) == (torch.bfloat16, False)
    assert autocast_settings("fp16", cpu) == (torch.float16, True)
    assert "off" in Precision.__args__
    with pytest.raises(ConfigError, match=r"'train.amp': must be one of \['auto', 'fp32', 'bf16', 'fp16', 'off'\]"):
        load_config(FinetuneConfig, CONFIGS / "finetune" / "tiny_cpu.yaml", ["data.shards=x", "train.amp=fp64"])
