"""Typed errors of the engine.

Every error a user can cause (bad file, bad config, incomplete model folder) is a ``NeuroLensError`` whose message
alone says what is wrong: the file, the key, what was expected and what was found. The CLI prints that one line and
exits with status 2; the GUI shows it in a dialog with the traceback behind "Details". Subclasses also derive from the
matching built-in (``ValueError``, ``OSError``) so generic ``except`` clauses keep working.
"""

from __future__ import annotations

from pathlib import Path


class NeuroLensError(Exception):
    """Base class of every error the engine raises on purpose."""

    exit_code = 2


class DataError(NeuroLensError, ValueError):
    """Input data that cannot be read as asked: names the file, the key, what was expected and what was found.

    Parameters
    ----------
    path : str or Path
        The file or folder at fault.
    problem : str
        One sentence on what is wrong, used when no expected/found pair fits.
    key : str, optional
        The dataset, array key, column or field inside the file.
    expected, found : str, optional
        What the reader needed and what it saw, e.g. ``"2-D float array"`` and ``"1-D int64 array (750,)"``.
    """

    def __init__(self, path, problem: str = "", *, key: str | None = None, expected=None, found=None):
        self.path = str(path)
        self.key = key
        self.expected = expected
        self.found = found
        self.problem = problem
        parts = [self.path]
        if key is not None:
            parts.append(f"key '{key}'")
        head = ": ".join(parts)
        detail = problem
        if expected is not None or found is not None:
            ef = f"expected {expected}, found {found}"
            detail = f"{problem} ({ef})" if problem else ef
        super().__init__(f"{head}: {detail}")


class SubjectFormatError(DataError):
    """A subject folder or dataset file that does not follow its format."""


_NOTHING = object()  # "found" not given (None is a value a config can hold)


class ConfigError(NeuroLensError, ValueError):
    """A run or mapping configuration with an unknown key, a wrong type or an invalid value.

    The message is one line, ``"SOURCE: key 'KEY': PROBLEM (expected EXPECTED, found FOUND)"``; the parts stay on
    the error so a form can mark the field.

    Parameters
    ----------
    problem : str
        One sentence on what is wrong; the whole message when nothing else is given.
    key : str, optional
        Dotted path of the field in the whole config, e.g. ``"optim.lr"`` or ``"model.params.hidden"``.
    source : str or Path, optional
        The file the config was read from; ``owner`` (the config class, e.g. ``"TrainConfig"``) names it otherwise.
    expected, found : optional
        What the field needs, and the value that came in (shown with ``repr``, shortened).
    """

    def __init__(self, problem: str = "", *, key: str | None = None, source=None, expected=None, found=_NOTHING,
                 owner: str | None = None):
        self.problem = problem
        self.key = key
        self.source = None if source is None else str(source)
        self.expected = expected
        self.found = None if found is _NOTHING else found
        self._has_found = found is not _NOTHING
        self.owner = owner
        super().__init__(self._message())

    def _message(self) -> str:
        head = [p for p in (self.source or self.owner, None if self.key is None else f"key '{self.key}'") if p]
        detail = self.problem
        if self.expected is not None or self._has_found:
            ef = ", ".join(p for p in (None if self.expected is None else f"expected {self.expected}",
                                       f"found {_short_repr(self.found)}" if self._has_found else None) if p)
            detail = f"{detail} ({ef})" if detail else ef
        return ": ".join([*head, detail] if detail else head).replace("\n", " ")

    def located(self, *, key_prefix: str = "", source=None, owner: str | None = None) -> "ConfigError":
        """The same error seen from an enclosing section (``key_prefix``, ``owner``) or file (``source``)."""
        key = self.key
        if key_prefix:
            key = f"{key_prefix}.{key}" if key else key_prefix
        err = ConfigError(self.problem, key=key, source=source if source is not None else self.source,
                          expected=self.expected, found=self.found if self._has_found else _NOTHING,
                          owner=owner or self.owner)
        return err


def _short_repr(value, limit: int = 100) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class CheckpointError(NeuroLensError, OSError):
    """A checkpoint or model folder that is missing, incomplete or does not match the model."""


class ModelFolderError(NeuroLensError, OSError):
    """A local model folder (CLIP, Stable Diffusion, SDXL) that is incomplete: names the missing part."""

    def __init__(self, path, missing: str, hint: str = ""):
        self.path = str(path)
        self.missing = missing
        msg = f"{path}: incomplete model folder: missing {missing}"
        super().__init__(msg + (f" ({hint})" if hint else ""))


class OutputError(NeuroLensError, OSError):
    """An output that cannot be written (disk full, read-only, no permission) or must not be replaced (it is not the
    same kind of folder, or it holds the input). Names the folder and, where known, the space needed."""


class OutputExistsError(OutputError, FileExistsError):
    """The output already exists and replacing it was not asked for."""


class DeviceError(NeuroLensError, RuntimeError):
    """The chosen device cannot run the job (not present, or out of memory): says what to change."""


class Cancelled(NeuroLensError):
    """A job stopped because its cancel token was set. The last good checkpoint is kept."""

    exit_code = 3

    def __init__(self, message: str = "cancelled", checkpoint: str | Path | None = None):
        self.checkpoint = None if checkpoint is None else str(checkpoint)
        super().__init__(message)
