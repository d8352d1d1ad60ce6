"""The package's structure as docs/architecture.md draws it: layers that each name whole packages,
no import from a layer up into a higher one, and no import cycle in ``genrec/``.

The layers, bottom first, as the imports stand (``farm-studio look`` draws the same floors):

1. ``errors``: the exception types (and the package's face, ``genrec/__init__.py``).
2. leaf libraries, each standing alone: ``metrics`` (streaming ranking metrics), ``decoding``
   (trie, beam search), ``outputs`` (result files), ``digests`` (content hashes of cached files),
   ``loggers``, ``callbacks``, ``timing``.
3. ``recommender``: the protocol every model and baseline implements (over ``metrics``).
4. ``tokenizers``: text embeddings, FSQ, the item tokenizer.
5. ``data`` (files, splits, batches) and ``models`` (the plain nets): neither knows the other.
6. ``modules``: the Lightning modules that join a net, its loss and its metrics.
7. ``evaluation`` (a trained run scored) and ``resume`` (a run continued): neither knows the other.
8. ``robust``: attacks and defences, built on training and evaluation.
9. entry points: ``cli`` (train.py), ``prediction`` (evaluate.py recommend).

A module may import its own package, and any package of a lower layer; never one of its own layer
or above. Every module of ``genrec/`` must sit in a layer, so a new package has to be placed here
before its first test passes. The scan is of every file's syntax tree: imports inside functions
count, and so do imports under ``if TYPE_CHECKING:``: a type hint that names a class still ties its
module to that class's module, and a circle of such ties is a circle all the same. The
architecture page lists every module and names every layer entry. Also here: no constructor wider
than ``MAX_INIT_ARGS`` arguments."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Bottom first. An entry is a module, or a package and every module under it, those added later too;
# ``genrec`` itself is its ``__init__.py`` alone.
LAYERS = [
    ("errors", ["genrec", "genrec.errors"]),
    ("leaf libraries", ["genrec.metrics", "genrec.decoding", "genrec.outputs", "genrec.digests", "genrec.loggers",
                        "genrec.callbacks", "genrec.timing"]),
    ("the recommender protocol", ["genrec.recommender"]),
    ("tokenizers", ["genrec.tokenizers"]),
    ("data and nets", ["genrec.data", "genrec.models"]),
    ("lightning modules", ["genrec.modules"]),
    ("runs: evaluation and resumption", ["genrec.evaluation", "genrec.resume"]),
    ("robustness", ["genrec.robust"]),
    ("entry points", ["genrec.cli", "genrec.prediction"]),
]


def module_names(root: Path = ROOT) -> dict[str, Path]:
    names = {}
    for path in (root / "genrec").rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        names[".".join(parts).removesuffix(".__init__")] = path
    return names


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The dotted names one import statement of ``module`` asks for, relative ones made absolute;
    ``from pkg import name`` gives ``pkg.name`` (narrowed to ``pkg`` later when that is no module)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        package = package[:len(package) - (node.level - 1)]
        base = ".".join(package + ([base] if base else []))
    return [f"{base}.{alias.name}" for alias in node.names]


def import_graph(names: dict[str, Path]) -> dict[str, set[str]]:
    """Module → the genrec modules it imports: every import statement in the file, those inside
    functions and under ``if TYPE_CHECKING:`` too."""

    def resolve(name: str) -> str:
        while name not in names and "." in name:
            name = name.rsplit(".", 1)[0]
        return name

    graph = {}
    for module, path in names.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                wanted = _imported(node, module, path.name == "__init__.py")
                targets |= {resolve(name) for name in wanted if name == "genrec" or name.startswith("genrec.")}
        graph[module] = targets - {module}
    return graph


def _covers(entry: str, module: str) -> bool:
    # a top-level name is the package's __init__.py alone, or it would cover every module
    return module == entry or ("." in entry and module.startswith(entry + "."))


def placement(module: str, layers=LAYERS) -> tuple[int, str] | None:
    """(layer index, the entry that places it; the longest that covers it) or None."""
    found = [(len(entry), i, entry) for i, (_, entries) in enumerate(layers) for entry in entries if _covers(entry, module)]
    return max(found)[1:] if found else None


def unplaced(modules, layers=LAYERS) -> list[str]:
    return sorted(m for m in modules if placement(m, layers) is None)


def stale_entries(modules, layers=LAYERS) -> list[str]:
    return [entry for _, entries in layers for entry in entries if not any(_covers(entry, m) for m in modules)]


def wrong_way_imports(graph: dict[str, set[str]], layers=LAYERS) -> dict[str, list[str]]:
    """Layer name → ``"a -> b (why)"`` for each import of a module placed in it that goes up a layer,
    or across to another entry of its own layer."""
    bad = {}
    for module in sorted(graph):
        here = placement(module, layers)
        for target in sorted(graph[module]):
            there = placement(target, layers)
            if here is None or there is None or there[1] == here[1] or there[0] < here[0]:
                continue
            why = "across its layer" if there[0] == here[0] else f"up to layer '{layers[there[0]][0]}'"
            bad.setdefault(layers[here[0]][0], []).append(f"{module} -> {target} ({why})")
    return bad


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


def test_cycle_finder_sees_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_import_graph_counts_type_only_function_level_and_relative_imports(tmp_path):
    files = {
        "genrec/__init__.py": "",
        "genrec/low.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from genrec.high import H\n",
        "genrec/high.py": "def f():\n    from genrec import low\n",
        "genrec/pkg/__init__.py": "from . import a\n",
        "genrec/pkg/a.py": "from .b import x\nfrom .. import low\nimport genrec.pkg.b\n",
        "genrec/pkg/b.py": "x = 1\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    graph = import_graph(module_names(tmp_path))
    assert graph["genrec.low"] == {"genrec.high"} and graph["genrec.high"] == {"genrec.low"}
    assert graph["genrec.pkg"] == {"genrec.pkg.a"}
    assert graph["genrec.pkg.a"] == {"genrec.pkg.b", "genrec.low"}
    assert cycles(graph) == [["genrec.high", "genrec.low"]]


def test_layer_rules_see_a_planted_import_up_or_across_and_an_unplaced_module():
    layers = [("base", ["genrec", "genrec.errors"]), ("middle", ["genrec.data", "genrec.models"]),
              ("top", ["genrec.cli"])]
    graph = {"genrec": set(), "genrec.errors": set(), "genrec.data": {"genrec.data.raw"},
             "genrec.data.raw": {"genrec.errors", "genrec.data"}, "genrec.models.hstu": {"genrec.data.raw"},
             "genrec.data.new": {"genrec.cli"}, "genrec.cli": {"genrec.models.hstu", "genrec"}, "genrec.extra": set()}
    assert wrong_way_imports(graph, layers) == {"middle": ["genrec.data.new -> genrec.cli (up to layer 'top')",
                                                           "genrec.models.hstu -> genrec.data.raw (across its layer)"]}
    assert unplaced(graph, layers) == ["genrec.extra"]  # "genrec" covers its __init__.py alone
    assert stale_entries(graph, layers + [("gone", ["genrec.old"])]) == ["genrec.old"]


def test_every_module_sits_in_a_layer_and_every_layer_entry_exists():
    names = module_names()
    assert unplaced(names) == [], "place each module in a layer of LAYERS (tests/test_layers.py) and docs/architecture.md"
    assert stale_entries(names) == [], "these LAYERS entries name no module of genrec/"


@pytest.mark.parametrize("layer", [name for name, _ in LAYERS])
def test_no_import_runs_up_or_across_a_layer(layer):
    bad = wrong_way_imports(import_graph(module_names())).get(layer, [])
    assert bad == [], f"layer '{layer}' imports what it must not: {bad}"


def test_no_import_cycle_in_genrec():
    assert cycles(import_graph(module_names())) == []


def test_the_architecture_page_names_every_module_and_layer():
    page = (ROOT / "docs" / "architecture.md").read_text()
    missing = [str(path.relative_to(ROOT)) for path in sorted((ROOT / "genrec").rglob("*.py"))
               if path.name != "__init__.py" and str(path.relative_to(ROOT)) not in page]
    assert missing == [], f"docs/architecture.md does not list {missing}"
    unnamed = [entry for _, entries in LAYERS for entry in entries if f"`{entry}`" not in page]
    assert unnamed == [], f"docs/architecture.md's layer table does not name {unnamed}"


def test_every_module_imports():
    names = sorted(module_names())
    code = "import importlib\nfor n in %r:\n    importlib.import_module(n)\n" % names
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


MAX_INIT_ARGS = 10


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


def test_no_constructor_in_genrec_takes_more_than_10_arguments():
    wide = wide_constructors(sorted((ROOT / "genrec").rglob("*.py")))
    assert not wide, f"constructors with more than {MAX_INIT_ARGS} arguments (group them into a config dataclass): {wide}"
