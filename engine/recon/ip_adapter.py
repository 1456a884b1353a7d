"""A plain IP-Adapter (original key format: ``image_proj.*``, ``ip_adapter.*``) loaded into a diffusers UNet, so the
UNet also reads an image embedding through decoupled cross-attention (diffusers' IP-Adapter processors)."""

from __future__ import annotations

from pathlib import Path

from engine.errors import ModelFolderError


IP_ADAPTER_DIR = "ip_adapter"


def find_ip_adapter(folder: Path, spec: str | None) -> Path | None:
    """The IP-Adapter file to load: ``spec`` itself, the folder's only ``ip_adapter/*.safetensors`` for ``"auto"``
    (None when the folder has none), or None."""
    if not spec:
        return None
    if spec != "auto":
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ModelFolderError(path.parent, path.name, "the IP-Adapter weights file given with ip_adapter")
        return path
    found = sorted((folder / IP_ADAPTER_DIR).glob("*.safetensors")) if (folder / IP_ADAPTER_DIR).is_dir() else []
    if len(found) > 1:
        raise ModelFolderError(folder, f"a single {IP_ADAPTER_DIR}/*.safetensors",
                               f"found {[p.name for p in found]}; pass the one to use with ip_adapter")
    return found[0] if found else None


def load_ip_adapter(unet, path: Path) -> int:
    """Load a plain IP-Adapter (original key format) into ``unet``; return its image-embedding length."""
    from safetensors.torch import load_file

    try:
        flat = load_file(str(path))
    except Exception as e:  # safetensors raises its own error types on damaged files
        raise ModelFolderError(path.parent, f"{path.name} readable as safetensors", str(e)[:200]) from None
    parts: dict[str, dict] = {"image_proj": {}, "ip_adapter": {}}
    for key, value in flat.items():
        head, _, rest = key.partition(".")
        if head in parts:
            parts[head][rest] = value
    if "proj.weight" not in parts["image_proj"]:
        raise ModelFolderError(path.parent, f"{path.name} key image_proj.proj.weight",
                               "only the plain IP-Adapter (linear image projection) is supported")
    n_cross = sum(1 for name in unet.attn_processors if not name.endswith("attn1.processor"))
    if len(parts["ip_adapter"]) != 2 * n_cross:
        raise ModelFolderError(path.parent, f"{path.name} with to_k_ip/to_v_ip for {n_cross} cross-attention layers",
                               f"found {len(parts['ip_adapter'])} ip_adapter.* tensors")
    dtype, device = unet.dtype, unet.device
    try:
        unet._load_ip_adapter_weights([parts], low_cpu_mem_usage=False)
    except (KeyError, RuntimeError) as e:
        raise ModelFolderError(path.parent, f"{path.name} matching the UNet", str(e).split(". ")[0][:300]) from None
    unet.to(device=device, dtype=dtype).requires_grad_(False)
    return int(parts["image_proj"]["proj.weight"].shape[-1])
