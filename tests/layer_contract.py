"""The layer contract of the code base, read from the source (AST only, nothing imported), and its checks.

``tests/test_layers.py`` runs the checks on the repository and on tiny planted packages. The rules:

- engine layers ``data < models < train < recon < evaluate < cli``: a module never imports a module of a higher
  layer, whether at module level or inside a function;
- ``engine.metrics`` is pure: it imports only the standard library, numpy, scipy, torch, PIL, the engine's base
  modules and itself, so any layer may call it;
- the engine's top-level modules (``errors``, ``events``, ``atomic``, ...) are the base: they import no layer;
- ``neurolens_app`` never imports ``engine.cli``;
- no import cycles among engine modules (an import inside a function counts: it runs as soon as the function does);
- no module over ``MAX_MODULE_LINES`` lines and no function over ``MAX_FUNCTION_LINES`` lines.

Every import is counted, at any depth of the tree; ``importlib.import_module("literal")`` counts as an import too.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

LAYERS = ("data", "models", "train", "recon", "evaluate", "cli")
PURE = "metrics"
# What the pure layer may import besides the standard library and the engine's base modules.
PURE_THIRD_PARTY = frozenset({"numpy", "scipy", "torch", "PIL"})
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name
    imported: str  # dotted name as resolved (a module of the package where one exists)
    path: str  # the importer's file, relative to the root
    line: int


def module_name(root: Path, py: Path) -> str:
    parts = list(py.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    """Every module of ``packages`` under ``root``: dotted name -> file."""
    mods = {}
    for pkg in packages:
        for py in sorted((root / pkg).rglob("*.py")):
            mods[module_name(root, py)] = py
    return mods


def _resolve_relative(importer: str, is_package: bool, level: int, module: str | None) -> str:
    base = importer.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join(base + ([module] if module else []))


def imports_of(root: Path, py: Path, known: dict[str, Path]) -> list[Import]:
    """The imports of one file, at any depth. ``from a import b`` names ``a.b`` where that is a known module."""
    name = module_name(root, py)
    rel = str(py.relative_to(root))
    tree = ast.parse(py.read_text(), filename=str(py))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [Import(name, a.name, rel, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = _resolve_relative(name, py.name == "__init__.py", node.level, node.module)
            for a in node.names:
                sub = f"{base}.{a.name}"
                found.append(Import(name, sub if sub in known else base, rel, node.lineno))
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str) and _is_import_module(node.func)):
            found.append(Import(name, node.args[0].value, rel, node.lineno))
    return found


def _is_import_module(func: ast.expr) -> bool:
    return (isinstance(func, ast.Attribute) and func.attr == "import_module") or (
        isinstance(func, ast.Name) and func.id in ("import_module", "__import__"))


def all_imports(root: Path, packages: tuple[str, ...]) -> list[Import]:
    known = package_modules(root, packages)
    return [imp for py in known.values() for imp in imports_of(root, py, known)]


def layer_of(module: str, engine: str = "engine") -> str | None:
    """``data`` ... ``cli``, ``metrics``, ``base`` (a top-level engine module or the package), or None (not engine)."""
    parts = module.split(".")
    if parts[0] != engine:
        return None
    if len(parts) == 1:
        return "base"
    if parts[1] in LAYERS or parts[1] == PURE:
        return parts[1]
    return "base"


def _rank(layer: str) -> int:
    return -1 if layer == "base" else LAYERS.index(layer)


def layer_violations(imports: list[Import], engine: str = "engine", app: str = "neurolens_app") -> list[str]:
    """Each broken import rule as ``path:line importer -> imported (why)``, sorted, each once."""
    out = set()
    for imp in imports:
        src, dst = layer_of(imp.importer, engine), layer_of(imp.imported, engine)
        why = None
        if src is None:
            if imp.importer.split(".")[0] == app and dst == "cli":
                why = "the app never imports the CLI"
        elif src == PURE:
            top = imp.imported.split(".")[0]
            if dst is not None and dst not in ("base", PURE):
                why = f"{PURE} is pure: it imports no layer"
            elif dst is None and top not in PURE_THIRD_PARTY and top not in sys.stdlib_module_names:
                why = f"{PURE} is pure: numpy, scipy, torch, PIL and the standard library only"
        elif dst is not None and dst != PURE and _rank(dst) > _rank(src):
            why = f"{src} is below {dst}"
        if why:
            out.add(f"{imp.path}:{imp.line} {imp.importer} -> {imp.imported} ({why})")
    return sorted(out)


def import_graph(imports: list[Import], engine: str = "engine") -> dict[str, set[str]]:
    """Engine module -> the engine modules it imports (module-level and function-level alike)."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        if layer_of(imp.importer, engine) is not None:
            graph.setdefault(imp.importer, set())
            if layer_of(imp.imported, engine) is not None and imp.imported != imp.importer:
                graph[imp.importer].add(imp.imported)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One chain ``a -> b -> ... -> a`` per knot (strongly connected component of more than one module)."""
    return [_chain(graph, comp) for comp in knots(graph)]


def knots(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan): every module of one reaches every other."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(set(comp))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph) + 100))
    try:
        for v in sorted(graph):
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    return components


def _chain(graph: dict[str, set[str]], comp: set[str]) -> list[str]:
    """A shortest cycle through the component's first module, as a list that starts and ends with it."""
    start = min(comp)
    parent = {start: None}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph.get(v, ()) & comp):
                if w == start:
                    path, node = [], v
                    while node is not None:
                        path.append(node)
                        node = parent[node]
                    return path[::-1] + [start]
                if w not in parent:
                    parent[w] = v
                    nxt.append(w)
        frontier = nxt
    return sorted(comp)


def oversized(root: Path, packages: tuple[str, ...], max_module: int = MAX_MODULE_LINES,
              max_function: int = MAX_FUNCTION_LINES) -> dict[str, int]:
    """``path`` (a module over ``max_module`` lines) or ``path::qualified.function`` (over ``max_function``) -> lines."""
    out = {}
    for py in package_modules(root, packages).values():
        rel = str(py.relative_to(root))
        text = py.read_text()
        n = len(text.splitlines())
        if n > max_module:
            out[rel] = n
        for qual, node in _functions(ast.parse(text, filename=str(py))):
            length = node.end_lineno - node.lineno + 1
            if length > max_function:
                out[f"{rel}::{qual}"] = length
    return out


def _functions(tree: ast.AST, prefix: str = ""):
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield prefix + node.name, node
            yield from _functions(node, f"{prefix}{node.name}.")
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node, f"{prefix}{node.name}.")
        else:
            yield from _functions(node, prefix)
