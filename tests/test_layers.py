"""The package's structure as the README's architecture page states it: no import cycle in
``genrec/`` and no import from a lower layer up into a higher one (an AST scan of every file, so
imports inside functions count too; imports under ``if TYPE_CHECKING:`` do not run and do not); and no constructor wider than
``MAX_INIT_ARGS`` arguments."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Each layer may import itself and anything not listed here for it.
FORBIDDEN = {
    "genrec.errors": ["genrec"],
    "genrec.models": ["genrec.data", "genrec.modules", "genrec.evaluation", "genrec.robust", "genrec.cli"],
    "genrec.decoding": ["genrec.data", "genrec.models", "genrec.modules", "genrec.evaluation", "genrec.robust"],
    "genrec.tokenizers.fsq": ["genrec.data", "genrec.modules", "genrec.evaluation", "genrec.robust"],
    "genrec.tokenizers.text": ["genrec.data", "genrec.modules", "genrec.evaluation", "genrec.robust"],
    "genrec.tokenizers.item_tokenizer": ["genrec.data", "genrec.modules", "genrec.evaluation", "genrec.robust"],
    "genrec.data": ["genrec.models", "genrec.modules", "genrec.evaluation", "genrec.robust", "genrec.cli"],
    # the ranking metrics sit below the modules that log them; evaluation runs sit above the modules
    "genrec.metrics": ["genrec.data", "genrec.models", "genrec.modules", "genrec.evaluation", "genrec.robust",
                       "genrec.decoding", "genrec.tokenizers", "genrec.cli", "genrec.prediction"],
    # what every model and baseline is to evaluation, below both
    "genrec.recommender": ["genrec.data", "genrec.models", "genrec.modules", "genrec.evaluation", "genrec.robust",
                           "genrec.decoding", "genrec.tokenizers", "genrec.cli", "genrec.prediction"],
    "genrec.modules": ["genrec.evaluation", "genrec.robust", "genrec.cli", "genrec.prediction"],
    # evaluation sits below the robustness report and the entry points that use it
    "genrec.evaluation": ["genrec.robust", "genrec.cli", "genrec.prediction"],
    # the argparse helpers of every entry point: importable from any command module
    "genrec.commands": ["genrec"],
    # the attacks call the surrogate model; the surrogate sees AttackConfig for type hints only
    "genrec.robust.surrogate": ["genrec.robust.attacks"],
}


def module_names() -> dict[str, Path]:
    names = {}
    for path in (ROOT / "genrec").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        names[".".join(parts).removesuffix(".__init__")] = path
    return names


def _runtime_imports(tree: ast.AST):
    """Import nodes outside ``if TYPE_CHECKING:`` blocks."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from (n for stmt in node.orelse for n in _runtime_imports(stmt))
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        yield from _runtime_imports(node)


def import_graph(names: dict[str, Path]) -> dict[str, set[str]]:
    """Module → the genrec modules it imports (``from pkg import name`` counts as pkg.name when
    that is a module, else as pkg)."""

    def resolve(name: str) -> str:
        while name not in names and "." in name:
            name = name.rsplit(".", 1)[0]
        return name

    graph = {}
    for module, path in names.items():
        targets = set()
        for node in _runtime_imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("genrec"):
                targets |= {resolve(f"{node.module}.{alias.name}") for alias in node.names}
            elif isinstance(node, ast.Import):
                targets |= {resolve(alias.name) for alias in node.names if alias.name.startswith("genrec")}
        graph[module] = targets - {module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in graph:
                    continue
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def test_cycle_finder_sees_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_genrec():
    assert cycles(import_graph(module_names())) == []


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_no_upward_import(layer):
    graph = import_graph(module_names())
    bad = [(m, t) for m, targets in graph.items() if _within(m, layer) for t in sorted(targets)
           if any(_within(t, f) for f in FORBIDDEN[layer]) and not _within(t, layer)]
    assert bad == [], f"{layer} must not import {FORBIDDEN[layer]}: {bad}"


def test_every_module_imports():
    names = sorted(module_names())
    code = "import importlib\nfor n in %r:\n    importlib.import_module(n)\n" % names
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


MAX_INIT_ARGS = 12


def wide_constructors(paths, root: Path = ROOT) -> list[str]:
    """``file:Class (n)`` for every class whose ``__init__`` takes more than ``MAX_INIT_ARGS``
    arguments besides ``self``, ``*args`` and ``**kwargs``: past that, the knobs belong in a typed
    config dataclass (``LossConfig``, ``LoaderConfig``, ...) that ``--print_config`` documents."""
    wide = []
    for path in paths:
        for node in ast.walk(ast.parse(Path(path).read_text())):
            if not isinstance(node, ast.ClassDef):
                continue
            for init in (n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"):
                a = init.args
                count = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs) - 1
                if count > MAX_INIT_ARGS:
                    wide.append(f"{Path(path).relative_to(root)}:{node.name} ({count})")
    return wide


def test_wide_constructor_finder_sees_a_planted_one(tmp_path):
    args = ", ".join(f"a{i}=0" for i in range(MAX_INIT_ARGS + 1))
    (tmp_path / "wide.py").write_text(f"class Wide:\n    def __init__(self, {args}, *rest, **more):\n        pass\n"
                                      f"class Narrow:\n    def __init__(self, {args[5:]}, **more):\n        pass\n")
    assert wide_constructors([tmp_path / "wide.py"], tmp_path) == [f"wide.py:Wide ({MAX_INIT_ARGS + 1})"]


def test_no_constructor_in_genrec_takes_more_than_12_arguments():
    wide = wide_constructors(sorted((ROOT / "genrec").rglob("*.py")))
    assert not wide, f"constructors with more than {MAX_INIT_ARGS} arguments (group them into a config dataclass): {wide}"
