"""The code's shape: which module may import which, and how large a module may grow.

Commands (modules with a ``main``: ``python -m hpo.<command>``) are thin layers over library
modules; they import library modules, never each other, and no import (module-level or inside a
function) closes a cycle anywhere in hpo/ or models/.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("hpo", "models")
MAX_LINES = 400

# Known exceptions, each with the reason it exists and what ends it.
COMMAND_IMPORTS_ALLOWED: set[tuple[str, str]] = set()  # none: commands import library modules


def _modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _imported(name: str, path: Path) -> set[str]:
    """The hpo/models modules that ``name`` imports anywhere in its file (functions included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's package, up level - 1 more
                package = name if _is_package(name) else name.rpartition(".")[0]
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module
            # ``from pkg import mod`` imports the module pkg.mod; ``from pkg import name``, pkg.
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                for alias in node.names
            ]
        else:
            continue
        found |= {t for t in targets if t in MODULES and t != name}
    return found


GRAPH = {name: _imported(name, path) for name, path in MODULES.items()}
COMMANDS = {
    name
    for name, path in MODULES.items()
    if any(
        isinstance(node, ast.FunctionDef) and node.name == "main"
        for node in ast.parse(path.read_text()).body
    )
}


def _cycle() -> list[str] | None:
    """One import cycle as a path ``a -> b -> ... -> a``, or None."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return path[path.index(node) :] + [node]
        if node in done:
            return None
        for target in sorted(GRAPH[node]):
            cycle = visit(target, [*path, node])
            if cycle:
                return cycle
        done.add(node)
        return None

    for start in sorted(GRAPH):
        cycle = visit(start, [])
        if cycle:
            return cycle
    return None


def test_the_walk_sees_every_command_and_imports_inside_functions():
    assert {"hpo.search", "hpo.narrow", "hpo.report", "hpo.export", "hpo.train"} <= COMMANDS
    assert "hpo.note" in GRAPH["hpo.study"]  # imported inside create_study


def test_no_import_cycle_anywhere_in_hpo_or_models():
    cycle = _cycle()
    assert cycle is None, " -> ".join(cycle)


def test_commands_import_library_modules_never_each_other():
    crossing = {(c, t) for c in COMMANDS for t in GRAPH[c] if t in COMMANDS}
    assert crossing <= COMMAND_IMPORTS_ALLOWED, sorted(crossing - COMMAND_IMPORTS_ALLOWED)


def test_library_modules_never_import_a_command():
    crossing = {(m, t) for m in GRAPH if m not in COMMANDS for t in GRAPH[m] if t in COMMANDS}
    assert not crossing, sorted(crossing)


def test_models_never_import_hpo():
    assert not {(m, t) for m in GRAPH if m.startswith("models") for t in GRAPH[m] if t[:3] == "hpo"}


@pytest.mark.parametrize(
    "path", sorted(str(p.relative_to(ROOT)) for p in MODULES.values()), ids=str
)
def test_every_source_module_has_at_most_400_lines(path):
    lines = len((ROOT / path).read_text().splitlines())
    assert lines <= MAX_LINES, f"{path} has {lines} lines; split it by idea"


def test_importing_the_report_loads_neither_the_runner_nor_joblib():
    code = (
        "import hpo.report, sys; "
        "assert 'hpo.runner' not in sys.modules and 'joblib' not in sys.modules, "
        "sorted(m for m in sys.modules if m.startswith(('hpo.', 'joblib')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},  # this checkout, not an installed copy
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


def test_the_package_docstring_maps_every_module():
    import hpo

    # A map line: four spaces, the module name(s), two or more spaces, what it owns.
    rows = re.findall(r"^ {4}([a-z_]+(?:, [a-z_]+)*) {2,}\S", hpo.__doc__, flags=re.MULTILINE)
    named = {name for row in rows for name in row.split(", ")}
    unmapped = [m for m in MODULES if not _is_package(m) and m.rpartition(".")[2] not in named]
    assert not unmapped, f"add a line for each to hpo/__init__.py's map: {unmapped}"


def test_only_cli_writes_the_one_line_error_and_its_exit_code():
    # Every command ends bad input through cli.fail (or cli.Parser), never by hand.
    by_hand = [
        name
        for name, path in MODULES.items()
        if name != "hpo.cli" and re.search(r"error: \{|EXIT_BAD_INPUT|return 2\b", path.read_text())
    ]
    assert not by_hand, by_hand
