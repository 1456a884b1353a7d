"""CLI contract: --help and --version, inspect --json, and one-line errors with exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys

from engine._version import __version__
from engine.cli.main import main
from engine.data.native import write_subject
from tests.helpers import make_tiny_subject


def test_version_and_help(capsys):
    try:
        main(["--version"])
    except SystemExit as e:
        assert e.code == 0
    assert __version__ in capsys.readouterr().out
    r = subprocess.run([sys.executable, "-m", "engine.cli.main", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "inspect" in r.stdout


def test_inspect_json_reports_the_contract_keys(tmp_path, capsys):
    p = write_subject(make_tiny_subject(n_train=30, n_test_images=5, repeats=3), tmp_path / "s.nlsubj")
    assert main(["inspect", str(p), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["format"] == "native"
    assert (d["n_trials"], d["n_voxels"], d["n_images"]) == (45, 64, 35)
    assert d["image_shape"] == [16, 16, 3]
    assert d["rois"] == {"V1": 32, "LO": 32}
    assert d["splits"] == {"train": 30, "test": 15}
    assert d["n_test_images"] == 5 and d["repeats"] == 3


def test_bad_path_exits_2_with_one_line_and_no_traceback(tmp_path):
    bad = tmp_path / "nope.nlsubj"
    r = subprocess.run([sys.executable, "-m", "engine.cli.main", "inspect", str(bad)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and "Traceback" not in r.stderr


def test_malformed_subject_exits_2_and_debug_shows_traceback(tmp_path, capsys):
    p = write_subject(make_tiny_subject(), tmp_path / "s.nlsubj")
    (p / "subject.json").write_text("[1, 2]")
    assert main(["inspect", str(p)]) == 2
    err = capsys.readouterr().err
    assert "subject.json" in err and "Traceback" not in err
    assert main(["--debug", "inspect", str(p)]) == 2
    assert "Traceback" in capsys.readouterr().err
