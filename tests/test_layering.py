"""The package's layers import only downward, and no modules import each other in a circle.

Layers, bottom to top: core → train → methods → onnx → backends → checks → tune → pipeline → api → cli (``vitc.api``
is a module: the Python API; the package face ``vitc`` reaches it only through PEP 562's ``__getattr__``). Every
``import`` counts — module level, inside functions and under ``TYPE_CHECKING`` alike — so a lazy import
cannot hide an upward dependency. The graph is read from the source (AST), nothing is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

VITC = Path(__file__).resolve().parents[1] / "vitc"
LAYERS = ["core", "train", "methods", "onnx", "backends", "checks", "tune", "pipeline", "api", "cli"]


def module_name(path: Path, root: Path = VITC) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> int:
    """Layer index of ``vitc.<layer>...``; the package face ``vitc`` (its lazy API, PEP 562) and ``vitc.__main__``
    (``python -m vitc``) sit at the top, so no layer imports the face (the version lives in ``vitc.core.version``)."""
    parts = module.split(".")
    if len(parts) == 1 or parts[1] == "__main__":
        return len(LAYERS) - 1
    return LAYERS.index(parts[1])


def modules(root: Path = VITC) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def resolve(name: str, known: dict[str, Path]) -> str | None:
    """The vitc module ``name`` refers to (a submodule when it is one, else its package)."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def imports(path: Path, known: dict[str, Path]) -> list[tuple[int, str]]:
    """(line, vitc module) for every import in the file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            if name == "vitc" or name.startswith("vitc."):
                target = resolve(name, known)
                if target is not None:
                    out.append((node.lineno, target))
    return out


def graph() -> dict[str, set[str]]:
    known = modules()
    return {m: {t for _, t in imports(p, known) if t != m} for m, p in known.items()}


def upward_imports(root: Path = VITC) -> list[str]:
    known = modules(root)
    bad = []
    for module, path in known.items():
        for line, target in imports(path, known):
            if layer_of(target) > layer_of(module):
                bad.append(f"{path.relative_to(root.parent)}:{line}: {module} ({LAYERS[layer_of(module)]}) imports "
                           f"{target} ({LAYERS[layer_of(target)]})")
    return bad


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
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
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_every_module_belongs_to_a_layer() -> None:
    for module in modules():
        assert layer_of(module) >= -1, module


def test_layers_import_only_downward() -> None:
    assert upward_imports() == []


def test_no_import_cycles() -> None:
    assert cycles(graph()) == []


def test_the_library_never_imports_the_cli() -> None:
    known = modules()
    offenders = [m for m, p in known.items() if layer_of(m) < LAYERS.index("cli")
                 and any(t.startswith("vitc.cli") for _, t in imports(p, known))]
    assert offenders == []


@pytest.mark.parametrize("source, expect", [
    ("from vitc.cli.common import emit\n", "imports vitc.cli.common (cli)"),
    ("def f():\n    from vitc.checks.verify import verify_onnx\n", "imports vitc.checks.verify (checks)"),
    ("from vitc import __version__\n", "imports vitc (cli)"),
])
def test_the_checker_finds_an_upward_import(tmp_path: Path, source: str, expect: str) -> None:
    """Guard for the checker itself: a planted upward import (lazy or not) in a core module is reported."""
    root = tmp_path / "vitc"
    for rel in ("__init__.py", "core/__init__.py", "cli/__init__.py", "cli/common.py", "checks/__init__.py",
                "checks/verify.py"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("")
    (root / "core" / "planted.py").write_text(source)
    found = upward_imports(root)
    assert len(found) == 1 and expect in found[0] and "vitc/core/planted.py" in found[0], found


def test_the_checker_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


# ---- one place per name: backends and artifact kinds are named only by their registries ---------------

def _string_literals(path: Path) -> list[tuple[int, str]]:
    """(line, value) of every string constant of a module, docstrings left out."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body
                  and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


@pytest.mark.parametrize("names, home", [
    (("torch", "onnxruntime", "tensorrt", "openvino"), "backends"),  # vitc.backends.BACKENDS
    (("uvc", "dynamicvit", "uvc+dynamicvit"), "methods"),  # vitc.methods.METHODS
])
def test_backend_and_kind_names_are_spelled_only_by_their_registries(names: tuple[str, ...], home: str) -> None:
    from vitc.backends import BACKENDS
    from vitc.methods import METHODS

    assert set(names) == set(BACKENDS if home == "backends" else METHODS)  # the test knows every registered name
    found = [f"{p.relative_to(VITC.parent)}:{line} {value!r}" for name, p in modules().items()
             if not name.startswith(f"vitc.{home}") for line, value in _string_literals(p) if value in names]
    assert not found, f"name literals outside vitc/{home}/ (dispatch through the registry instead): {found}"
