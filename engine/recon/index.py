"""The reconstruction folder's index: what the metrics and the GUI read.

RECON_INDEX_SCHEMA
==================

A reconstruction folder holds PNGs, ``index.json`` and ``embeddings.npz``; every path in ``index.json`` is relative to
the folder::

    {"schema": "neurolens-recon/1",
     "subject": "/path/to/subject",            # the subject the trials come from
     "run": "/path/to/run",                    # the encoder run
     "split": "test",
     "method": "demo-mlp + demo generator",    # a label for tables and plots
     "settings": {"generator": "demo" | "/path/to/sd15",
                  "guidance": 3.0, "steps": 25, "sampler": "ddim" | "dpmpp", "seed": 0,
                  "samples": 4,                 # samples per image
                  "repeat_mode": "average_embeddings" | "average_voxels",
                  "img2img_strength": null | 0.8,
                  "image_size": 64},            # pixels per side of the generated images
     "embedder": "demo" | "/path/to/clip",     # the image embedder of the run's targets
     "items": [{"image_index": 12,             # row in the subject's images
                "trials": [2000, 2001, 2002],   # the trial rows (repeats) the prediction combines
                "category": "cat" | null,
                "ground_truth": "gt/img-00012.png",           # the seen image, at its original size
                "blurry": "blurry/img-00012.png" | null,      # the low-level image, when the encoder has one
                "samples": ["samples/img-00012-s0.png", ...]}]}  # generated, image_size × image_size

``embeddings.npz`` (``np.load(..., allow_pickle=False)``): ``image_index`` int64 (n,), ``brain`` float32
(n, *target_shape) = the predicted embeddings the samples were conditioned on, ``target`` float32 (n, *target_shape)
= the true embeddings of the seen images; rows in the order of ``items``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from engine.errors import DataError

SCHEMA = "neurolens-recon/1"
INDEX_FILE = "index.json"
EMBEDDINGS_FILE = "embeddings.npz"
RECON_INDEX_SCHEMA = __doc__


@dataclass
class ReconItem:
    """One reconstructed image: see ``RECON_INDEX_SCHEMA``."""

    image_index: int
    trials: list[int]
    category: str | None
    ground_truth: str
    blurry: str | None
    samples: list[str] = field(default_factory=list)


@dataclass
class ReconIndex:
    """The content of ``index.json``."""

    subject: str
    run: str
    split: str
    method: str
    settings: dict
    embedder: str | None
    items: list[ReconItem]
    schema: str = SCHEMA

    def to_dict(self) -> dict:
        d = asdict(self)
        return {"schema": d.pop("schema"), **d}

    def save(self, folder: str | Path) -> Path:
        from engine.atomic import atomic_write_json

        return atomic_write_json(Path(folder) / INDEX_FILE, self.to_dict())


def gt_name(image_index: int) -> str:
    return f"gt/img-{image_index:05d}.png"


def blurry_name(image_index: int) -> str:
    return f"blurry/img-{image_index:05d}.png"


def sample_name(image_index: int, k: int) -> str:
    return f"samples/img-{image_index:05d}-s{k}.png"


def read_index(folder: str | Path) -> ReconIndex:
    """Read and check ``index.json`` of a reconstruction folder."""
    path = Path(folder) / INDEX_FILE
    if not path.is_file():
        raise DataError(folder, "not a reconstruction folder", key=INDEX_FILE, expected="index.json", found="none")
    from engine.jsonfile import field, read_object

    d = read_object(path, DataError)
    for key, types in (("subject", (str, type(None))), ("run", (str, type(None))), ("split", str), ("method", str),
                       ("settings", dict), ("items", list)):
        field(d, key, types, path, error=DataError)
    if d.get("schema") != SCHEMA:
        raise DataError(path, "unknown index schema", key="schema", expected=SCHEMA, found=d.get("schema"))
    try:
        items = [ReconItem(**it) for it in d["items"]]
        return ReconIndex(subject=d["subject"], run=d["run"], split=d["split"], method=d["method"],
                          settings=d["settings"], embedder=d.get("embedder"), items=items)
    except (KeyError, TypeError) as e:
        raise DataError(path, f"missing or unexpected field ({e})", key="items") from None


def save_embeddings(folder: str | Path, image_index: np.ndarray, brain: np.ndarray, target: np.ndarray) -> Path:
    """Write ``embeddings.npz`` atomically (no pickles)."""
    import io

    from engine.atomic import atomic_write_bytes

    buf = io.BytesIO()
    np.savez(buf, image_index=np.asarray(image_index, np.int64), brain=np.asarray(brain, np.float32),
             target=np.asarray(target, np.float32))
    return atomic_write_bytes(Path(folder) / EMBEDDINGS_FILE, buf.getvalue())


def load_embeddings(folder: str | Path) -> dict[str, np.ndarray]:
    with np.load(Path(folder) / EMBEDDINGS_FILE, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}
