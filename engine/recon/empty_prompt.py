"""The empty prompt's text tokens, encoded once by a folder's own text encoder(s): with ``prompt_tokens`` the brain
tokens are appended to them, so the UNet's text pathway keeps seeing what it was trained on."""

from __future__ import annotations

from pathlib import Path

from engine.errors import ModelFolderError
from engine.recon.model_folder import check_part


def encode_empty_prompt(folder: Path, kind: str, context_dim: int):
    """The text tokens ``(1, 77, context_dim)`` (and SDXL pooled ``(1, P)``) of the empty prompt, from the folder's
    own tokenizer(s) and text encoder(s); the encoders are freed afterwards."""
    import torch
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    parts = [("tokenizer", "text_encoder")] + ([("tokenizer_2", "text_encoder_2")] if kind == "sdxl" else [])
    states, pooled = [], None
    for tok_name, enc_name in parts:
        tdir = folder / tok_name
        has_fast = (tdir / "tokenizer.json").is_file()
        if not has_fast and not ((tdir / "vocab.json").is_file() and (tdir / "merges.txt").is_file()):
            raise ModelFolderError(folder, f"{tok_name}/tokenizer.json (or vocab.json + merges.txt)",
                                   "needed for prompt_tokens; turn prompt_tokens off to skip the text encoders")
        check_part(folder, enc_name, ("model.safetensors", "model.fp16.safetensors"))
        tok = CLIPTokenizer.from_pretrained(tdir, local_files_only=True)
        cls = CLIPTextModelWithProjection if enc_name == "text_encoder_2" else CLIPTextModel
        enc = cls.from_pretrained(folder / enc_name, local_files_only=True).eval()
        ids = tok([""], padding="max_length", max_length=tok.model_max_length, truncation=True,
                  return_tensors="pt").input_ids
        with torch.no_grad():
            out = enc(ids, output_hidden_states=True)
        # SDXL reads the penultimate layer; SD-1.5 the last one.
        states.append(out.hidden_states[-2] if kind == "sdxl" else out.last_hidden_state)
        if enc_name == "text_encoder_2":
            pooled = out.text_embeds
        del enc
    tokens = torch.cat(states, dim=-1)
    if tokens.shape[-1] != context_dim:
        raise ModelFolderError(folder, "text encoder(s) matching the UNet",
                               f"text width {tokens.shape[-1]} != unet cross_attention_dim {context_dim}")
    return tokens, pooled
