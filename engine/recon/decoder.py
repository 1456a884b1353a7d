"""A run's decoder: what turns its predicted embeddings into images, and the folder it lives in.

``finetune_job`` (``engine.recon.finetune``) writes ``RUN_DIR/decoder/`` (``Run.decoder_dir``) atomically, after every
epoch and when cancelled; ``Decoder.open(run)`` loads it back for reconstruction; ``decoder_state(run)`` says what a
run can reconstruct from its small files alone (the app asks it in its GUI thread)::

    decoder.json        generator, input shape, embedder, UNet mode, LoRA settings, config, steps
    adapter/            ConditioningAdapter (config.json + model.safetensors)
    unet_lora.safetensors | unet_cross_attn.safetensors   (when the UNet trains)
    router/             TimestepRouter (MoE encoders)
    encoder/            the jointly trained encoder (joint_encoder)
    blurry.npz          BlurryRidge
    resume/             optimizer.safetensors, rng.safetensors, state.json (epoch, batch, batch order)
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from engine.errors import CheckpointError, ConfigError, NeuroLensError
from engine.jsonfile import field, read_object  # bounded, type-checked JSON
from engine.recon.finetune_config import FinetuneConfig
from engine.recon.lora import cross_attn_parameters, lora_config
from engine.train.run import DECODER_DIR, Run

DECODER_FILE = "decoder.json"
ADAPTER_DIR = "adapter"
LORA_FILE = "unet_lora.safetensors"
CROSS_ATTN_FILE = "unet_cross_attn.safetensors"
ROUTER_DIR = "router"
PRIOR_DIR = "embedding_prior"
ENCODER_DIR = "encoder"
BLURRY_FILE = "blurry.npz"
RESUME_DIR = "resume"
RESUME_FILES = ("state.json", "optimizer.safetensors", "rng.safetensors")


def _run(run) -> Run:
    """A ``Run`` view of ``run`` (a path or a ``Run``; the config is not parsed)."""
    return run if isinstance(run, Run) else Run(run)


def has_decoder(run) -> bool:
    """Whether ``run`` has a fine-tuned decoder (``decoder/decoder.json``, written last of the folder)."""
    return (_run(run).decoder_dir / DECODER_FILE).is_file()


def timestep_router_dir(run) -> Path | None:
    """The folder of the timestep router fine-tuning learned for a Mixture-of-Experts run, or None (none yet)."""
    folder = _run(run).decoder_dir / ROUTER_DIR
    return folder if folder.is_dir() else None


@dataclass
class Decoder:
    """What reconstruction needs on top of a run's encoder: generator, adapter, optional router/blurry/encoder."""

    generator: object
    adapter: object
    router: object = None
    blurry: object = None
    encoder_dir: Path | None = None
    prior: object = None  # EmbeddingPrior: the brain's predictions -> the adapter's input (not the oracle's)
    info: dict = dataclasses.field(default_factory=dict)

    def condition(self, embeddings, *, from_brain: bool = True):
        """The adapter's ``Condition`` for ``embeddings`` (a torch tensor on the generator's device); a brain
        prediction passes through the embedding prior first, an image's true embedding (the oracle) does not."""
        if from_brain and self.prior is not None:
            embeddings = self.prior(embeddings.float())
        return self.adapter(embeddings)

    def layout(self, embeddings: np.ndarray, *, from_brain: bool = True, batch: int = 256) -> np.ndarray | None:
        """The generator's own coarse picture of ``embeddings``, a low-level image: the adapter's spatial map (the
        layout latent the UNet is conditioned on; for brain predictions, from the prior's output) decoded by the VAE,
        ``(n, 3, H, W)`` in [0, 1]. None when the adapter predicts no latent-shaped map (Stable Diffusion adapters)."""
        gen, out = self.generator, []
        shape = getattr(getattr(self.adapter, "config", None), "spatial_shape", None)
        if getattr(self.adapter, "spatial_proj", None) is None or \
                tuple(shape or ()) != (gen.latent_channels, gen.latent_size, gen.latent_size):
            return None
        import torch

        x = np.asarray(embeddings, np.float32)
        with torch.no_grad():
            for s in range(0, len(x), batch):
                emb = torch.from_numpy(x[s:s + batch]).to(gen.device)
                out.append(gen.decode(self.condition(emb, from_brain=from_brain).spatial))
        return np.concatenate(out).transpose(0, 3, 1, 2).astype(np.float32) / 255.0

    @classmethod
    def open(cls, run, generator_config=None, *, info: dict | None = None) -> "Decoder":
        """The fine-tuned decoder of a run (``RUN_DIR/decoder/``), or, when there is none, the demo generator's own
        adapter if the run predicts demo-embedder vectors of the generator's input shape (zero-shot).

        Parameters
        ----------
        run : path or Run
        generator_config : GeneratorConfig, optional
            Device/dtype/compile options; its ``spec`` overrides the decoder's generator when not ``"demo"``.
        info : dict, optional
            The run's model info (``Run.model_info``); read from the run when it has a model.
        """
        from engine.recon.generators import GeneratorConfig, load_generator

        run = _run(run)
        if info is None and run.has_model():
            info = run.model_info()
        folder = run.decoder_dir
        gcfg = generator_config or GeneratorConfig()
        if not (folder / DECODER_FILE).is_file():
            gen = load_generator(gcfg)
            shape = tuple((info or {}).get("target_shape", ()))
            if gen.adapter is not None and shape == tuple(gen.adapter.config.input_shape) \
                    and (info or {}).get("embedder") == gen.embedder:
                return cls(gen, gen.adapter, info={"zero_shot": True})
            raise ConfigError(f"{run.path}: no fine-tuned decoder (missing {DECODER_DIR}/{DECODER_FILE}) and the "
                              f"generator cannot read this run's embeddings directly; run "
                              f"'neurolens finetune {run.path}' first")
        meta = read_object(folder / DECODER_FILE)
        spec = meta["generator"] if gcfg.spec == "demo" else gcfg.spec
        # The decoder was trained with (or without) that IP-Adapter file: load exactly that.
        gen = load_generator(dataclasses.replace(gcfg, spec=spec, ip_adapter=meta.get("ip_adapter")))
        return cls._load_parts(folder, gen, meta)

    @classmethod
    def _load_parts(cls, folder: Path, gen, meta: dict) -> "Decoder":
        import torch
        from safetensors.torch import load_file

        from engine.recon.blurry import BlurryRidge
        from engine.recon.conditioning import ConditioningAdapter
        from engine.recon.embedding_prior import EmbeddingPrior
        from engine.recon.timestep_router import TimestepRouter

        adapter = ConditioningAdapter.load(folder / ADAPTER_DIR).to(gen.device).eval()
        if meta.get("unet") == "lora":
            from peft import set_peft_model_state_dict

            lora = meta["lora"]
            gen.unet.add_adapter(lora_config(lora["rank"], lora.get("alpha"), lora.get("ff", False)))
            set_peft_model_state_dict(gen.unet, load_file(str(folder / LORA_FILE)))
            gen.unet.to(gen.device, gen.dtype).requires_grad_(False)
        elif meta.get("unet") == "cross_attn":
            state = load_file(str(folder / CROSS_ATTN_FILE))
            own = cross_attn_parameters(gen.unet)
            if set(state) != set(own):
                raise CheckpointError(f"{folder}: {CROSS_ATTN_FILE} does not match the generator's UNet")
            with torch.no_grad():
                for k, v in state.items():
                    own[k].copy_(v.to(own[k].dtype))
        router = (TimestepRouter.load(folder / ROUTER_DIR).to(gen.device).eval()
                  if (folder / ROUTER_DIR).is_dir() else None)
        prior = EmbeddingPrior.load(folder / PRIOR_DIR).to(gen.device) if (folder / PRIOR_DIR).is_dir() else None
        blurry = BlurryRidge.load(folder / BLURRY_FILE) if (folder / BLURRY_FILE).is_file() else None
        enc = folder / ENCODER_DIR if (folder / ENCODER_DIR).is_dir() else None
        return cls(gen, adapter, router=router, blurry=blurry, encoder_dir=enc, prior=prior, info=meta)


# --------------------------------------------------------------------------------------------------------------------
# What a run can reconstruct, from its small files
# --------------------------------------------------------------------------------------------------------------------


class DecoderState(NamedTuple):
    """What the app shows of a run's decoder."""

    description: str  # one line for the user
    can_reconstruct: bool
    has_blurry: bool  # a blurry image to start from (img2img)


def decoder_state(run) -> DecoderState:
    """(description, can reconstruct, has a blurry image to start from) of a run's decoder, from its small files."""
    from engine.train.trained_model import TrainedModel

    run = _run(run)
    dec = run.decoder_dir / DECODER_FILE
    if dec.is_file():
        try:
            meta = json.loads(dec.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            meta = {}
        # fine-tuning always leaves a low-level image: the encoder's head, the generator's layout or a ridge
        parts = [f"{meta.get('generator', '?')} generator", f"UNet {meta.get('unet', 'frozen')}"]
        parts += ["embedding prior"] if meta.get("prior") else []
        parts += ["its adapter kept"] if meta.get("adapter") == "kept" else []
        parts += [f"{meta.get('steps', '?')} steps"] if meta.get("steps") != 0 else []
        return DecoderState(f"Decoder: fine-tuned ({', '.join(parts)})", True, True)
    try:
        model = TrainedModel.open(run)
    except (NeuroLensError, OSError, ValueError):
        return DecoderState("No trained model in this run yet", False, False)
    info = model.info
    if info.get("embedder") == "stimulus-pixels":
        from engine.recon.pixel_decoder import decoder_label

        return DecoderState(f"Decoder: the pixel decoder's predicted images ({decoder_label(info)}) are the "
                            "reconstructions (no generator); for sharper images, train a generator on this subject's "
                            "images", True, False)
    if info.get("embedder") == "demo" and info.get("target") == "pooled":
        from engine.recon.generators import demo_folder

        try:  # the shipped generator's layout head gives a low-level image without fine-tuning
            layout = "spatial_shape" in read_object(demo_folder() / ADAPTER_DIR / "config.json").get("config", {})
        except (NeuroLensError, OSError, ValueError, AttributeError):
            layout = False
        return DecoderState("Decoder: the demo generator reads this run's demo embeddings directly (zero-shot); "
                            "fine-tuning adapts it to the brain predictions", True, model.has_blurry_head() or layout)
    return DecoderState(f"No decoder: this run predicts '{info.get('embedder')}' targets; fine-tune a decoder first",
                        False, False)


# --------------------------------------------------------------------------------------------------------------------
# Writing a decoder (fine-tuning), and its resume state
# --------------------------------------------------------------------------------------------------------------------


def save_decoder(out_dir: Path, cfg: FinetuneConfig, gen, adapter, router, encoder, prior, info: dict, step: int,
                 emb: np.ndarray, enc_blurry, images, images_of_rows, levels, rows, *, optimizer=None, rng=None,
                 position: dict | None = None) -> Path:
    """Write the decoder folder ``out_dir`` in one atomic step; with ``position``, also what resuming needs."""
    from engine.atomic import atomic_dir, atomic_save_safetensors, atomic_write_json
    from engine.recon.blurry import BlurryRidge
    from engine.train.checkpoint import capture_rng, flatten_optimizer_state

    with atomic_dir(out_dir, overwrite=True) as tmp:
        if position is not None:
            rng_js, rng_t = capture_rng(rng)
            opt_t, opt_meta = flatten_optimizer_state(optimizer.state_dict())
            (tmp / RESUME_DIR).mkdir()
            atomic_save_safetensors(tmp / RESUME_DIR / "optimizer.safetensors", opt_t)
            atomic_save_safetensors(tmp / RESUME_DIR / "rng.safetensors", rng_t)
            atomic_write_json(tmp / RESUME_DIR / "state.json", {**position, "rng": rng_js, "optimizer": opt_meta})
        adapter.save(tmp / ADAPTER_DIR)
        lora = None
        if cfg.unet == "lora":
            from peft.utils import get_peft_model_state_dict

            atomic_save_safetensors(tmp / LORA_FILE, get_peft_model_state_dict(gen.unet))
            lora = {"rank": cfg.lora_rank, "alpha": cfg.lora_alpha, "ff": cfg.lora_ff}
        elif cfg.unet == "cross_attn":
            atomic_save_safetensors(tmp / CROSS_ATTN_FILE,
                                    {k: v.detach() for k, v in cross_attn_parameters(gen.unet).items()})
        if router is not None:
            router.save(tmp / ROUTER_DIR)
        if prior is not None:
            prior.save(tmp / PRIOR_DIR)
        if encoder is not None:
            encoder.save(tmp / ENCODER_DIR, overwrite=False)
        if enc_blurry is None:
            sel = np.random.default_rng(0).permutation(len(rows))[:4000]
            BlurryRidge(cfg.blurry_alpha).fit(emb[sel], take_images(images, images_of_rows[sel])).save(
                tmp / BLURRY_FILE)
        atomic_write_json(tmp / DECODER_FILE, {
            "schema": 1, "generator": gen.path, "generator_kind": gen.kind,
            "input_shape": list(adapter.config.input_shape),
            "adapter": "trained" if any(p.requires_grad for p in adapter.parameters()) else "kept",
            "embedder": info.get("embedder"), "target": info.get("target"), "unet": cfg.unet, "lora": lora,
            "ip_adapter": gen.info.get("ip_adapter") if gen.image_embed_dim else None,
            "router": router is not None, "prior": prior is not None, "joint_encoder": encoder is not None,
            "config": cfg.to_dict(),
            "steps": step, "complete": bool(position is None or position["step"] >= position["total"]),
            "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    return out_dir


def read_resume_state(decoder_dir: Path) -> tuple[dict, dict]:
    """(decoder.json, resume/state.json) of an interrupted fine-tuning; ``CheckpointError`` naming what is missing."""
    for name in (DECODER_FILE, *(f"{RESUME_DIR}/{f}" for f in RESUME_FILES)):
        if not (decoder_dir / name).is_file():
            raise CheckpointError(f"{decoder_dir}: nothing to resume: missing {name} (run 'neurolens finetune' "
                                  "without --resume)")
    try:
        meta = read_object(decoder_dir / DECODER_FILE)
        state = read_object(decoder_dir / RESUME_DIR / "state.json")
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{decoder_dir}: damaged fine-tuning state ({e})") from None
    field(meta, "config", dict, decoder_dir / DECODER_FILE, error=CheckpointError)
    sp = decoder_dir / RESUME_DIR / "state.json"
    for key in ("step", "epoch", "batch"):
        if field(state, key, int, sp, error=CheckpointError) < 0:
            raise CheckpointError(f"{sp}: key '{key}': expected an integer >= 0, found {state[key]}")
    field(state, "order", (list, type(None)), sp, default=None, error=CheckpointError)
    field(state, "optimizer", (dict, type(None)), sp, default=None, error=CheckpointError)
    field(state, "rng", dict, sp, error=CheckpointError)
    return meta, state


def restore_training_state(decoder_dir: Path, state: dict, *, adapter, router, unet, unet_mode: str, encoder,
                           optimizer, rng) -> None:
    """Load the trained weights, optimizer and RNG states saved by ``save_decoder`` into the freshly built parts."""
    import torch
    from safetensors.torch import load_file

    from engine.recon.conditioning import ConditioningAdapter
    from engine.recon.timestep_router import TimestepRouter
    from engine.train.checkpoint import restore_rng, unflatten_optimizer_state

    adapter.load_state_dict(ConditioningAdapter.load(decoder_dir / ADAPTER_DIR).state_dict())
    if router is not None:
        router.load_state_dict(TimestepRouter.load(decoder_dir / ROUTER_DIR).state_dict())
    if unet_mode == "lora":
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(unet, load_file(str(decoder_dir / LORA_FILE)))
    elif unet_mode == "cross_attn":
        own = cross_attn_parameters(unet)
        with torch.no_grad():
            for k, v in load_file(str(decoder_dir / CROSS_ATTN_FILE)).items():
                own[k].copy_(v)
    if encoder is not None:
        from engine.models.registry import load_encoder_folder

        encoder.load_state_dict(load_encoder_folder(decoder_dir / ENCODER_DIR).state_dict())
    try:
        optimizer.load_state_dict(unflatten_optimizer_state(
            load_file(str(decoder_dir / RESUME_DIR / "optimizer.safetensors")), state["optimizer"]))
    except (ValueError, KeyError) as e:  # e.g. a state saved when other parameters trained (an older NeuroLens)
        raise CheckpointError(f"{decoder_dir / RESUME_DIR}: the saved optimizer state does not fit the parameters "
                              f"this fine-tuning trains ({e}); start it again: 'neurolens finetune' without --resume, "
                              "with --overwrite") from None
    restore_rng(state["rng"], load_file(str(decoder_dir / RESUME_DIR / "rng.safetensors")), rng)


def take_images(images, index: np.ndarray) -> np.ndarray:
    """``images[index]`` for any index order (lazy arrays are read once per distinct image, in ascending order)."""
    uniq, inv = np.unique(np.asarray(index, np.int64), return_inverse=True)
    return np.asarray(images[uniq])[inv]
