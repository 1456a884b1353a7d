"""Run → finetune → reconstruct on tiny models: files, index.json, events, cancel, CLI."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from engine.errors import Cancelled, ConfigError
from engine.events import CancelToken, Checkpoint, Preview, Progress, drive
from engine.recon.decoder import Decoder, timestep_router_dir
from engine.recon.finetune import finetune_job
from engine.recon.finetune_config import FinetuneConfig
from engine.recon.index import load_embeddings, read_index
from engine.recon.reconstruct import reconstruct_job
from engine.recon.reconstruct_config import ReconstructConfig as RC


@pytest.fixture(scope="module")
def lora_decoder(ridge_run, tiny_demo_gen, tiny_subject_s):
    cfg = FinetuneConfig(generator=str(tiny_demo_gen), max_steps=3, unet="lora", lora_rank=2, lora_ff=True)
    events = []
    result = drive(finetune_job(ridge_run, config=cfg, subject=tiny_subject_s), events.append)
    return result, events


def test_finetune_writes_the_decoder_with_lora_and_a_checkpoint_event(lora_decoder, ridge_run):
    result, events = lora_decoder
    assert result.steps == 3
    assert any(isinstance(e, Checkpoint) for e in events)
    files = {p.name for p in (ridge_run / "decoder").iterdir()}
    assert {"decoder.json", "adapter", "unet_lora.safetensors", "blurry.npz"} <= files
    meta = json.loads((ridge_run / "decoder" / "decoder.json").read_text())
    assert meta["lora"] == {"rank": 2, "alpha": None, "ff": True} and meta["input_shape"] == [64]


def test_decoder_loads_back_with_its_lora_weights(lora_decoder, ridge_run):
    dec = Decoder.open(ridge_run)
    names = [n for n, _ in dec.generator.unet.named_parameters() if "lora_" in n]
    assert names and any("ff.net" in n for n in names)


def test_reconstruct_writes_pngs_index_and_embeddings(lora_decoder, ridge_run, tiny_subject_s, tmp_path):
    events = []
    out = tmp_path / "rec"
    res = drive(reconstruct_job(ridge_run, RC(samples=2, steps=3, guidance=3.0, seed=1, preview_every=1),
                                subject=tiny_subject_s, out_dir=out, trials=[200, 204]), events.append)
    assert (res.n_images, res.n_samples) == (2, 4)
    idx = read_index(out)
    assert idx.split == "test" and idx.settings["samples"] == 2 and idx.settings["image_size"] == 32
    # the folder says how it was made: the whole config, with the generator it used
    made = RC.from_dict({k: v for k, v in idx.settings.items() if k != "image_size"})
    assert made == RC(samples=2, steps=3, guidance=3.0, seed=1, preview_every=1, generator=idx.settings["generator"])
    assert [it.image_index for it in idx.items] == [200, 201]
    assert idx.items[0].trials == (200, 201, 202) and idx.items[0].category == "a"
    for it in idx.items:
        assert np.asarray(Image.open(out / it.samples[1])).shape == (32, 32, 3)
        assert np.asarray(Image.open(out / it.ground_truth)).shape == (16, 16, 3)
        assert (out / it.blurry).is_file()
    z = load_embeddings(out)
    assert z["brain"].shape == z["target"].shape == (2, 64)
    previews = [e for e in events if isinstance(e, Preview)]
    assert len(previews) == 3 and previews[0].image.shape == (32, 32, 3)
    assert [e.step for e in events if isinstance(e, Progress)] == [1, 2, 3]
    # Same seed → same images (one seed per image and sample, independent of batching).
    again = drive(reconstruct_job(ridge_run, RC(samples=2, steps=3, seed=1, batch_size=2, img2img_strength=None),
                                  subject=tiny_subject_s, out_dir=tmp_path / "b", trials=[204]))
    assert again.n_images == 1
    a = np.asarray(Image.open(out / "samples/img-00201-s1.png")).astype(int)
    b = np.asarray(Image.open(tmp_path / "b" / "samples/img-00201-s1.png")).astype(int)
    # the same noise and condition; only float rounding of the batched convolutions may move a pixel by one level
    assert np.abs(a - b).max() <= 1 and (a != b).mean() < 0.01


def test_oracle_reconstructs_from_the_true_embeddings_through_the_same_decoder(lora_decoder, ridge_run,
                                                                               tiny_subject_s, tmp_path):
    from engine.evaluate import evaluate_folders

    cfg = RC(samples=1, steps=3, guidance=3.0, seed=1)
    kw = dict(subject=tiny_subject_s, trials=[200, 204])
    drive(reconstruct_job(ridge_run, cfg, out_dir=tmp_path / "brain", **kw))
    events = []
    drive(reconstruct_job(ridge_run, cfg.replace(source="oracle"), out_dir=tmp_path / "oracle", **kw),
          events.append)
    idx = read_index(tmp_path / "oracle")
    assert idx.method.startswith("oracle: true") and idx.settings["source"] == "oracle"
    assert all(it.blurry is None for it in idx.items)  # no layout head: a blurry image would come from the brain
    z = load_embeddings(tmp_path / "oracle")
    assert np.array_equal(z["brain"], z["target"])  # conditioned on the targets themselves
    brain = load_embeddings(tmp_path / "brain")
    assert np.array_equal(brain["target"], z["target"]) and not np.array_equal(brain["brain"], z["brain"])
    a = np.asarray(Image.open(tmp_path / "oracle" / idx.items[0].samples[0]))
    b = np.asarray(Image.open(tmp_path / "brain" / idx.items[0].samples[0]))
    assert not np.array_equal(a, b)  # same seeds and decoder, another condition
    # evaluate shows it as its own row, labelled as the oracle.
    rows = evaluate_folders([tmp_path / "brain", tmp_path / "oracle"]).rows
    assert any(r["method"].startswith("oracle: true") for r in rows)
    # With img2img, a generator that draws no low-level image of its own starts the oracle from noise, and says so.
    events = []
    drive(reconstruct_job(ridge_run, cfg.replace(source="oracle", img2img_strength=0.5), out_dir=tmp_path / "o2",
                          **kw), events.append)
    assert any("oracle" in getattr(e, "message", "") and "start from noise" in e.message for e in events)
    assert read_index(tmp_path / "o2").settings["img2img_strength"] is None
    assert np.array_equal(np.asarray(Image.open(tmp_path / "o2" / idx.items[0].samples[0])), a)


def test_unguided_reconstruction_samples_the_decoders_trained_null_condition(lora_decoder, ridge_run, tiny_subject_s,
                                                                             tmp_path):
    # Guidance 0 is the unconditional branch alone: it must be the null condition fine-tuning trained (the one the
    # condition was dropped to), not a zero embedding or the encoding of an empty scan.
    from engine.recon.reconstruct import sample_seed
    from engine.recon.sampler import SamplerConfig, sample_latents

    out = tmp_path / "g0"
    drive(reconstruct_job(ridge_run, RC(samples=1, steps=3, guidance=0.0, seed=5), subject=tiny_subject_s,
                          out_dir=out, trials=[200]))
    dec = Decoder.open(ridge_run)
    null = dec.adapter.null_condition(1)
    wrong = dec.adapter(torch.zeros(1, *dec.adapter.config.input_shape))
    seeds, cfg = [sample_seed(5, 200, 0)], SamplerConfig(steps=3, guidance=1.0)
    with torch.no_grad():
        lat = sample_latents(dec.generator, null, null, cfg, seeds=seeds)
        lat_wrong = sample_latents(dec.generator, wrong, wrong, cfg, seeds=seeds)
    got = np.asarray(Image.open(out / "samples/img-00200-s0.png"))
    assert np.array_equal(got, dec.generator.decode(lat)[0])
    assert not np.array_equal(got, dec.generator.decode(lat_wrong)[0])


def test_reconstruct_cancel_leaves_no_folder(lora_decoder, ridge_run, tiny_subject_s, tmp_path):
    token = CancelToken()
    job = reconstruct_job(ridge_run, RC(samples=1, steps=3), subject=tiny_subject_s, out_dir=tmp_path / "c",
                          cancel=token)
    with pytest.raises(Cancelled):
        for ev in job:
            if isinstance(ev, Progress):
                token.set()
    assert not (tmp_path / "c").exists()


def test_moe_run_gets_a_timestep_router_and_cross_attention_training(moe_run, tiny_demo_gen, tiny_subject_s,
                                                                      tmp_path):
    from engine.events import Log, Metric

    cfg = FinetuneConfig(generator=str(tiny_demo_gen), max_steps=2, unet="cross_attn", joint_encoder=True)
    events = []
    drive(finetune_job(moe_run, config=cfg, subject=tiny_subject_s), events.append)
    dec = Decoder.open(moe_run)
    assert dec.router is not None and dec.encoder_dir is not None and dec.info["unet"] == "cross_attn"
    assert timestep_router_dir(moe_run) is not None  # what the Experts panel shows the router from
    w = dec.router.weights_per_step([999, 500, 0])
    assert w.shape == (3, dec.router.n_levels)
    # the alignment term is logged on its own, next to the diffusion loss and the total it adds up to
    by_name: dict = {}
    for e in events:
        if isinstance(e, Metric):
            by_name.setdefault(e.name, []).append(e.value)
    assert {"diffusion_loss", "align_loss", "loss"} <= set(by_name)
    for d, a, total in zip(by_name["diffusion_loss"], by_name["align_loss"], by_name["loss"]):
        assert total == pytest.approx(d + cfg.align_weight * a, rel=1e-5)
    # the router trains at its own rate: two steps already move its slopes off the prior
    assert not torch.allclose(dec.router.slope.detach(), dec.router.prior_slopes())
    assert any(isinstance(e, Log) and "timestep router slopes (prior -> learned)" in e.message for e in events)
    res = drive(reconstruct_job(moe_run, RC(samples=1, steps=2, img2img_strength=0.5, repeat_mode="average_voxels"),
                                subject=tiny_subject_s, out_dir=tmp_path / "m", trials=[200]))
    assert res.n_samples == 1


def test_without_a_decoder_the_generator_reads_only_its_own_embedding(tiny_demo_gen, tmp_path):
    from engine.recon.generators import GeneratorConfig

    gcfg = GeneratorConfig(spec=str(tiny_demo_gen), device="cpu")
    dec = Decoder.open(tmp_path, gcfg, info={"target_shape": [64], "embedder": "pixels"})
    assert dec.info == {"zero_shot": True} and dec.adapter is dec.generator.adapter
    with pytest.raises(ConfigError, match="neurolens finetune"):
        Decoder.open(tmp_path, gcfg, info={"target_shape": [16, 12], "embedder": "pixels"})


def test_cli_finetune_and_reconstruct(ridge_run, tiny_demo_gen, tiny_subject_s, tmp_path, capsys, monkeypatch):
    from engine.cli.main import main
    from engine.data.native import write_subject

    subj_path = tmp_path / "tiny.nlsubj"
    write_subject(tiny_subject_s, subj_path)
    rc = main(["finetune", str(ridge_run), "--generator", str(tiny_demo_gen), "--max-steps", "2", "--overwrite",
               "--subject", str(subj_path), "--adapter", "train", "--json-events"])
    assert rc == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert lines[0]["event"] == "Started" and lines[-1]["event"] == "Finished"
    # --resume on a finished fine-tuning restores its state and has nothing left to do.
    assert main(["finetune", str(ridge_run), "--resume", "--subject", str(subj_path), "--json-events"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    steps = [e for e in lines if e["event"] == "Progress" and e["stage"].startswith("finetune")]
    assert not steps and lines[-1]["event"] == "Finished"  # (its start-up stage, "encode images", still reports)
    out = tmp_path / "cli-rec"
    rc = main(["reconstruct", str(ridge_run), "--split", "test", "--trials", "200-202", "--samples", "1",
               "--guidance", "2", "--steps", "2", "--seed", "3", "--out", str(out), "--sampler", "dpmpp",
               "--subject", str(subj_path)])
    assert rc == 0
    idx = read_index(out)
    assert idx.settings["sampler"] == "dpmpp" and len(idx.items) == 1
    # rows outside the split are refused by name, not dropped; nothing is written
    capsys.readouterr()
    assert main(["reconstruct", str(ridge_run), "--trials", "5,7,200", "--steps", "2", "--out",
                 str(tmp_path / "refused"), "--subject", str(subj_path)]) == 2
    err = capsys.readouterr().err
    assert "trial rows 5, 7 are not in split 'test'" in err and not (tmp_path / "refused").exists()
    assert main(["reconstruct", str(ridge_run), "--steps", "0", "--subject", str(subj_path)]) == 2


def test_cli_finetune_of_a_run_with_nothing_but_the_prior_to_fit(ridge_run, tiny_demo_gen, tiny_subject_s, tmp_path,
                                                                 capsys):
    """A vector run in the generator's own space, no expert levels: the default fine-tuning is the prior alone."""
    import shutil

    from engine.cli.main import main
    from engine.data.native import write_subject

    run = tmp_path / "run"
    shutil.copytree(ridge_run, run, ignore=shutil.ignore_patterns("decoder", "recon"))
    subj_path = tmp_path / "tiny.nlsubj"
    write_subject(tiny_subject_s, subj_path)
    capsys.readouterr()
    assert main(["finetune", str(run), "--generator", str(tiny_demo_gen), "--prior-epochs", "2",
                 "--subject", str(subj_path)]) == 0
    printed = capsys.readouterr()
    assert f"decoder written to {run / 'decoder'} (the embedding prior; nothing else trains)" in printed.out
    assert "nothing else trains (the generator's adapter kept, frozen UNet, no router)" in printed.err
