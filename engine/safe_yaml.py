"""``safe_load``: YAML's safe subset, parsed by libyaml when PyYAML was built with it (about 4× faster than the
pure-Python parser: a run's config is read on the GUI thread whenever the runs list is shown), else by PyYAML's
own parser. The result is the same: both use PyYAML's ``SafeConstructor``."""

from __future__ import annotations

import yaml

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def safe_load(text: str):
    """Like ``yaml.safe_load``: plain Python objects, never arbitrary ones."""
    return yaml.load(text, Loader=_LOADER)  # noqa: S506 - a safe loader (CSafeLoader or SafeLoader)
