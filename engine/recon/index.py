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
     "settings": {"generator": "demo" | "/path/to/sd15",   # the generator used
                  "guidance": 3.0, "steps": 25, "sampler": "ddim" | "dpmpp", "seed": 0,
                  "samples": 4,                 # samples per image
                  "repeat_mode": "average_embeddings" | "average_voxels",
                  "img2img_strength": null | 0.8,
                  ...,                          # every other field of ReconstructConfig.to_dict()
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

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.errors import DataError

SCHEMA = "neurolens-recon/1"
INDEX_FILE = "index.json"
EMBEDDINGS_FILE = "embeddings.npz"
RECON_INDEX_SCHEMA = __doc__


@dataclass(frozen=True)
class ReconItem:
    """One reconstructed image: see ``RECON_INDEX_SCHEMA``. Lists given by a writer are kept as tuples."""

    image_index: int
    trials: tuple[int, ...]
    category: str | None
    ground_truth: str
    blurry: str | None
    samples: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_index", int(self.image_index))
        object.__setattr__(self, "trials", tuple(int(t) for t in self.trials))
        object.__setattr__(self, "samples", tuple(str(s) for s in self.samples))

    def to_dict(self) -> dict:
        return {"image_index": self.image_index, "trials": list(self.trials), "category": self.category,
                "ground_truth": self.ground_truth, "blurry": self.blurry, "samples": list(self.samples)}


@dataclass(frozen=True)
class ReconIndex:
    """The content of ``index.json``: built by the reconstruction jobs and ``save``d, or ``read_index``'d.

    ``path`` is the folder it was read from (``None`` for one being written); it is not part of the file.
    """

    subject: str | None
    run: str | None
    split: str
    method: str
    settings: dict
    embedder: str | None
    items: tuple[ReconItem, ...]
    schema: str = SCHEMA
    path: Path | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "items", tuple(self.items))
        object.__setattr__(self, "settings", dict(self.settings or {}))

    @property
    def k(self) -> int:
        """Samples per image."""
        return len(self.items[0].samples) if self.items else 0

    @property
    def label(self) -> str:
        """The method and its main settings, for table rows: ``"m [gen demo, cfg 3.0, steps 25, seed 0]"``."""
        s = self.settings
        keys = [("generator", "gen"), ("guidance", "cfg"), ("steps", "steps"), ("sampler", "sampler"),
                ("img2img_strength", "img2img"), ("seed", "seed")]
        extra = ", ".join(f"{short} {s[k]}" for k, short in keys if s.get(k) is not None)
        return f"{self.method} [{extra}]" if extra else self.method

    def replace(self, **changes) -> "ReconIndex":
        """A copy with ``changes`` (e.g. ``items=``, ``settings=``), checked like a new index."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return {"schema": self.schema, "subject": self.subject, "run": self.run, "split": self.split,
                "method": self.method, "settings": self.settings, "embedder": self.embedder,
                "items": [it.to_dict() for it in self.items]}

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
    """Read and check ``index.json`` of a reconstruction folder; ``DataError`` naming the key on any problem.

    Every item must have the same number (>= 1) of samples, and a blurry image either every item or none. ``subject``
    and ``run`` written relative to the folder are resolved against it.
    """
    folder = Path(folder)
    f = folder / INDEX_FILE
    if not f.is_file():
        raise DataError(folder, "not a reconstruction folder", key=INDEX_FILE,
                        expected="index.json written by neurolens reconstruct", found="no index.json")
    from engine.jsonfile import field as typed_field
    from engine.jsonfile import read_object

    d = read_object(f, DataError)
    if d.get("schema") != SCHEMA:
        raise DataError(f, "unknown index schema", key="schema", expected=repr(SCHEMA),
                        found=repr(d.get("schema"))[:60])
    for key, types in (("split", str), ("method", str), ("settings", (dict, type(None))), ("items", list)):
        typed_field(d, key, types, f, error=DataError)
    for key in ("subject", "run", "embedder"):  # optional: a folder may name no subject or run
        typed_field(d, key, (str, type(None)), f, default=None, error=DataError)
    items = tuple(_read_item(f, n, it) for n, it in enumerate(d["items"]))
    ks = {len(it.samples) for it in items}
    if len(ks) > 1 or 0 in ks:
        raise DataError(f, key="items[].samples", expected="the same number (>= 1) of samples for every item",
                        found=f"sample counts {sorted(ks)}")
    if len({it.blurry is None for it in items}) > 1:
        raise DataError(f, key="items[].blurry", expected="a blurry image for every item or for none",
                        found="some items with and some without")

    def resolve(p):  # paths in the index may be relative to the reconstruction folder
        if p is None or Path(p).is_absolute() or not (folder / p).exists():
            return p
        return str(folder / p)

    return ReconIndex(subject=resolve(d.get("subject")), run=resolve(d.get("run")), split=d["split"],
                      method=d["method"], settings=d["settings"] or {}, embedder=d.get("embedder"), items=items,
                      path=folder)


def _read_item(f: Path, n: int, it) -> ReconItem:
    try:
        if not isinstance(it, dict):
            raise TypeError(f"an item is a {type(it).__name__}")
        for key in ("category", "blurry"):
            if not isinstance(it.get(key), (str, type(None))):
                raise TypeError(f"{key} is a {type(it[key]).__name__}")
        if isinstance(it["trials"], (str, dict)) or isinstance(it["samples"], (str, dict)):
            raise TypeError("trials and samples are lists")
        return ReconItem(image_index=int(it["image_index"]), trials=it["trials"], category=it.get("category"),
                         ground_truth=str(it["ground_truth"]), blurry=it.get("blurry"), samples=it["samples"])
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f, key=f"items[{n}]", expected="image_index, trials, ground_truth, samples",
                        found=f"{type(exc).__name__}: {exc}") from exc


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
