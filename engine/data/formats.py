"""Format registry: detect what a path holds and read it as a ``Subject``.

Each reader lives in ``engine/data/readers/<name>.py`` and provides ``sniff(path) -> bool`` (cheap: names and headers
only) and ``read(path, **options) -> Subject``. Readers are imported only when used.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from engine.data import native
from engine.data.subject import Subject
from engine.errors import SubjectFormatError

# name -> module; order is the detection order (most specific first).
FORMATS: dict[str, str] = {
    "native": "engine.data.native",
    "nsd": "engine.data.readers.nsd",
    "god": "engine.data.readers.god",
    "bold5000": "engine.data.readers.bold5000",
    "nifti": "engine.data.readers.nifti",
    "arrays": "engine.data.readers.arrays",
}


def _reader(fmt: str):
    if fmt not in FORMATS:
        raise SubjectFormatError(fmt, "unknown format", expected=f"one of {sorted(FORMATS)}", found=repr(fmt))
    return importlib.import_module(FORMATS[fmt])


def detect_format(path: str | Path) -> str:
    """Name of the format of ``path``; ``SubjectFormatError`` naming the path if none recognises it."""
    path = Path(path)
    if not path.exists():
        raise SubjectFormatError(path, "no such file or folder")
    if native.is_native(path):
        return "native"
    for fmt in FORMATS:
        if fmt == "native":
            continue
        try:
            mod = _reader(fmt)
        except ImportError:
            continue
        if mod.sniff(path):
            return fmt
    raise SubjectFormatError(
        path, "format not recognised", expected=f"one of {sorted(FORMATS)} (or pass --format)", found="no reader matched"
    )


def read_subject(path: str | Path, format: str | None = None, **options) -> Subject:
    """Read the file or folder ``path`` as a ``Subject``; ``format`` overrides detection, ``options`` go to the reader.

    ``engine.data.sources.open_subject`` also opens the demo aliases.
    """
    fmt = format or detect_format(path)
    read = native.read_native if fmt == "native" else _reader(fmt).read
    _check_options(read, options, path, fmt)
    return read(Path(path), **options)


def _check_options(read, options: dict, path, fmt: str) -> None:
    """Refuse options the reader does not take (a misspelt ``--option`` must not be silently ignored)."""
    import inspect

    known = sorted(n for n, p in inspect.signature(read).parameters.items() if p.kind == p.KEYWORD_ONLY)
    for key in options:
        if key not in known:
            raise SubjectFormatError(path, f"unknown reader option for the {fmt} format", key=key,
                                     expected=f"one of {known}" if known else "no options", found=repr(key))
