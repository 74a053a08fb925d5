"""The layout's rules (README "Layout"), checked on the source with `ast`, each also shown to catch a
planted violation:

- pages/ holds only the routes app.py lists with st.Page (their shared parts live in ui/), and
  nothing imports a module from pages/;
- pages and ui never import sqlalchemy, boto3, torch, timm, onnxruntime, core.models or core.ml;
- core never imports streamlit; core.ml never imports core.db or core.models;
- no import cycle among core modules, nor among ui modules (deferred imports inside functions count:
  a cycle hidden in a function is still a cycle);
- no module over 400 lines, no function over 60 lines (core, pages, ui, jobs);
- project modules are imported at module top; an import inside a function is for a heavy module only
  (one that imports torch, timm, onnxruntime, optuna, scikit-learn & co at its top, directly or through
  another project module): deferring those keeps the app's start and RQ's forked work horses light.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
PAGES_BANNED = ("sqlalchemy", "boto3", "botocore", "torch", "timm", "onnxruntime", "core.models", "core.ml")
CORE_BANNED = ("streamlit",)
ML_BANNED = ("core.db", "core.models")
HEAVY_LIBRARIES = ("torch", "torchvision", "timm", "onnxruntime", "onnx", "optuna", "sklearn", "cleanlab", "scipy",
                   "pytorch_grad_cam", "usearch", "torch_lr_finder", "iterstrat", "pandas", "plotly", "umap")
"""Libraries slow to import (seconds, or CUDA state): a module importing one at its top is heavy."""


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def sources(*folders: str, root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name → file, for every .py under the folders."""
    found = {}
    for folder in folders:
        for path in sorted((root / folder).rglob("*.py")):
            found[module_name(path, root)] = path
    return found


def imported_names(source: str) -> set[str]:
    """Every dotted name a module imports, anywhere in it (`from a.b import c` gives a.b and a.b.c)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def banned_imports(modules: dict[str, Path], banned: Iterable[str]) -> list[str]:
    """'module imports name' for each import of a banned package or module (or anything below it)."""
    found = []
    for name, path in modules.items():
        for imported in sorted(imported_names(path.read_text())):
            if any(imported == ban or imported.startswith(ban + ".") for ban in banned):
                found.append(f"{name} imports {imported}")
    return found


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module → the modules of the set it imports. A package whose __init__ imports nothing (a
    docstring, as core/library/__init__.py) is no edge: `from core.library import images` names
    core.library.images; a package that re-exports (core.models) is a module like any other."""
    empty_packages = {name for name, path in modules.items()
                      if path.name == "__init__.py" and not imported_names(path.read_text())}
    graph = {}
    for name, path in modules.items():
        targets = {imported for imported in imported_names(path.read_text()) if imported in modules}
        graph[name] = targets - empty_packages - {name}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def top_level_imports(source: str) -> set[str]:
    """Dotted names imported at module level (in `if`/`try` blocks too, not under TYPE_CHECKING)."""
    names: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.If) and "TYPE_CHECKING" not in ast.unparse(node.test):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                    visit(block)

    visit(ast.parse(source).body)
    return names


def heavy_modules(modules: dict[str, Path]) -> set[str]:
    """Project modules that import a heavy library at their top, directly or through each other."""
    tops = {name: top_level_imports(path.read_text()) for name, path in modules.items()}
    heavy: set[str] = set()
    while True:
        grown = {name for name, names in tops.items() if name not in heavy and any(
            imported.split(".")[0] in HEAVY_LIBRARIES or imported in heavy or imported.rsplit(".", 1)[0] in heavy
            for imported in names)}
        if not grown:
            return heavy
        heavy |= grown


def deferred_light_imports(modules: dict[str, Path]) -> list[str]:
    """'module.function imports name' for each project import inside a function that is not heavy."""
    heavy = heavy_modules(modules)
    found = []
    for name, path in modules.items():
        for function in ast.walk(ast.parse(path.read_text())):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(function):
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    imported = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
                elif isinstance(node, ast.Import):
                    imported = [alias.name for alias in node.names]
                else:
                    continue
                if imported[0] in modules and imported[0] != name and not any(
                        part in heavy for part in imported):
                    found.append(f"{name}.{function.name} imports {imported[0]}")
    return sorted(set(found))


def route_files(app_source: str) -> set[str]:
    """The files app.py hands to st.Page (string literals, as `st.Page("pages/images.py", ...)`)."""
    routes = set()
    for node in ast.walk(ast.parse(app_source)):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "Page"
                and node.args and isinstance(node.args[0], ast.Constant)):
            routes.add(node.args[0].value)
    return routes


def non_route_pages(root: Path = ROOT) -> list[str]:
    """Files in pages/ that app.py does not route to: shared parts belong in ui/."""
    routes = route_files((root / "app.py").read_text())
    return sorted(path for path in (str(p.relative_to(root)) for p in (root / "pages").rglob("*.py"))
                  if path not in routes)


def long_modules(modules: dict[str, Path], limit: int = MAX_MODULE_LINES) -> list[str]:
    return [f"{name}: {count} lines" for name, path in modules.items()
            if (count := len(path.read_text().splitlines())) > limit]


def long_functions(modules: dict[str, Path], limit: int = MAX_FUNCTION_LINES) -> list[str]:
    found = []
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > limit:
                    found.append(f"{name}.{node.name}: {length} lines")
    return found


# ------------------------------------------------------------------------------- the rules, on the repo

def test_pages_import_no_database_storage_or_ml():
    assert banned_imports(sources("pages", "ui") | {"app": ROOT / "app.py"}, PAGES_BANNED) == []


def test_pages_holds_only_routes():
    assert non_route_pages() == []
    assert banned_imports(sources("core", "ui", "jobs", "tests") | {"app": ROOT / "app.py"}, ("pages",)) == []


def test_core_never_imports_streamlit():
    assert banned_imports(sources("core"), CORE_BANNED) == []


def test_ml_has_no_database_code():
    assert banned_imports(sources("core/ml"), ML_BANNED) == []


def test_no_import_cycle_among_core_modules():
    assert import_cycles(import_graph(sources("core"))) == []


def test_no_import_cycle_among_the_pages_parts():
    assert import_cycles(import_graph(sources("ui"))) == []


def test_project_modules_are_imported_at_module_top():
    assert deferred_light_imports(sources("core", "jobs", "ui", "pages")) == []


def test_no_module_over_400_lines():
    assert long_modules(sources("core", "pages", "ui", "jobs")) == []


def test_no_function_over_60_lines():
    assert long_functions(sources("core", "pages", "ui", "jobs")) == []


# --------------------------------------------------------------------- each rule catches a planted violation

@pytest.fixture
def planted(tmp_path):
    """Write modules into a throwaway tree: planted({"core/a.py": "..."}) → the tree's root."""
    def plant(files: dict[str, str]) -> Path:
        for relative, text in files.items():
            path = tmp_path / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        return tmp_path
    return plant


@pytest.mark.parametrize("line", ["import sqlalchemy", "from sqlalchemy.orm import Session", "import boto3",
                                  "import torch", "from timm import create_model", "import onnxruntime as ort",
                                  "from core.models import ClsImage", "from core.ml.inference import Predictor",
                                  "from core import models", "from core import ml"])
def test_a_page_importing_a_banned_module_is_caught(planted, line):
    root = planted({"pages/bad.py": f"def render():\n    {line}\n", "pages/good.py": "import streamlit as st\n"})
    found = banned_imports(sources("pages", root=root), PAGES_BANNED)
    assert found and all(entry.startswith("pages.bad imports ") for entry in found)


def test_a_page_that_is_no_route_is_caught(planted):
    root = planted({"app.py": 'import streamlit as st\nst.navigation([st.Page("pages/home.py", title="Home")])\n',
                    "pages/home.py": "import streamlit as st\n", "pages/home_parts.py": "def part():\n    pass\n"})
    assert non_route_pages(root) == ["pages/home_parts.py"]


def test_core_importing_streamlit_is_caught(planted):
    root = planted({"core/bad.py": "import streamlit as st\n"})
    assert banned_imports(sources("core", root=root), CORE_BANNED) == ["core.bad imports streamlit"]


def test_ml_reaching_the_database_is_caught(planted):
    root = planted({"core/ml/bad.py": "def load():\n    from core.db import session_scope\n"})
    assert banned_imports(sources("core/ml", root=root), ML_BANNED) == [
        "core.ml.bad imports core.db", "core.ml.bad imports core.db.session_scope"]


def test_a_cycle_through_a_re_exporting_package_is_caught(planted):
    root = planted({"core/__init__.py": "", "core/orm/__init__.py": "from core.orm.tables import Table\n",
                    "core/orm/tables.py": "from core.helpers import shared\n",
                    "core/helpers.py": "def shared():\n    from core.orm import Table\n"})
    assert import_cycles(import_graph(sources("core", root=root))) == [
        ["core.helpers", "core.orm", "core.orm.tables"]]


def test_a_cycle_hidden_in_a_function_is_caught(planted):
    root = planted({"core/__init__.py": "", "core/area/__init__.py": "",
                    "core/area/a.py": "from core.area import b\n",
                    "core/area/b.py": "def late():\n    from core.area.a import thing\n",
                    "core/area/c.py": "from core.area import a\n"})
    assert import_cycles(import_graph(sources("core", root=root))) == [["core.area.a", "core.area.b"]]


def test_long_modules_and_functions_are_caught(planted):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    root = planted({"core/long.py": f"def long():\n{body}\n" + "\n" * (MAX_MODULE_LINES - MAX_FUNCTION_LINES)})
    modules = sources("core", root=root)
    assert long_functions(modules) == [f"core.long.long: {MAX_FUNCTION_LINES + 1} lines"]
    assert long_modules(modules) == [f"core.long: {MAX_MODULE_LINES + 1} lines"]


def test_a_deferred_import_of_a_light_module_is_caught(planted):
    root = planted({"core/__init__.py": "", "core/light.py": "import json\n",
                    "core/heavy.py": "import torch\n", "core/heavier.py": "from core import heavy\n",
                    "core/user.py": ("def late():\n    from core.light import x\n"
                                     "def fine():\n    from core.heavy import y\n    from core import heavier\n")})
    modules = sources("core", root=root)
    assert heavy_modules(modules) == {"core.heavy", "core.heavier"}
    assert deferred_light_imports(modules) == ["core.user.late imports core.light"]
