"""The package's import graph, read with `ast` (module-level, function-level and
TYPE_CHECKING imports alike): no cycles, the UI only in `cli/`, local imports only for
optional dependencies; and what importing the light parts really loads (in a fresh
interpreter): reading a study file and starting the command line import no torch."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "leukaug"

# Optional or heavy-at-import dependencies that library code may import inside a function.
OPTIONAL = {
    "ray",
    "matplotlib",
    "onnx",
    "onnxruntime",
    "onnxscript",
    "mlflow",
    "tensorboard",
    "timm",
    "huggingface_hub",  # timm's weight downloads
    "torch.utils.tensorboard",
    "pytorch_grad_cam",
    "skimage",
    "torchstain",  # stain normalisation, [data] normalize (ARCHITECTURE.md lists it)
}
# Modules that only the command line may import.
UI_ONLY = {"rich", "typer", "leukaug.cli"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}
CLI = ("leukaug.cli", "leukaug.__main__")
LIBRARY = sorted(n for n in MODULES if not n.startswith(CLI))


def imports(path: Path) -> Iterator[tuple[str, ast.stmt, bool]]:
    """(imported module, statement, inside a function) for every import in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = (
        module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    )
    functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    local = {id(n) for f in functions for n in ast.walk(f)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node, id(node) in local
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                yield (candidate if candidate in MODULES else base), node, id(node) in local


def import_graph() -> dict[str, set[str]]:
    """leukaug module -> the leukaug modules it imports (`from pkg import sub` and
    `import pkg.sub` are edges to the submodule; `from pkg import name` to the package)."""
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name, path in MODULES.items():
        for target, _, _ in imports(path):
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target.startswith("leukaug") and target != name:
                graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_sees_the_known_arrows() -> None:
    graph = import_graph()
    assert "leukaug.study.jobs" in graph["leukaug.study.executors"]
    assert "leukaug.study.executors" in graph["leukaug.study.run"]
    assert "leukaug.core.layout" in graph["leukaug.arm.single"]


def test_cycle_detection_finds_a_planted_cycle() -> None:
    planted = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(planted) == [["a", "b", "c"]]


def test_no_import_cycles_in_the_package() -> None:
    assert cycles(import_graph()) == []


@pytest.mark.parametrize("name", LIBRARY)
def test_library_modules_do_not_import_the_ui(name: str) -> None:
    bad = [
        target
        for target, _, _ in imports(MODULES[name])
        if any(target == ui or target.startswith(ui + ".") for ui in UI_ONLY)
    ]
    assert bad == [], f"{name} imports {bad}; keep rich/typer and leukaug.cli in cli/"


# The one other reason for an import inside a function: a finished study reruns without the
# training stack (timm, torchvision's models, grad-cam, matplotlib: issue 20 item 2, tested by
# test_a_finished_study_reruns_without_loading_the_training_stack). Each module may defer
# exactly these, at the point where an arm is built or run or the report rebuilt.
DEFERRED_FOR_RERUN = {
    "leukaug.study.jobs": {
        "leukaug.arm.dispatch",
        "leukaug.arm.lifecycle",
        "leukaug.trained.arm_background",
        "leukaug.trained.arm_cams",
    },
    "leukaug.study.plan": {"leukaug.models"},
    "leukaug.study.preflight": {"leukaug.models.factory", "leukaug.models.weights"},
    "leukaug.study.prepare": {
        "leukaug.augment.preview",
        "leukaug.data.inspect",
        "leukaug.data.synth",
    },
    "leukaug.study.run": {"leukaug.report"},
}


@pytest.mark.parametrize("name", LIBRARY)
def test_function_level_imports_only_for_optional_dependencies(name: str) -> None:
    deferred = DEFERRED_FOR_RERUN.get(name, set())
    local = [
        f"{target} (line {node.lineno})"
        for target, node, inside in imports(MODULES[name])
        if inside
        and target not in deferred
        and not any(target == o or target.startswith(o + ".") for o in OPTIONAL)
    ]
    assert local == [], f"{name}: move these imports to the top of the module: {local}"


# Layers, top to bottom: no module imports one of a higher rank. A sub-package's modules
# share its rank; inside a sub-package only the cycle test applies.
RANKS = {
    "leukaug.cli": 9,
    "leukaug.__main__": 9,
    "leukaug.api": 8,
    "leukaug.study": 7,
    "leukaug.trained": 6,
    "leukaug.report": 5,
    "leukaug.arm": 4,
    "leukaug.augment": 3,
    "leukaug.models": 3,
    "leukaug.data": 2,
    "leukaug.stats": 1,
    "leukaug.core": 0,
}


def rank(module: str) -> int | None:
    for prefix, value in RANKS.items():
        if module == prefix or module.startswith(prefix + "."):
            return value
    return None


def test_imports_point_down_the_layers() -> None:
    upward = [
        f"{name} -> {target}"
        for name, targets in import_graph().items()
        for target in targets
        if rank(name) is not None and rank(target) is not None and rank(name) < rank(target)
    ]
    assert upward == []


def test_the_top_level_holds_few_modules() -> None:
    top = sorted(
        p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py")
    )
    assert len(top) <= 10, f"{len(top)} modules directly in src/leukaug/: {top}"


def test_no_two_modules_share_a_file_name() -> None:
    seen: dict[str, list[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        if path.name != "__init__.py":
            seen.setdefault(path.stem, []).append(module_name(path))
    shared = {stem: names for stem, names in seen.items() if len(names) > 1}
    assert shared == {}


def test_tests_mirror_the_package() -> None:
    """Every test module sits in the folder of the sub-package or top-level module it tests
    (tests/data/ for leukaug.data, tests/api/ for leukaug.api, ...); only this whole-package
    test sits at the top."""
    tests = Path(__file__).resolve().parent
    packages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    packages |= {p.stem for p in PACKAGE.glob("*.py") if not p.stem.startswith("_")}  # api.py
    misplaced = [
        str(path.relative_to(tests))
        for path in tests.rglob("test_*.py")
        if path != Path(__file__).resolve() and path.parent.name not in packages
    ]
    assert misplaced == []


# ------------------------------------------------------------------ what imports torch

HEAVY = ("torch", "torchvision", "kornia", "timm")
# Runs in a fresh interpreter before the code under test: records, for each heavy library,
# the leukaug lines that first looked for it, and prints at exit those of the libraries
# that were imported (looking one up, as `--version` does for torch, is no import).
WATCH_HEAVY_IMPORTS = f"""
import atexit, json, sys, traceback

class WatchHeavyImports:
    first = {{}}

    def find_spec(self, name, path=None, target=None):
        if name in {HEAVY!r} and name not in self.first:
            self.first[name] = [
                f"{{frame.filename.rpartition('src/')[2]}}:{{frame.lineno}}"
                for frame in traceback.extract_stack()
                if "leukaug" in frame.filename
            ]
        return None

sys.meta_path.insert(0, WatchHeavyImports())
atexit.register(
    lambda: print(
        "HEAVY="
        + json.dumps({{k: v for k, v in WatchHeavyImports.first.items() if k in sys.modules}})
    )
)
"""


def heavy_imports(code: str) -> dict[str, list[str]]:
    """Heavy library -> the leukaug import chain that loaded it, when `code` runs in a
    fresh interpreter with this checkout's package first on the path."""
    path = os.pathsep.join(filter(None, [str(PACKAGE.parent), os.environ.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-c", WATCH_HEAVY_IMPORTS + code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": path},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("HEAVY=")]
    return json.loads(line.removeprefix("HEAVY="))


def test_the_watch_sees_a_heavy_import() -> None:
    found = heavy_imports("import leukaug.models.factory")
    assert set(found) == {"torch", "torchvision", "timm"}
    assert "leukaug/models/factory.py" in found["torch"][0]


TORCH_FREE = [
    *sorted(n for n in MODULES if n.startswith("leukaug.core")),
    "leukaug.models",
    "leukaug.models.catalog",
    "leukaug.augment",
    "leukaug.augment.settings",
    "leukaug.arm.spec",
    "leukaug.arm.kinds",
    "leukaug.arm.callbacks",
    "leukaug.data.choices",
    "leukaug.data.synth_config",
    "leukaug.trained",
    "leukaug.study.study_file",
    "leukaug.cli",
]


def test_the_light_modules_import_no_torch() -> None:
    """The study file's vocabulary (models, augmentations, regimes, arm kinds, synthetic
    data) and everything it stands on, and the command line's app."""
    code = "import importlib\n" + "".join(f"importlib.import_module({m!r})\n" for m in TORCH_FREE)
    assert heavy_imports(code) == {}


def packaged_studies_without_timm() -> list[Path]:
    """Packaged studies naming no `timm:NAME` model (resolving one imports timm and torch)."""
    studies = sorted((PACKAGE / "studies").glob("*.toml"))
    return [
        path
        for path in studies
        if not any(
            (entry.get("model") or label).startswith("timm:")
            for label, entry in tomllib.loads(path.read_text(encoding="utf-8"))["models"].items()
        )
    ]


def test_reading_a_study_file_imports_no_torch() -> None:
    studies = packaged_studies_without_timm()
    assert len(studies) >= 4, studies  # demo, epochs, extended, paper at least
    code = "from leukaug.study.study_file import read_study_file\n" + "".join(
        f"read_study_file({str(path)!r})\n" for path in studies
    )
    assert heavy_imports(code) == {}


@pytest.mark.parametrize("args", [["--version"], ["-h"], ["run", "-h"], ["train", "-h"]])
def test_starting_the_command_line_imports_no_torch(args: list[str]) -> None:
    code = (
        f"import sys\nsys.argv = ['leukaug', *{args!r}]\nfrom leukaug.cli import main\n"
        "try:\n    main()\nexcept SystemExit as done:\n    assert done.code in (0, None)\n"
    )
    assert heavy_imports(code) == {}
