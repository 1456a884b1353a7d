"""JSON read from disk, bounded and type-checked: every failure is one line naming the file and the key.

``loads`` refuses documents nested deeper than ``MAX_DEPTH`` before parsing (Python's parser would recurse into
them); ``read_object(path)`` reads a file that must hold a JSON object; ``field(d, key, types, path)`` returns one
field of it, checked. The error class is the caller's (``SubjectFormatError``, ``CheckpointError``...), so each kind of
file keeps its own error type.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from engine.errors import DataError

MAX_DEPTH = 100
MAX_BYTES = 256 << 20
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_MISSING = object()
_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false", list: "a list",
               dict: "a JSON object", type(None): "null"}


def nesting_depth(text: str) -> int:
    """Deepest ``[``/``{`` nesting of a JSON text (brackets inside strings ignored)."""
    import numpy as np

    bare = _STRING.sub('""', text).encode("utf-8", "replace")
    b = np.frombuffer(bare, np.uint8)
    step = np.isin(b, (ord("["), ord("{"))).astype(np.int32) - np.isin(b, (ord("]"), ord("}"))).astype(np.int32)
    return int(np.cumsum(step).max()) if step.size else 0


def loads(text: str):
    """``json.loads`` that refuses (``ValueError``) documents nested deeper than ``MAX_DEPTH``."""
    if nesting_depth(text) > MAX_DEPTH:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _fail(error, path, key, expected, found):
    if isinstance(error, type) and issubclass(error, DataError):
        return error(path, key=key, expected=expected, found=found)
    where = f"{path}: key '{key}'" if key else f"{path}"
    return error(f"{where}: expected {expected}, found {found}")


def read_object(path: str | Path, error=DataError) -> dict:
    """The JSON object in ``path``; ``error`` (an exception class) names the file when it is missing, unreadable, too
    large, too deep, not JSON or not an object."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_BYTES:
            raise _fail(error, path, None, f"a JSON file under {MAX_BYTES >> 20} MB",
                        f"{path.stat().st_size >> 20} MB")
        text = path.read_text(encoding="utf-8-sig")
        d = loads(text)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        if isinstance(e, error):
            raise
        kind = "unreadable" if isinstance(e, OSError) else "not valid JSON"
        msg = (e.strerror if isinstance(e, OSError) and e.strerror else str(e)).splitlines()[0][:200]
        raise _fail(error, path, None, "a JSON object", f"{kind} ({msg})") from None
    if not isinstance(d, dict):
        raise _fail(error, path, None, "a JSON object", type(d).__name__)
    return d


def describe_type(types) -> str:
    types = types if isinstance(types, tuple) else (types,)
    return " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in types)


def field(d: dict, key: str, types, path, *, default=_MISSING, error=DataError):
    """``d[key]`` if it has one of ``types`` (``bool`` is never an ``int`` here; an ``int`` is a ``float``)."""
    types = types if isinstance(types, tuple) else (types,)
    if key not in d:
        if default is not _MISSING:
            return default
        raise _fail(error, path, key, describe_type(types), "nothing (missing)")
    v = d[key]
    ok = isinstance(v, types) and not (isinstance(v, bool) and bool not in types)
    if not ok and float in types and isinstance(v, int) and not isinstance(v, bool):
        ok = True
    if not ok:
        from engine.safe_yaml import short_repr

        raise _fail(error, path, key, describe_type(types), f"{type(v).__name__} {short_repr(v, 40)}")
    return v
