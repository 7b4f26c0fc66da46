"""personvit/models/build.py: the one model builder (pretraining pair, fine-tuning, evaluation, viz)."""

from __future__ import annotations

import pytest
import torch

from personvit.config.core import ConfigError, from_dict
from personvit.config.finetune import ReIDModelConfig
from personvit.config.model import BackboneConfig
from personvit.config.pretrain import PretrainModelConfig
from personvit.models.build import build_backbone, build_student_teacher, model_section

TINY = {"arch": "vit_tiny", "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}
HEAD = {"out_dim": 16, "patch_out_dim": 16, "hidden_dim": 24, "bottleneck_dim": 8}


def test_student_teacher_are_a_function_of_the_seed_and_leave_the_global_generator_alone() -> None:
    cfg = from_dict(PretrainModelConfig, {**TINY, "head": HEAD})
    state = torch.get_rng_state()
    ours, again = build_student_teacher(cfg, (64, 32), seed=5), build_student_teacher(cfg, (64, 32), seed=5)
    assert torch.equal(torch.get_rng_state(), state)
    for a, b in zip(ours, again):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    other = build_student_teacher(cfg, (64, 32), seed=6)[0].state_dict()
    assert not all(torch.equal(v, other[k]) for k, v in ours[0].state_dict().items())
    assert not any(p.requires_grad for p in ours[1].parameters())


def test_both_schemas_give_the_same_backbone() -> None:
    pre = from_dict(PretrainModelConfig, TINY)
    fine = from_dict(ReIDModelConfig, TINY)
    assert pre.vit_overrides() == fine.vit_overrides() == {k: v for k, v in TINY.items() if k != "arch"}
    torch.manual_seed(0)
    a = build_backbone(pre, (64, 32)).state_dict()
    torch.manual_seed(0)
    b = build_backbone(fine, (64, 32)).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_model_section_reads_the_run_config_typed() -> None:
    assert isinstance(model_section({"model": {**TINY, "head": HEAD}}), PretrainModelConfig)
    assert isinstance(model_section({"model": TINY, "data": {"img_size": [64, 32]}}), ReIDModelConfig)
    with pytest.raises(ConfigError, match=r"unknown config key 'model.embed_dims'"):
        model_section({"model": {"arch": "vit_tiny", "embed_dims": 32}})


@pytest.mark.parametrize("schema", [PretrainModelConfig, ReIDModelConfig])
def test_both_schemas_are_one_backbone_section(schema) -> None:
    assert issubclass(schema, BackboneConfig)
    assert from_dict(schema, {"embed_dim": 32}).embed_dim == 32  # flat keys, as in the YAML
    with pytest.raises(ConfigError, match=r"unknown config key 'model.embed_dims'"):
        from_dict(schema, {"embed_dims": 32}, prefix="model")
    with pytest.raises(ConfigError, match=r"'model': drop_path_rate must be in \[0, 1\)"):
        from_dict(schema, {"drop_path_rate": 1.0}, prefix="model")


@pytest.mark.parametrize("schema, bad", [(PretrainModelConfig, 0), (ReIDModelConfig, -1), (ReIDModelConfig, None)])
def test_each_schema_keeps_its_spelling_of_unset(schema, bad) -> None:
    with pytest.raises(ConfigError, match="depth"):
        from_dict(schema, {"depth": bad}, prefix="model")
