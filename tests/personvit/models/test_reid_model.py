"""BNNeck ReID model: feature = pre-BN CLS, frozen zero BN bias, bias-free classifier, weight loading."""

from __future__ import annotations

import pytest
import torch

from personvit.checkpoint import CheckpointError
from personvit.models.build import build_reid_model
from personvit.models.reid import load_reid_weights

TINY = dict(patch_size=8, embed_dim=32, depth=2, num_heads=2)


def _model(num_classes: int = 5, **kw):
    torch.manual_seed(0)
    return build_reid_model("vit_small", (32, 16), num_classes, overrides=TINY, **kw)


def test_feature_is_pre_bn_cls_and_logits_come_from_bnneck() -> None:
    m = _model().eval()
    x = torch.randn(3, 3, 32, 16)
    feat, logits = m(x)
    assert torch.equal(feat, m.backbone.forward_features(x)[:, 0])
    assert torch.allclose(logits, m.classifier(m.bottleneck(feat)))
    assert logits.shape == (3, 5) and m.classifier.bias is None


def test_bnneck_bias_frozen_at_zero_and_classifier_std() -> None:
    m = _model(num_classes=2000, classifier_std=0.001)
    assert not m.bottleneck.bias.requires_grad and torch.count_nonzero(m.bottleneck.bias) == 0
    assert m.classifier.weight.std().item() == pytest.approx(0.001, rel=0.05)
    assert not m.backbone.masked_embed.requires_grad, "unused in fine-tuning: frozen so DDP sees no idle parameter"
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=1.0)
    m.train()
    feat, logits = m(torch.randn(4, 3, 32, 16))
    logits.sum().backward()
    opt.step()
    assert torch.count_nonzero(m.bottleneck.bias) == 0


def test_feature_extractor_has_no_classifier_and_loads_finetuned_weights() -> None:
    trained = _model(num_classes=7)
    extractor = build_reid_model("vit_small", (32, 16), 0, overrides=TINY)
    load_reid_weights(extractor, trained.state_dict(), "mem")
    x = torch.randn(2, 3, 32, 16)
    feat, logits = extractor.eval()(x)
    assert logits is None and torch.equal(feat, trained.eval().features(x))


def test_wrong_architecture_is_named() -> None:
    other = build_reid_model("vit_small", (32, 16), 3, overrides=dict(TINY, embed_dim=48))
    with pytest.raises(CheckpointError, match="has shape"):
        load_reid_weights(_model(0), other.state_dict(), "ckpt.pt")
    deeper = build_reid_model("vit_small", (32, 16), 3, overrides=dict(TINY, depth=3))
    with pytest.raises(CheckpointError, match="unexpected"):
        load_reid_weights(_model(0), deeper.state_dict(), "ckpt.pt")
