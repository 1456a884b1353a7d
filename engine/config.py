"""``Config``: the one base of every configuration dataclass (runs, models, losses, evaluation...).

A config is a dataclass whose class also derives from ``Config``; that one line gives it::

    cfg = TrainConfig.from_dict(yaml_dict)        # typed, checked, nested sections parsed
    cfg.to_dict()                                  # plain JSON/YAML values (tuples → lists)
    cfg.replace(epochs=3)                          # a checked copy
    TrainConfig.from_dict(cfg.to_dict()) == cfg    # always

``from_dict`` reads values the way people write YAML: PyYAML reads ``lr: 1e-3`` (no dot) as the *string*
``"1e-3"``, so a float field accepts a number written as a string, an int field accepts ``"1000"`` (and ``3.0``), a
bool field accepts only true/false or the words yes/no/true/false. Every other mismatch, a missing section and an
unknown key is a ``ConfigError`` that carries the dotted ``key`` (``optim.lr``, ``model.params.hidden``) and, when a
file was read, its ``source``: the GUI marks the field, the CLI prints the one line.

Fields typed as a dataclass (a ``Config`` or not) are nested sections, parsed recursively; ``dict`` fields keep plain
values (``TrainConfig.loss``, checked later against ``LossConfig``); ``tuple[...]`` fields read lists; ``Literal``
fields name the allowed values. Value checks live in the subclass's ``__post_init__`` (raise ``ConfigError`` with
``key``); ``from_dict`` puts the section's prefix and the file in front of them.

This module imports only the standard library and ``engine.errors``: a GUI form and ``engine.metrics`` may use it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal

from engine.errors import ConfigError

_TRUE = ("true", "yes")
_FALSE = ("false", "no")


class Config:
    """Mixin of the config dataclasses: ``from_dict`` / ``to_dict`` / ``replace`` (see the module docstring).

    Works for frozen and mutable dataclasses alike, so adopting it is one line: ``class XConfig(Config):``.
    """

    def to_dict(self) -> dict:
        """Plain JSON/YAML-safe dict: nested sections as dicts, tuples as lists, field order kept."""
        return to_dict(self)

    @classmethod
    def from_dict(cls, d: dict | None, key_prefix: str = "", *, source: str | Path | None = None):
        """Build from a mapping; missing keys take their defaults.

        Parameters
        ----------
        d : dict or None
            ``None`` is an empty mapping (every default).
        key_prefix : str
            Dotted path of this section in the whole config (``"model.params"``), put in front of every error's key.
        source : str or Path, optional
            The file the mapping came from, named by every error.

        Raises
        ------
        ConfigError
            With ``key`` (dotted, prefixed) and ``source``, on an unknown key, a value of the wrong type or a value the
            class's own checks refuse.
        """
        return from_dict(cls, d, key_prefix, source=source)

    def replace(self, **changes):
        """A copy with ``changes`` applied, checked as ``from_dict`` checks a file (values may be sections or dicts)."""
        return from_dict(type(self), {**to_dict(self), **{k: plain(v) for k, v in changes.items()}})


# --- dict → dataclass -------------------------------------------------------------------------------------------------
def from_dict(cls: type, d: Any, key_prefix: str = "", *, source: str | Path | None = None):
    """``cls`` (any dataclass) from a mapping; see ``Config.from_dict``."""
    try:
        return _build(cls, d, key_prefix)
    except ConfigError as e:
        if source is None:
            raise
        raise e.located(source=source) from None


def _build(cls: type, d: Any, prefix: str):
    owner = cls.__name__
    if d is None:
        d = {}
    if not isinstance(d, dict):
        raise ConfigError(key=prefix or None, expected="a mapping of keys", found=d, owner=owner)
    fields = field_types(cls)
    unknown = sorted((k for k in d if k not in fields), key=str)
    if unknown:
        more = f" (also {unknown[1:]})" if len(unknown) > 1 else ""
        raise ConfigError(f"unknown key{more}", key=join_key(prefix, str(unknown[0])),
                          expected=f"one of {sorted(fields)}", owner=owner)
    missing = [k for k in _required(cls) if k not in d]
    if missing:
        raise ConfigError("missing key", key=join_key(prefix, missing[0]), expected=f"a value for {missing}",
                          owner=owner)
    kwargs = {k: coerce(v, fields[k], join_key(prefix, k), owner) for k, v in d.items()}
    try:
        return cls(**kwargs)
    except ConfigError as e:  # the class's own value checks: their keys are relative to the section
        raise e.located(key_prefix=prefix) from None


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """The annotated type of every init field of a dataclass (resolved once per class)."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls.__name__} is not a dataclass")
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


@functools.cache
def _required(cls: type) -> tuple[str, ...]:
    """Fields without a default: a mapping must give them."""
    return tuple(f.name for f in dataclasses.fields(cls) if f.init and f.default is dataclasses.MISSING
                 and f.default_factory is dataclasses.MISSING)


def join_key(prefix: str, key: str) -> str:
    """``"model.params"`` + ``"hidden"`` → ``"model.params.hidden"``."""
    return f"{prefix}.{key}" if prefix else key


def coerce(value: Any, hint: Any, key: str, owner: str | None = None):
    """``value`` (from YAML/JSON) as the annotated type, or ``ConfigError`` naming ``key``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return value if isinstance(value, hint) else _build(hint, value, key)
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(value, hint, args, key, owner)
    if origin is Literal:
        if value not in args or isinstance(value, bool) != any(isinstance(a, bool) for a in args):
            raise ConfigError(key=key, expected=f"one of {list(args)}", found=value, owner=owner)
        return value
    if origin is tuple or hint is tuple:
        return _coerce_tuple(value, args, key, owner)
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(key=key, expected="a mapping", found=value, owner=owner)
        return {str(k): plain(v) for k, v in value.items()}
    if hint in _SCALARS:
        return _SCALARS[hint](value, key, owner)
    return value


def _coerce_union(value, hint, args, key, owner):
    if value is None and type(None) in args:
        return None
    options = [a for a in args if a is not type(None)]
    if len(options) == 1:  # "X | None": X's own error names the key inside a section
        return coerce(value, options[0], key, owner)
    for a in args:
        if a is type(None):
            continue
        try:
            return coerce(value, a, key, owner)
        except ConfigError:
            continue
    raise ConfigError(key=key, expected=_describe(hint), found=value, owner=owner)


def _coerce_tuple(value, args, key, owner):
    if not isinstance(value, (list, tuple)):
        raise ConfigError(key=key, expected="a list", found=value, owner=owner)
    if not args or (len(args) == 2 and args[1] is Ellipsis):
        return tuple(coerce(v, args[0], f"{key}[{i}]", owner) for i, v in enumerate(value)) if args else tuple(value)
    if len(args) != len(value):
        raise ConfigError(key=key, expected=f"a list of {len(args)} values", found=list(value), owner=owner)
    return tuple(coerce(v, a, f"{key}[{i}]", owner) for i, (v, a) in enumerate(zip(value, args)))


def _to_bool(value, key, owner):
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise ConfigError(key=key, expected="true/false", found=value, owner=owner)


def _to_int(value, key, owner):
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(key=key, expected="an integer", found=value, owner=owner)
    return value


def _to_float(value, key, owner):
    if isinstance(value, str):
        # PyYAML (YAML 1.1) reads 1e-3 (no dot) and 1_000.5 as strings; a person wrote a number.
        try:
            number = float(value.strip())
        except ValueError:
            number = math.nan
        if math.isfinite(number):
            return number
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(key=key, expected="a number", found=value, owner=owner)
    return float(value)


def _to_str(value, key, owner):
    if not isinstance(value, str):
        raise ConfigError(key=key, expected="a string", found=value, owner=owner)
    return value


_SCALARS = {bool: _to_bool, int: _to_int, float: _to_float, str: _to_str}


def _describe(hint) -> str:
    return str(hint).replace("typing.", "")


# --- dataclass → dict -------------------------------------------------------------------------------------------------
def to_dict(obj) -> dict:
    """Plain dict of a config dataclass (nested dataclasses as dicts, tuples as lists)."""
    return {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}


def plain(v):
    """A value as plain JSON/YAML data (dataclasses as dicts, tuples as lists, dict keys as strings)."""
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return to_dict(v)
    if isinstance(v, (tuple, list)):
        return [plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): plain(x) for k, x in v.items()}
    return v


# --- value checks -----------------------------------------------------------------------------------------------------
def check(condition: bool, owner: str, key: str, expected: str, found) -> None:
    """Raise ``ConfigError(key=key)`` when ``condition`` is false: ``"OWNER: key 'KEY': expected ..., found ..."``."""
    if not condition:
        raise ConfigError(key=key, expected=expected, found=found, owner=owner)
