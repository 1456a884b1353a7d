"""``demo`` / ``demo:N`` as a subject path: the cached built-in demo subject, created on first use."""

from __future__ import annotations

import pytest

from engine.data.demo.builder import resolve_demo_alias
from engine.data.sources import open_subject
from engine.errors import DataError


def test_demo_alias_opens_the_cached_demo_subject(tmp_path, monkeypatch):
    monkeypatch.setenv("NEUROLENS_CACHE_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    s = open_subject("demo")
    assert s.is_simulation and s.name.endswith("01")
    assert resolve_demo_alias("demo:1") == tmp_path / "demo" / "demo-sub01.nlsubj"
    with pytest.raises(DataError, match="demo:N"):
        resolve_demo_alias("demo:x")


def test_an_existing_path_named_demo_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").mkdir()
    assert resolve_demo_alias("demo") == "demo"
