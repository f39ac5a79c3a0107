"""The shape of the source tree: what the core imports, what `import barenet` loads, no import
cycles, no function over 60 lines and no file over 400.

The core is every module of src/barenet outside app/ and data/. Imports are read with `ast`,
function-level ones included, so a lazy import counts as much as one at the top.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "barenet"
EDGES = ("app", "data")                 # barenet's subpackages outside the core
CORE_THIRD_PARTY = {"numpy", "safetensors"}
# Imports the core may make beyond NumPy, the standard library, safetensors and its own core,
# each allowed in one module only, with the reason.
EXCEPTIONS = {
    "barenet.sklearn": {
        "sklearn": "the scikit-learn adapter (extra barenet[sklearn]); `import barenet` never "
                   "imports this module",
        "barenet.data.augment": "NetClassifier's `augment` option builds the same Augmenter "
                                "as a run (NumPy only), when it is used",
    },
    "barenet.onnx_export": {
        "onnx": "the ONNX exporter (extra barenet[onnx]), imported inside to_onnx",
    },
    "barenet.build": {
        "barenet.data.augment": "augmentation is a data transform (NumPy only); build_augment "
                                "imports it only when a config turns augmentation on",
    },
    "barenet.parallel": {
        "threadpoolctl": "limits BLAS to one thread per call on the parallel paths; imported "
                         "only when present, and everything runs in one thread without it",
    },
    "barenet.config": {
        "tomli": "tomllib's backport, on Python 3.10 only",
    },
}
HEAVY = ("matplotlib", "rich", "click", "fastapi", "textual", "optuna", "sklearn", "onnx",
         "torch", "pooch")
MAX_FUNCTION_LINES = 60
MAX_FILE_LINES = 400


def modules() -> dict[str, Path]:
    """'barenet.x.y' -> path, for every module under src/."""
    found = {}
    for path in SRC.rglob("*.py"):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def imported(name: str, path: Path, known: dict[str, Path]) -> list[str]:
    """Every module `name` imports (absolute names, relative imports resolved), at any depth
    of its code. `from pkg import sub` names pkg.sub when that is a module."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[:len(parts) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known]
            out += subs if len(subs) == len(node.names) else [base, *subs]
    return out


def is_core(name: str) -> bool:
    parts = name.split(".")
    return parts[0] == "barenet" and (len(parts) == 1 or parts[1] not in EDGES)


def allowed(module: str, target: str) -> bool:
    top = target.split(".")[0]
    if top in sys.stdlib_module_names or top in CORE_THIRD_PARTY or is_core(target):
        return True
    return any(target == key or target.startswith(key + ".")
               for key in EXCEPTIONS.get(module, {}))


def test_the_core_imports_only_numpy_the_standard_library_safetensors_and_itself():
    known = modules()
    core = {name: path for name, path in known.items() if is_core(name)}
    assert "barenet.layers" in core and "barenet.app.cli" not in core
    wrong = sorted(f"{name} imports {target}" for name, path in core.items()
                   for target in imported(name, path, known) if not allowed(name, target))
    assert not wrong, "\n".join(wrong)


def test_the_exceptions_are_still_needed():
    """An exception whose import is gone goes too, so the list stays the truth."""
    known = modules()
    for module, targets in EXCEPTIONS.items():
        found = imported(module, known[module], known)
        for key in targets:
            assert any(t == key or t.startswith(key + ".") for t in found), (module, key)


def test_import_barenet_stays_light():
    code = ("import sys, barenet\n"
            f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.split() == []


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules of src/ it imports; importing an ancestor package is no edge
    (a submodule's own package is already loaded when it runs)."""
    known = modules()
    graph = {}
    for name, path in known.items():
        graph[name] = {t for t in imported(name, path, known)
                       if t in known and t != name and not name.startswith(t + ".")}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_sees_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_no_function_over_60_lines():
    long = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} {lines}")
    assert not long, "\n".join(long)


@pytest.mark.parametrize("path", sorted(SRC.rglob("*.py")), ids=lambda p: str(p.relative_to(SRC)))
def test_no_file_over_400_lines(path):
    assert len(path.read_text().splitlines()) <= MAX_FILE_LINES
