import json

import numpy as np
import pytest

from engine.models.embedders.features import (FeatureUnavailable, load_classifier, load_feature_extractor,
                                              torchvision_unavailable_reason)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """Tiny CLIP vision tower, ViT backbone and ViT classifier, saved as a user would have them on disk."""
    import torch
    from transformers import (CLIPVisionConfig, CLIPVisionModelWithProjection, ViTConfig, ViTForImageClassification,
                              ViTModel)

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("models")
    small = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=32,
                 patch_size=8)
    clip = CLIPVisionModelWithProjection(CLIPVisionConfig(projection_dim=8, **small))
    clip.save_pretrained(root / "clip")
    (root / "clip" / "preprocessor_config.json").write_text(json.dumps(
        {"image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
         "size": {"shortest_edge": 32}, "crop_size": {"height": 32, "width": 32}, "do_center_crop": True}))
    ViTModel(ViTConfig(**small)).save_pretrained(root / "vit")
    cfg = ViTConfig(num_labels=60, **small)
    ViTForImageClassification(cfg).save_pretrained(root / "cls")
    return root


def test_clip_folder_gives_image_embeds(tiny_models, rng):
    ext = load_feature_extractor(str(tiny_models / "clip"), device="cpu")
    f = ext(rng.random((3, 64, 64, 3)).astype(np.float32))
    assert f.shape == (3, 8) and f.dtype == np.float32
    assert ext.name == "CLIP" and "image_embeds" in ext.protocol and "resize to 32" in ext.protocol


def test_hidden_state_layer_and_named_row(tiny_models, rng):
    x = rng.random((2, 40, 40, 3))
    ext = load_feature_extractor(f"{tiny_models / 'vit'}:1", device="cpu")
    assert ext(x).shape == (2, 17 * 16)  # 16 patches + CLS, hidden 16, flattened
    row = load_feature_extractor(f"alexnet2={tiny_models / 'vit'}:pooler", device="cpu")
    assert row.row == "alexnet2" and "local equivalent" in row.name
    assert row(x).shape == (2, 16)
    with pytest.raises(FeatureUnavailable, match="unknown layer"):
        load_feature_extractor(f"{tiny_models / 'vit'}:fc7")


def test_unavailable_specs_name_the_reason(tmp_path):
    with pytest.raises(FeatureUnavailable, match="torchvision"):
        load_feature_extractor("inception")
    with pytest.raises(FeatureUnavailable, match="no config.json"):
        load_feature_extractor(str(tmp_path))
    assert "--features swav=PATH" in torchvision_unavailable_reason("swav")


def test_classifier_logits(tiny_models, rng):
    clf = load_classifier(tiny_models / "cls", device="cpu")
    assert len(clf.labels) == 60
    assert clf.logits(rng.random((3, 48, 48, 3))).shape == (3, 60)
