"""Bounded YAML and JSON: alias bombs, self-reference and deep nesting are refused at once; messages stay short."""

from __future__ import annotations

import time

import pytest
import yaml

from engine.errors import CheckpointError, DataError
from engine.jsonfile import field, loads, nesting_depth, read_object
from engine.safe_yaml import DocumentTooLarge, expanded_size, safe_load, short_repr
from tests.hostile.test_import_inspect import BOMB


def test_alias_bomb_is_refused_in_linear_time():
    t0 = time.perf_counter()
    with pytest.raises(DocumentTooLarge, match="aliases"):
        safe_load(BOMB)
    assert time.perf_counter() - t0 < 1.0


def test_shared_aliases_below_the_limit_load_and_count_expanded():
    text = "a: &a [1, 2, 3]\nb: [*a, *a]\n"
    assert safe_load(text) == {"a": [1, 2, 3], "b": [[1, 2, 3], [1, 2, 3]]}
    loader = yaml.SafeLoader(text)
    # the map, key "a", [1, 2, 3] (4), key "b", [*a, *a] (1 + 2 × 4): aliases counted as often as they are used
    assert expanded_size(loader.get_single_node()) == 1 + 1 + 4 + 1 + 9


def test_recursive_alias_is_refused():
    with pytest.raises(yaml.YAMLError):
        safe_load("a: &a [1, *a]\n")


def test_short_repr_never_builds_the_whole_text():
    big = [[[list(range(1000))] * 1000] * 1000]  # shared structure: 1e9 values, repr would never finish
    t0 = time.perf_counter()
    text = short_repr(big)
    assert len(text) <= 80 and time.perf_counter() - t0 < 0.1


def test_json_depth_is_checked_before_parsing(tmp_path):
    assert nesting_depth('{"a": "[[[[", "b": [[1]]}') == 3
    with pytest.raises(ValueError, match="nested deeper"):
        loads("[" * 200_000 + "]" * 200_000)
    p = tmp_path / "x.json"
    p.write_text("[" * 200_000)
    with pytest.raises(CheckpointError, match="x.json"):
        read_object(p, CheckpointError)


def test_fields_are_type_checked_with_file_and_key(tmp_path):
    p = tmp_path / "s.json"
    p.write_text('{"step": "4", "ok": 3, "flag": true, "rate": 2}')
    d = read_object(p)
    assert field(d, "ok", int, p) == 3 and field(d, "rate", float, p) == 2
    with pytest.raises(DataError, match=r"s.json: key 'step': expected an integer, found str '4'"):
        field(d, "step", int, p)
    with pytest.raises(DataError, match="key 'flag'"):
        field(d, "flag", int, p)  # a bool is not an integer here
    assert field(d, "missing", int, p, default=7) == 7
