"""The shape of the code: one job per module, an import graph that is a DAG, README's map true.

Static checks over the source (ast, no imports), so they cost a second:
  * every module of mat_jax/ and data_prep/ opens with a docstring and has at most 400 lines;
  * project modules are imported at module level only (a function-level import of a project
    module is how a cycle gets dodged), except the backends in LAZY_BACKENDS, and the import
    graph (those included) has no cycle;
  * mat_jax never imports data_prep (data_prep builds on mat_jax's schema and face library);
    only mat_jax.main imports the trainer;
  * code reads config values as attributes (`config.x`), never `config.get(x, default)`:
    defaults live in the config files;
  * README's layout table names every module and package, and every path it names exists;
  * README and docs/ link only to files inside the repository.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("mat_jax", "data_prep", "configs")
MAX_LINES = 400
# Imported where chosen, for a reason other than a cycle: the ONNX path of predict must not
# import JAX (so not `inference`), and the converter needs the optional `onnx` extra.
LAZY_BACKENDS = {
    ("mat_jax.predict", "mat_jax.inference"),
    ("mat_jax.predict", "mat_jax.onnx_backend"),
    ("mat_jax.export", "mat_jax.interop.to_onnx"),
}


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


MODULES = _modules()


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(name: str, path: Path) -> tuple[set[str], list[tuple[int, str]]]:
    """(project modules imported at module level, [(line, module)] imported inside functions)."""
    tree = ast.parse(path.read_text())
    top, nested = set(), []
    is_package = path.name == "__init__.py"

    def targets(node) -> list[str]:
        if isinstance(node, ast.Import):
            return [a.name for a in node.names]
        base = _resolve(node, name, is_package)
        # `from pkg import mod` imports pkg.mod when that is a module, else a name of pkg.
        return [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]

    def visit(node, inside_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                for target in targets(child):
                    if target.split(".")[0] in PACKAGES:
                        (nested.append((child.lineno, target)) if inside_function else top.add(target))
            visit(child, inside_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))

    visit(tree, False)
    return top, nested


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_has_a_docstring_and_one_screenful_of_jobs(name):
    path = MODULES[name]
    text = path.read_text()
    lines = text.count("\n")
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines (> {MAX_LINES}): split it by job"
    if text.strip():
        assert ast.get_docstring(ast.parse(text)), f"{path.relative_to(ROOT)} opens with no docstring"


def test_no_function_level_imports_of_project_modules():
    nested = [f"{MODULES[m].relative_to(ROOT)}:{line} imports {target}"
              for m, (_, inner) in GRAPH.items() for line, target in inner if (m, target) not in LAZY_BACKENDS]
    assert not nested, "import project modules at the top (a DAG needs no dodging):\n" + "\n".join(nested)


def test_the_import_graph_is_a_dag():
    edges = {m: {t for t in top | {t for _, t in inner} if t in MODULES and t != m}
             for m, (top, inner) in GRAPH.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for t in sorted(edges[m]):
            if state.get(t) == 1:
                cycle = stack[stack.index(t):] + [t]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)


def test_dependencies_point_one_way():
    for m, (top, inner) in GRAPH.items():
        imported = top | {t for _, t in inner}
        if m.startswith("mat_jax"):
            assert not any(t.startswith("data_prep") for t in imported), f"{m} imports data_prep"
        if m.startswith("mat_jax") and m not in ("mat_jax.main", "mat_jax.train"):
            assert "mat_jax.train" not in imported, f"{m} imports the trainer (only mat_jax.main may)"
        if m.startswith("configs"):
            assert all(t.startswith("configs") for t in imported), f"configs are data: {m} imports {imported}"


def test_config_values_are_read_as_attributes():
    found = []
    for name, path in MODULES.items():
        if not name.startswith("mat_jax"):
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"\bconfig(\.\w+)*\.get\(", line):
                found.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not found, "defaults belong in configs/, read config.x:\n" + "\n".join(found)


def _layout_table() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| `")]


def test_readme_layout_names_every_module_and_only_real_paths():
    rows = _layout_table()
    assert rows, "README.md has no layout table"
    named: set[str] = set()
    for row in rows:
        cell = row.split("|")[1]
        for path in re.findall(r"`([^`]+)`", cell):
            assert (ROOT / path).exists(), f"README's layout names {path}, which does not exist"
            named.add(path.rstrip("/"))
    for row in rows:  # modules named in the description column of a package's row
        cell = row.split("|")[1]
        package = re.findall(r"`([^`]+)/`", cell)
        for module in re.findall(r"`(\w+\.py)`", row.split("|")[2]):
            for p in package:
                named.add(f"{p}/{module}")
    missing = []
    for name, path in MODULES.items():
        rel = path.relative_to(ROOT)
        if rel.name == "__init__.py" or rel.parts[0] == "configs":
            continue
        if str(rel) not in named:
            missing.append(str(rel))
    assert not missing, "README's layout table does not mention: " + ", ".join(missing)


@pytest.mark.parametrize("page", ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))])
def test_pages_link_only_to_files_in_the_repository(page):
    path = ROOT / page
    for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text()):
        if re.match(r"[a-z]+://", target) or target.startswith("#"):
            continue
        resolved = (path.parent / target.split("#")[0]).resolve()
        assert resolved.is_relative_to(ROOT), f"{page} links outside the repository: {target}"
        assert resolved.exists(), f"{page} links to {target}, which does not exist"


def test_the_files_scheduled_first_exist():
    from conftest import SLOW_FILES_FIRST

    missing = [name for name in SLOW_FILES_FIRST if not (ROOT / "tests" / name).is_file()]
    assert not missing, f"conftest.SLOW_FILES_FIRST names test files that do not exist: {missing}"
