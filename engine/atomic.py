"""Atomic writes: nothing the user already saved is lost if a write is interrupted, fails or finds the disk full.

Files: write to a temporary file in the same folder, flush and fsync, ``os.replace`` onto the target, fsync the folder.
Folders (a subject, a model, a reconstruction): build everything in a hidden sibling folder, then rename it into place;
a half-written folder never carries the final name, so it can never later look valid. The hidden folder's name records
the writer's host and process id, so the next write to the same place removes the leftovers of a killed writer.

Every write turns the operating system's refusals (disk full, read-only file system, no permission) into one
``OutputError`` line naming the folder (and the space needed, where known). ``check_replaceable`` decides whether an
existing output may be replaced: only with an explicit overwrite, only a folder of the same kind, never the input.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Iterator

from engine.errors import NeuroLensError, OutputError, OutputExistsError

_REFUSALS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EFBIG: "file too large for the file system",
    errno.ELOOP: "too many levels of symbolic links",
}


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"


def output_error(e: OSError, folder, need: int | None = None) -> OutputError:
    """One line for an OS refusal while writing into ``folder``."""
    why = _REFUSALS.get(e.errno) or (e.strerror or type(e).__name__).lower()
    msg = f"{folder}: cannot write: {why}"
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        free = free_bytes(folder)
        if need:
            msg += f" (needs about {human_bytes(need)}" + (f", {human_bytes(free)} free)" if free is not None else ")")
        elif free is not None:
            msg += f" ({human_bytes(free)} free)"
    return OutputError(msg)


@contextlib.contextmanager
def output_errors(folder, need: int | None = None) -> Iterator[None]:
    """Turn an ``OSError`` raised while writing into ``folder`` into ``OutputError`` naming the folder."""
    try:
        yield
    except NeuroLensError:
        raise
    except OSError as e:
        if e.errno in _REFUSALS:
            raise output_error(e, folder, need) from e
        raise


def free_bytes(folder) -> int | None:
    """Free bytes on the file system holding ``folder`` (or its nearest existing parent); None if unknown."""
    p = Path(folder)
    for q in (p, *p.parents):
        try:
            return shutil.disk_usage(q).free
        except OSError:
            continue
    return None


def ensure_free_space(folder, need: int, what: str = "the output") -> None:
    """Refuse, before writing, a read-only ``folder`` or one where ``need`` bytes (plus 1 % and 64 KB of slack, for
    the small files) will not fit."""
    with contextlib.suppress(OSError, AttributeError):
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            raise OutputError(f"{folder}: cannot write: {_REFUSALS[errno.EROFS]}")
    free = free_bytes(folder)
    if free is not None and need + need // 100 + (64 << 10) > free:
        raise OutputError(f"{folder}: not enough free space for {what}: needs about {human_bytes(need)}, "
                          f"{human_bytes(free)} free")


def fsync_dir(path: str | os.PathLike) -> None:
    try:
        fd = os.open(os.fspath(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    path = Path(path)
    with output_errors(path.parent, len(data)):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj, *, indent: int = 2) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=True, default=_default) + "\n")


def _default(o):
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def atomic_save_safetensors(path: str | os.PathLike, tensors: dict, metadata: dict[str, str] | None = None) -> Path:
    """Save a dict of torch tensors as safetensors, atomically (tensors are made contiguous first)."""
    from safetensors.torch import save

    data = save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata=metadata)
    return atomic_write_bytes(path, data)


# --- folders -----------------------------------------------------------------------------------------------------------
def _writer_tag() -> str:
    host = socket.gethostname().replace(os.sep, "_") or "localhost"
    return f"{host}.{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def _dead_writer(name: str, target_name: str, suffix: str) -> bool:
    """Whether hidden folder ``name`` (``.TARGET.HOST.PID.XXXX<suffix>``) was left by a process that is gone."""
    head = f".{target_name}."
    if not (name.startswith(head) and name.endswith(suffix)):
        return False
    parts = name[len(head): -len(suffix)].rsplit(".", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return False
    host, pid = parts[0], int(parts[1])
    return host == _writer_tag().rsplit(".", 1)[0] and pid != os.getpid() and not _pid_alive(pid)


def clean_stale_partials(target: str | os.PathLike) -> list[Path]:
    """Remove the hidden folders that killed writers of ``target`` left beside it; return what was removed.

    A ``.partial`` folder is an unfinished build and is deleted. A ``.old`` folder is the previous content, moved
    aside just before the new one took its place: if the writer died between the two renames, it is put back.
    """
    target = Path(target)
    parent = target.parent
    removed: list[Path] = []
    try:
        entries = list(parent.iterdir()) if parent.is_dir() else []
    except OSError:
        return removed
    for p in entries:
        if _dead_writer(p.name, target.name, ".partial"):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
        elif _dead_writer(p.name, target.name, ".old"):
            if not target.exists():
                with contextlib.suppress(OSError):
                    os.replace(p, target)
                    continue
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike, *, overwrite: bool = False, need: int | None = None) -> Iterator[Path]:
    """Yield a temporary folder to fill; on success it is renamed to ``target``.

    On any exception the temporary folder is removed and ``target`` is untouched. With ``overwrite`` an existing
    ``target`` is replaced only after the new folder is complete. Leftovers of killed writers are removed first.
    ``need`` (bytes, when known) is named in the error if the disk fills up.
    """
    target = Path(target)
    clean_stale_partials(target)  # first: it may put back a folder a killed writer had moved aside
    if target.exists() and not overwrite:
        raise OutputExistsError(f"{target}: already exists (use overwrite to replace it)")
    with output_errors(target.parent):
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.{_writer_tag()}.", suffix=".partial", dir=target.parent))
    try:
        with output_errors(target.parent, need):
            yield tmp
            if target.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{target.name}.{_writer_tag()}.", suffix=".old",
                                            dir=target.parent))
                os.replace(target, old)  # onto the empty folder just made (a folder may replace an empty one)
                os.replace(tmp, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, target)
        fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_replaceable(target: str | os.PathLike, *, marker: str, kind: str, overwrite: bool,
                      sources=(), protect=(), flag: str = "--overwrite") -> None:
    """Refuse to write ``target`` unless that loses nothing the user did not ask to replace.

    A new folder is always fine. An existing one needs ``overwrite``, must be a folder of the same ``kind`` (it holds
    ``marker``, e.g. ``subject.json``) and must neither be, contain nor lie inside any of ``sources`` (the input);
    it must neither be nor contain any of ``protect`` (folders an output may live in, such as the run folder).
    """
    target = Path(target)
    clean_stale_partials(target)
    try:
        real = target.resolve()
        exists = target.exists() or target.is_symlink()
    except (OSError, RuntimeError) as e:  # a symlink loop
        raise OutputError(f"{target}: cannot use as output ({getattr(e, 'strerror', None) or 'symbolic link loop'})") from None
    for s in [*sources, *protect]:
        if s is None:
            continue
        try:
            src = Path(s).resolve()
        except (OSError, RuntimeError):
            continue
        if real == src or src.is_relative_to(real):
            raise OutputError(f"{target}: the output would replace the input {s}; choose another output folder")
        if exists and real.is_relative_to(src) and s not in protect:
            raise OutputError(f"{target}: the output lies inside the input {s}; choose another output folder")
    if not exists:
        return
    if not overwrite:
        raise OutputExistsError(f"{target}: already exists (pass {flag} to replace it)")
    if not target.is_dir() or target.is_symlink():
        raise OutputError(f"{target}: not a {kind} folder (expected a folder with {marker}); refusing to replace it")
    if not (target / marker).is_file():
        raise OutputError(f"{target}: not a {kind} folder (no {marker}); refusing to replace it")
