"""The mapping file: how a plain-array file (``.npz``, ``.mat`` v5/v7.3, ``.h5``) holds a subject.

A small YAML or JSON document (schema in ``docs/formats.md``)::

    version: 1
    file: sub01.mat                 # optional: the arrays file, relative to the mapping file
    name: sub01                     # optional subject name
    memory_order: auto              # auto | C | F: F reverses every array's axes (MATLAB column-major in HDF5)
    betas:    {train: fmri_train, test: fmri_test}      # or {all: fmri, split: is_test}
    images:   {train: stim_train, test: stim_test, layout: NHWC, range: auto}   # or {all: stim, ...}; file: other.npz
              # flattened rows (N, H*W*C): shape: [H, W] or [H, W, C], order: C | F (F = MATLAB column-major)
    prior_images: unlabeled/      # optional unlabeled images for the generator: a folder of PNGs, or
                                  # {file: prior.mat, all: X, shape: [28, 28], order: F, layout:, range:}
    trials:   {train_image_index: lab_train, test_image_index: lab_test, index_base: 0, session: sess, run: run}
    rois:     {V1: mask_v1, V2: mask_v2}
    labels: cat_per_image           # optional integer category per image
    categories: [dog, cat]          # optional names of the label values
    noise_ceiling: nc               # optional per-voxel noise ceiling in [0, 1]

Unknown keys, wrong types and impossible combinations raise ``ConfigError`` naming the mapping file and the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from engine import jsonfile
from engine.errors import ConfigError
from engine.safe_yaml import safe_load, short_repr

LAYOUTS_HELP = "a permutation of N, H, W, C such as NHWC, NCHW, HWCN (MATLAB), or NHW for grey images"
RANGES = ("auto", "0-1", "0-255", "-1-1")
ORDERS = ("auto", "C", "F")
PIXEL_ORDERS = ("C", "F")  # how one flattened image row unrolls: row-major (numpy) or column-major (MATLAB)


@dataclass(frozen=True)
class MappingConfig:
    """Parsed mapping file. Keys name arrays in the data file (HDF5 paths such as ``group/dset`` allowed)."""

    source: Path  # the mapping file
    file: Path | None = None
    name: str | None = None
    memory_order: str = "auto"
    betas_train: str | None = None
    betas_test: str | None = None
    betas_all: str | None = None
    split: str | None = None
    images_file: Path | None = None
    images_train: str | None = None
    images_test: str | None = None
    images_all: str | None = None
    layout: str = "NHWC"
    value_range: str = "auto"
    train_image_index: str | None = None
    test_image_index: str | None = None
    image_index: str | None = None
    index_base: int = 0
    session: str | None = None
    run: str | None = None
    rois: dict[str, str] = field(default_factory=dict)
    labels: str | None = None
    categories: list[str] = field(default_factory=list)
    noise_ceiling: str | None = None
    image_shape: tuple[int, ...] | None = None  # (H, W) or (H, W, C) when the image arrays hold flattened rows
    pixel_order: str = "C"
    prior: "PriorImagesConfig | None" = None


@dataclass(frozen=True)
class PriorImagesConfig:
    """``prior_images:``: unlabeled images carried with the subject (for a generator trained on the user's images).

    Either ``folder`` (PNG files, sorted by name) or an array ``key`` in ``file`` (default: the mapping's data file)
    read with the same ``shape``/``order``/``layout``/``range`` keys as ``images``.
    """

    folder: Path | None = None
    file: Path | None = None
    key: str | None = None
    layout: str = "NHWC"
    value_range: str = "auto"
    image_shape: tuple[int, ...] | None = None
    pixel_order: str = "C"


_TOP = {"version", "file", "name", "memory_order", "betas", "images", "trials", "rois", "labels", "categories",
        "noise_ceiling", "prior_images"}
_SECTIONS = {
    "betas": {"train", "test", "all", "split"},
    "images": {"file", "train", "test", "all", "layout", "range", "shape", "order"},
    "trials": {"train_image_index", "test_image_index", "image_index", "index_base", "session", "run"},
}


def _err(src: Path, key: str, expected: str, found) -> ConfigError:
    f = short_repr(found)  # never the whole value: an alias-expanded one can be huge
    return ConfigError(f"expected {expected}, found {f}", key=str(key), source=src)


def _str(d: dict, k: str, src: Path, where: str) -> str | None:
    v = d.get(k)
    if v is None:
        return None
    if not isinstance(v, str) or not v.strip():
        raise _err(src, f"{where}{k}", "an array name (non-empty string)", v)
    return v


def parse_mapping(d, source: Path) -> MappingConfig:
    """Validate a mapping already parsed from YAML/JSON."""
    source = Path(source)
    if not isinstance(d, dict):
        raise _err(source, "<top level>", "a mapping (key: value pairs)", type(d).__name__)
    for k in d:
        if not isinstance(k, str) or k not in _TOP:
            raise _err(source, str(k), f"one of {sorted(_TOP)}", "unknown key")
    version = d.get("version", 1)
    if version != 1 or isinstance(version, bool):
        raise _err(source, "version", "1", version)
    sec = {}
    for s, allowed in _SECTIONS.items():
        v = d.get(s, {})
        if v is None:
            v = {}
        if not isinstance(v, dict):
            raise _err(source, s, "a mapping", type(v).__name__)
        for k in v:
            if not isinstance(k, str) or k not in allowed:
                raise _err(source, f"{s}.{k}", f"one of {sorted(allowed)}", "unknown key")
        sec[s] = v
    b, im, tr = sec["betas"], sec["images"], sec["trials"]
    kw: dict = {"source": source}
    kw["betas_train"], kw["betas_test"] = _str(b, "train", source, "betas."), _str(b, "test", source, "betas.")
    kw["betas_all"], kw["split"] = _str(b, "all", source, "betas."), _str(b, "split", source, "betas.")
    if kw["betas_all"] and (kw["betas_train"] or kw["betas_test"]):
        raise _err(source, "betas", "either all (+ split) or train (+ test)", sorted(b))
    if not kw["betas_all"] and not kw["betas_train"]:
        raise _err(source, "betas.train", "the array holding training betas (or betas.all)", None)
    if kw["split"] and not kw["betas_all"]:
        raise _err(source, "betas.split", "only with betas.all", kw["split"])
    kw["images_train"], kw["images_test"] = _str(im, "train", source, "images."), _str(im, "test", source, "images.")
    kw["images_all"] = _str(im, "all", source, "images.")
    if kw["images_all"] and (kw["images_train"] or kw["images_test"]):
        raise _err(source, "images", "either all or train (+ test)", sorted(im))
    if not kw["images_all"] and not kw["images_train"]:
        raise _err(source, "images.train", "the array holding the images (or images.all)", None)
    f = _str(im, "file", source, "images.")
    kw["images_file"] = None if f is None else Path(f)
    layout = im.get("layout", "NHWC")
    if not isinstance(layout, str) or sorted(layout.upper()) not in (sorted("NHWC"), sorted("NHW")):
        raise _err(source, "images.layout", LAYOUTS_HELP, layout)
    kw["layout"] = layout.upper()
    rng = im.get("range", "auto")
    if rng not in RANGES:
        raise _err(source, "images.range", f"one of {list(RANGES)}", rng)
    kw["value_range"] = rng
    kw["image_shape"], kw["pixel_order"] = _flat_shape(im, source, "images.")
    kw["prior"] = _prior(d.get("prior_images"), source)
    for k in ("train_image_index", "test_image_index", "image_index", "session", "run"):
        kw[k] = _str(tr, k, source, "trials.")
    if kw["image_index"] and (kw["train_image_index"] or kw["test_image_index"]):
        raise _err(source, "trials", "either image_index or train_image_index (+ test_image_index)", sorted(tr))
    base = tr.get("index_base", 0)
    if base not in (0, 1) or isinstance(base, bool):
        raise _err(source, "trials.index_base", "0 or 1 (MATLAB indices are 1-based)", base)
    kw["index_base"] = int(base)
    order = d.get("memory_order", "auto")
    if order not in ORDERS:
        raise _err(source, "memory_order", f"one of {list(ORDERS)}", order)
    kw["memory_order"] = order
    fl = _str(d, "file", source, "")
    kw["file"] = None if fl is None else Path(fl)
    nm = d.get("name")
    if nm is not None and not isinstance(nm, str):
        raise _err(source, "name", "a string", nm)
    kw["name"] = nm
    rois = d.get("rois", {}) or {}
    if not isinstance(rois, dict) or not all(isinstance(k, str) and k and isinstance(v, str) and v for k, v in rois.items()):
        raise _err(source, "rois", "a mapping ROI name -> array name", rois)
    kw["rois"] = dict(rois)
    kw["labels"] = _str(d, "labels", source, "")
    cats = d.get("categories", []) or []
    if not isinstance(cats, list) or not all(isinstance(c, str) for c in cats):
        raise _err(source, "categories", "a list of names", cats)
    kw["categories"] = list(cats)
    kw["noise_ceiling"] = _str(d, "noise_ceiling", source, "")
    return MappingConfig(**kw)


def _flat_shape(sec: dict, src: Path, where: str) -> tuple[tuple[int, ...] | None, str]:
    """``shape`` and ``order`` of a section holding flattened image rows."""
    shape = sec.get("shape")
    if shape is not None:
        ok = (isinstance(shape, list) and len(shape) in (2, 3)
              and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in shape)
              and (len(shape) == 2 or shape[2] in (1, 3, 4)))
        if not ok:
            raise _err(src, f"{where}shape", "[H, W] or [H, W, C] of one image (C = 1, 3 or 4)", shape)
        shape = tuple(int(v) for v in shape)
    order = sec.get("order", "C")
    if order not in PIXEL_ORDERS:
        raise _err(src, f"{where}order", "C (row-major, numpy) or F (column-major, MATLAB)", order)
    if shape is None and "order" in sec:
        raise _err(src, f"{where}order", f"only with {where}shape (flattened image rows)", order)
    return shape, order


_PRIOR_KEYS = {"folder", "file", "all", "layout", "range", "shape", "order"}


def _prior(v, src: Path) -> PriorImagesConfig | None:
    if v is None:
        return None
    if isinstance(v, str) and v.strip():
        v = {"folder": v}
    if not isinstance(v, dict):
        raise _err(src, "prior_images", "a folder of PNGs, or {file:, all:, shape:, order:}", v)
    for k in v:
        if not isinstance(k, str) or k not in _PRIOR_KEYS:
            raise _err(src, f"prior_images.{k}", f"one of {sorted(_PRIOR_KEYS)}", "unknown key")
    folder, key = _str(v, "folder", src, "prior_images."), _str(v, "all", src, "prior_images.")
    if (folder is None) == (key is None):
        raise _err(src, "prior_images", "either folder (PNG files) or all (an array name)", sorted(v))
    layout = v.get("layout", "NHWC")
    if not isinstance(layout, str) or sorted(layout.upper()) not in (sorted("NHWC"), sorted("NHW")):
        raise _err(src, "prior_images.layout", LAYOUTS_HELP, layout)
    rng = v.get("range", "auto")
    if rng not in RANGES:
        raise _err(src, "prior_images.range", f"one of {list(RANGES)}", rng)
    shape, order = _flat_shape(v, src, "prior_images.")
    f = _str(v, "file", src, "prior_images.")
    return PriorImagesConfig(folder=None if folder is None else Path(folder), file=None if f is None else Path(f),
                             key=key, layout=layout.upper(), value_range=rng, image_shape=shape, pixel_order=order)


def load_mapping(path: str | Path) -> MappingConfig:
    """Read and validate a YAML (``.yaml``/``.yml``) or JSON mapping file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: mapping file not found")
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM from Windows editors is not part of the document
        d = jsonfile.loads(text) if path.suffix.lower() == ".json" else safe_load(text)
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"{path}: not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'} ({first})") from e
    return parse_mapping(d, path)


def is_mapping_file(path: Path) -> bool:
    """Cheap check used by format detection: a YAML/JSON file (no other source format is one)."""
    path = Path(path)
    return path.is_file() and path.suffix.lower() in (".yaml", ".yml", ".json")
