"""The layer contract, enforced on the source (see ``tests/layer_contract.py`` for the rules and
docs/architecture.md's Layers section): layers import downwards only, ``metrics`` is pure, the app never imports the
CLI, no import cycles, no module over 500 lines and no function over 80 (the size rule also covers the scripts:
benchmarks, resource builders, packaging entry points).

The allowlists below are empty: an exception, when one is ever needed, is one entry with a comment saying why and who
removes it; an entry that no longer matches anything fails ``test_allowlists_hold_no_stale_entry``, so none outlives
its reason.
"""

from __future__ import annotations

import functools
from pathlib import Path

from tests.layer_contract import all_imports, cycles, import_graph, knots, layer_violations, oversized

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("engine", "neurolens_app")
# Python outside the packages: the size rule holds there too (the import rules are the packages' own).
SCRIPT_DIRS = ("benchmarks", "resources/build", "packaging")

# Importing file -> who is fixing it and how. Every import rule broken by that file is tolerated until then.
LAYER_ALLOWLIST: dict[str, str] = {}

# ``path`` (module lines) or ``path::function`` -> who is splitting it.
SIZE_ALLOWLIST: dict[str, str] = {}


@functools.cache
def _imports():
    return all_imports(ROOT, PACKAGES)


@functools.cache
def _oversized():
    return oversized(ROOT, PACKAGES + SCRIPT_DIRS)


def test_layers_import_downwards_only_metrics_is_pure_and_the_app_never_imports_the_cli():
    broken = [v for v in layer_violations(_imports()) if v.split(":")[0] not in LAYER_ALLOWLIST]
    assert not broken, "import rules broken (docs/architecture.md, Layers):\n" + "\n".join(broken)


def test_engine_has_no_import_cycle():
    graph = import_graph(_imports())
    found = [" -> ".join(chain) + "".join(f"\n    (the knot also holds {m})" for m in sorted(knot - set(chain)))
             for chain, knot in zip(cycles(graph), knots(graph))]
    assert not found, "import cycles (function-level imports count):\n" + "\n".join(found)


def test_no_module_over_500_lines_and_no_function_over_80():
    big = {k: n for k, n in _oversized().items() if k not in SIZE_ALLOWLIST}
    assert not big, "split these (one concept per module):\n" + "\n".join(f"{k}: {n} lines" for k, n in sorted(big.items()))


def test_allowlists_hold_no_stale_entry():
    layer_files = {v.split(":")[0] for v in layer_violations(_imports())}
    stale = [k for k in LAYER_ALLOWLIST if k not in layer_files]
    stale += [k for k in SIZE_ALLOWLIST if k not in _oversized()]
    assert not stale, "fixed: remove from the allowlist:\n" + "\n".join(stale)


# --- the checker itself, on tiny planted packages ---------------------------------------------------------------------

def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        for parent in p.relative_to(root).parents:
            if parent != Path(".") and not (root / parent / "__init__.py").exists():
                (root / parent / "__init__.py").write_text("")
    return root


def _fake(tmp_path: Path, files: dict[str, str]) -> Path:
    return _write(tmp_path, {"engine/errors.py": "class E(Exception):\n    pass\n", **files})


def test_checker_finds_an_upward_import_inside_a_function(tmp_path):
    root = _fake(tmp_path, {
        "engine/recon/job.py": "import numpy\n",
        "engine/data/reader.py": "from engine.errors import E\n\ndef f():\n    from engine.recon import job\n",
    })
    found = layer_violations(all_imports(root, ("engine",)))
    assert found == ["engine/data/reader.py:4 engine.data.reader -> engine.recon.job (data is below recon)"]


def test_checker_allows_downward_base_and_metrics_imports(tmp_path):
    root = _fake(tmp_path, {
        "engine/data/subject.py": "import numpy\n",
        "engine/metrics/lowlevel.py": "import numpy, scipy.stats, torch, json\nfrom PIL import Image\nfrom engine import errors\n",
        "engine/recon/job.py": "from engine.data.subject import x\nfrom engine.metrics import lowlevel\nfrom ..errors import E\n",
    })
    assert layer_violations(all_imports(root, ("engine",))) == []


def test_checker_finds_impure_metrics_and_a_relative_upward_import(tmp_path):
    root = _fake(tmp_path, {
        "engine/models/mlp.py": "from ..train import trainer\n",
        "engine/train/trainer.py": "",
        "engine/metrics/m.py": "import transformers\n\ndef f():\n    from engine.models import mlp\n",
    })
    found = layer_violations(all_imports(root, ("engine",)))
    assert [v.split(" (")[1] for v in found] == [
        "metrics is pure: numpy, scipy, torch, PIL and the standard library only)",
        "metrics is pure: it imports no layer)",
        "models is below train)",
    ]
    assert found[2].startswith("engine/models/mlp.py:1 engine.models.mlp -> engine.train.trainer ")


def test_checker_finds_the_app_importing_the_cli(tmp_path):
    root = _write(tmp_path, {
        "engine/cli/output.py": "",
        "engine/events.py": "",
        "app/panel.py": "from engine.events import x\n\ndef g():\n    import engine.cli.output\n",
    })
    found = layer_violations(all_imports(root, ("engine", "app")), app="app")
    assert found == ["app/panel.py:4 app.panel -> engine.cli.output (the app never imports the CLI)"]


def test_checker_reports_a_cycle_through_a_function_level_import_as_a_chain(tmp_path):
    root = _fake(tmp_path, {
        "engine/models/base.py": "def build():\n    from engine.models.registry import KINDS\n",
        "engine/models/registry.py": "from engine.models import mlp\nKINDS = {}\n",
        "engine/models/mlp.py": "from engine.models.base import build\n",
        "engine/models/ridge.py": "from engine.models.base import build\n",
    })
    found = cycles(import_graph(all_imports(root, ("engine",))))
    assert found == [["engine.models.base", "engine.models.registry", "engine.models.mlp", "engine.models.base"]]


def test_checker_reports_a_cycle_through_a_package_init(tmp_path):
    root = _fake(tmp_path, {
        "engine/data/__init__.py": "from engine.data.formats import open_subject\n",
        "engine/data/formats.py": "def open_subject():\n    import importlib\n    importlib.import_module('engine.data.demo')\n",
        "engine/data/demo.py": "from engine.data import open_subject\n",
    })
    found = cycles(import_graph(all_imports(root, ("engine",))))
    assert found == [["engine.data", "engine.data.formats", "engine.data.demo", "engine.data"]]


def test_checker_measures_modules_and_functions(tmp_path):
    long_fn = "def long():\n" + "    x = 1\n" * 80  # 81 lines
    short_fn = "def short():\n" + "    x = 1\n" * 79  # 80 lines
    method = "class K:\n    def m(self):\n" + "        x = 1\n" * 81
    root = _write(tmp_path, {"pkg/a.py": long_fn + short_fn + method, "pkg/b.py": "x = 1\n" * 501,
                             "pkg/c.py": "x = 1\n" * 500})
    assert oversized(root, ("pkg",)) == {"pkg/a.py::long": 81, "pkg/a.py::K.m": 82, "pkg/b.py": 501}


def test_checker_measures_the_scripts_outside_the_packages(tmp_path):
    main = "def main():\n" + "    x = 1\n" * 80  # 81 lines
    root = _write(tmp_path, {"benchmarks/bench_x.py": main, "resources/build/build_x.py": "x = 1\n" * 501,
                             "packaging/entry_x.py": "import sys\n\n" + main, "docs/conf.py": main})
    assert oversized(root, PACKAGES + SCRIPT_DIRS) == {
        "benchmarks/bench_x.py::main": 81, "resources/build/build_x.py": 501, "packaging/entry_x.py::main": 81}


def _file_names_of_a_run() -> set[str]:
    """The file names the engine defines for a run folder (module-level string constants with an extension)."""
    import ast

    names = set()
    for rel in ("engine/train/run.py", "engine/train/predict.py", "engine/recon/decoder.py", "engine/recon/index.py",
                "engine/models/config.py"):
        for node in ast.parse((ROOT / rel).read_text(encoding="utf-8")).body:
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) \
                    and isinstance(node.value.value, str) and "." in node.value.value:
                names.add(node.value.value)
    return names


def test_the_app_names_no_file_of_a_run_folder():
    """The engine owns the run folder's layout (``Run``, ``Decoder``, ``TrainedModel``, the recon index); the app asks
    it instead of spelling file names (issue 16)."""
    import ast

    names = _file_names_of_a_run()
    assert {"config.yaml", "status.json", "decoder.json", "index.json", "run_model.json"} <= names
    found = []
    for path in sorted((ROOT / "neurolens_app").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found += [f"{path.relative_to(ROOT)}:{node.lineno}: {n}" for n in names if n in node.value]
    assert not found, "run-folder file names in the app:\n" + "\n".join(found)
