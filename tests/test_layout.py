"""The package's architecture, checked: the imports have no cycles (lazy imports included),
the floors stay where they are, modules stay short (train.py under 650 lines, the rest at most 500),
and README's layout lists every module."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lape_lib"
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")
# Modules that must not climb: the file and image floors import no model, trainer or config.
FLOORS = {
    "files": set(),
    "images": {"files"},
    "synthetic": {"images"},
    "hub": {"files", "images"},
    "data": {"files", "images", "hub", "notebook", "synthetic"},
    "stream": {"augment", "data", "images"},
}
TRAIN_MAX_LINES = 650
MODULE_MAX_LINES = 500  # every other module


def imports_of(source: str) -> set[str]:
    """The lape_lib modules a module's source imports, anywhere in it (function-level imports too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                names = [node.module.split(".")[0]] if node.module else [a.name for a in node.names]
            elif node.level == 0 and node.module and node.module.split(".")[0] == "lape_lib":
                rest = node.module.split(".")[1:]
                names = rest[:1] if rest else [a.name for a in node.names]
            else:
                continue
        elif isinstance(node, ast.Import):
            names = [a.name.split(".")[1] for a in node.names if a.name.startswith("lape_lib.")]
        else:
            continue
        found |= {n for n in names if n in MODULES}
    return found


def graph() -> dict[str, set[str]]:
    return {m: imports_of((PACKAGE / f"{m}.py").read_text()) - {m} for m in MODULES}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path (first module repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in sorted(edges[m]):
            if state.get(n) == 1:
                return path[path.index(n):] + [n]
            if n not in state and (cycle := visit(n)):
                return cycle
        state[m] = 2
        path.pop()
        return None

    for m in sorted(edges):
        if m not in state and (cycle := visit(m)):
            return cycle
    return None


def test_the_cycle_finder_finds_cycles_and_lazy_imports() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None
    lazy = "def f():\n    from .train import train\n    from lape_lib.models import x\n    import lape_lib.data\n"
    assert imports_of(lazy) == {"train", "models", "data"}


def test_imports_have_no_cycles() -> None:
    cycle = find_cycle(graph())
    assert cycle is None, f"import cycle: {' -> '.join(cycle or [])}"


@pytest.mark.parametrize("module", sorted(FLOORS))
def test_the_data_floors_stand_on_nothing_above_them(module: str) -> None:
    extra = graph()[module] - FLOORS[module]
    assert not extra, f"{module} imports {sorted(extra)}: the file and image floors must not climb to them"


def test_modules_stay_short() -> None:
    lines = {m: len((PACKAGE / f"{m}.py").read_text().splitlines()) for m in MODULES}
    assert lines["train"] < TRAIN_MAX_LINES, f"train.py has {lines['train']} lines; config, speed, files and images hold the rest"
    long = {m: n for m, n in lines.items() if m != "train" and n > MODULE_MAX_LINES}
    assert not long, f"modules over {MODULE_MAX_LINES} lines: {long}"


def test_readme_layout_names_every_module() -> None:
    readme = (ROOT / "README.md").read_text()
    layout = readme[readme.index("## Layout"):]
    order = re.findall(r"^- `(\w+)`", layout, re.M)
    listed = set(order)
    assert listed == set(MODULES), f"README's layout lacks {sorted(set(MODULES) - listed)}; lists unknown {sorted(listed - set(MODULES))}"
    edges = graph()
    for i, module in enumerate(order):  # the list is in import order: each imports only modules above it
        below = edges[module] - set(order[:i])
        assert not below, f"README lists {module} above {sorted(below)}, which it imports"
