"""Which functions write, found by reading the source (AST), independently of any declaration.

A function *writes directly* when its body (nested functions and lambdas included):
- calls a session's add/add_all/delete/merge/flush or a bulk ORM write (bulk_save_objects, ...),
- builds an INSERT/UPDATE/DELETE (sqlalchemy insert/update/delete, `Table.__table__.insert()`,
  a textual statement starting with INSERT/UPDATE/DELETE),
- sets an attribute of a row it read through the session (`row.name = ...`: the caller's commit
  writes it),
- calls a storage's put/put_file/delete/copy, or records a job (core.jobs.queue.enqueue, core.jobs.rows.create_job).
It *writes* when it writes directly or calls (by name, through imports, `module.fn`, `self.method` or
a class's constructor) a core function that writes and is not a declared service: a declared service
checks the actor it is given, so a caller that passes one along is guarded by it.

Heuristics, stated: a receiver named like a session (`session`, `s`, `*session`) or a storage (`*stor*`)
is taken as one; calls through other objects are not followed. The discovery test cross-checks the
result with the declarations, so a miss here shows up as a declared service the scan thinks is
harmless (reported), never as a silent pass.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SESSION_WRITES = {"add", "add_all", "delete", "merge", "flush", "bulk_save_objects", "bulk_insert_mappings",
                  "bulk_update_mappings"}
STORAGE_WRITES = {"put", "put_file", "delete", "copy"}
DML_FUNCTIONS = {"sqlalchemy.insert", "sqlalchemy.update", "sqlalchemy.delete",
                 "sqlalchemy.dialects.postgresql.insert", "sqlalchemy.dialects.sqlite.insert"}
JOB_PRIMITIVES = {"core.jobs.queue.enqueue", "core.jobs.rows.create_job"}  # they record a job: a write by the caller
SESSION_NAME = re.compile(r"(^|\.)(s|session|\w*_session)$")
STORAGE_NAME = re.compile(r"stor", re.IGNORECASE)
DML_TEXT = re.compile(r"^\s*(insert|update|delete)\b", re.IGNORECASE)


@dataclass
class Function:
    qualname: str  # module.function or module.Class.method
    module: str
    path: Path
    lineno: int
    public: bool
    declared: bool
    direct: list[str] = field(default_factory=list)  # "line N: what"
    calls: set[str] = field(default_factory=set)  # qualnames in the scanned tree (resolved)


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(node: ast.AST, module: str) -> dict[str, str]:
    """Names bound by the import statements under `node`: local name → dotted target."""
    found: dict[str, str] = {}
    for item in ast.walk(node):
        if isinstance(item, ast.ImportFrom):
            base = item.module or ""
            if item.level:
                base = ".".join(module.split(".")[:-item.level] + ([base] if base else []))
            for alias in item.names:
                found[alias.asname or alias.name] = f"{base}.{alias.name}"
        elif isinstance(item, ast.Import):
            for alias in item.names:
                if alias.asname:
                    found[alias.asname] = alias.name
                else:
                    found[alias.name.split(".")[0]] = alias.name.split(".")[0]
    return found


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def _call_root(node: ast.AST) -> ast.AST:
    """`update(X).where(...).values(...)` → the innermost call `update(X)`."""
    while isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Call):
        node = node.func.value
    return node


def _is_declaration(decorator: ast.AST) -> bool:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    return (_dotted(target) or "").split(".")[-1] == "requires"


def _mentions_session(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Name) and SESSION_NAME.search(n.id) for n in ast.walk(node)) or any(
        isinstance(n, ast.Attribute) and SESSION_NAME.search(n.attr) for n in ast.walk(node))


class _BodyScan(ast.NodeVisitor):
    def __init__(self, fn: Function, names: dict[str, str], local_defs: set[str], class_name: str | None):
        self.fn, self.names, self.local_defs, self.class_name = fn, names, local_defs, class_name
        self.rows: set[str] = set()  # local names bound from a session read

    def resolve(self, node: ast.AST) -> str | None:
        dotted = _dotted(node)
        if dotted is None:
            return None
        head, _, rest = dotted.partition(".")
        if head == "self" and self.class_name and rest and "." not in rest:
            return f"{self.fn.module}.{self.class_name}.{rest}"
        if head in self.names:
            return self.names[head] + (f".{rest}" if rest else "")
        if head in self.local_defs:
            return f"{self.fn.module}.{dotted}"
        return None

    def note(self, node: ast.AST, what: str) -> None:
        self.fn.direct.append(f"line {node.lineno}: {what}")

    def _bind(self, target: ast.AST) -> None:
        """Names (plain or unpacked, never `x.attr` or `x[i]`) bound to what a session read returned."""
        if isinstance(target, ast.Name):
            self.rows.add(target.id)
        elif isinstance(target, (ast.Tuple, ast.List)):
            for item in target.elts:
                self._bind(item.value if isinstance(item, ast.Starred) else item)

    def _from_rows(self, value: ast.AST) -> bool:
        return _mentions_session(value) or any(isinstance(n, ast.Name) and n.id in self.rows for n in ast.walk(value))

    def visit_Assign(self, node: ast.Assign) -> None:
        if _mentions_session(node.value):
            for target in node.targets:
                self._bind(target)
        for target in node.targets:
            self._store(target)
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self._store(node.target)
        self.generic_visit(node)

    def visit_For(self, node: ast.For) -> None:
        if self._from_rows(node.iter):
            self._bind(node.target)
        self.generic_visit(node)

    def _store(self, target: ast.AST) -> None:
        if isinstance(target, (ast.Tuple, ast.List)):
            for item in target.elts:
                self._store(item.value if isinstance(item, ast.Starred) else item)
        elif isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id in self.rows:
            self.note(target, f"sets {target.value.id}.{target.attr} on a row read through the session")

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Attribute):
            receiver = ast.unparse(func.value)
            if func.attr in SESSION_WRITES and SESSION_NAME.search(receiver):
                self.note(node, f"{receiver}.{func.attr}()")
            elif func.attr in STORAGE_WRITES and STORAGE_NAME.search(receiver):
                self.note(node, f"{receiver}.{func.attr}()")
            elif func.attr in ("insert", "update", "delete") and receiver.endswith("__table__"):
                self.note(node, f"{receiver}.{func.attr}()")
            elif func.attr == "execute" and node.args:
                self._execute(node)
        if isinstance(func, ast.Name) and func.id == "setattr" and node.args and isinstance(node.args[0], ast.Name) \
                and node.args[0].id in self.rows:
            self.note(node, f"setattr on {node.args[0].id}")
        target = self.resolve(func)
        if target in DML_FUNCTIONS:
            self.note(node, f"builds {target.rsplit('.', 1)[1].upper()}")
        elif target in JOB_PRIMITIVES:
            self.note(node, f"queues a job ({target})")
        elif target and target.startswith("core."):
            self.fn.calls.add(target)
        self.generic_visit(node)

    def _execute(self, node: ast.Call) -> None:
        statement = _call_root(node.args[0])
        if isinstance(statement, ast.Call) and _dotted(statement.func) in ("text", "sqlalchemy.text") \
                and statement.args and isinstance(statement.args[0], ast.Constant) \
                and DML_TEXT.match(str(statement.args[0].value)):
            self.note(node, "executes a textual INSERT/UPDATE/DELETE")


def scan(directories=("core",), root: Path = ROOT) -> dict[str, Function]:
    """Every function and method under the directories (of `root`), with what it writes and whom it
    calls."""
    functions: dict[str, Function] = {}
    classes: dict[str, list[str]] = {}  # module.Class → its methods' qualnames
    for directory in directories:
        for path in sorted((root / directory).rglob("*.py")):
            module = module_name(path, root)
            tree = ast.parse(path.read_text(), filename=str(path))
            module_names = _imports(tree, module)
            local_defs = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
            for node in tree.body:
                if isinstance(node, ast.FunctionDef):
                    _add(functions, node, module, path, module_names, local_defs, None)
                elif isinstance(node, ast.ClassDef):
                    methods = [m for m in node.body if isinstance(m, ast.FunctionDef)]
                    classes[f"{module}.{node.name}"] = [f"{module}.{node.name}.{m.name}" for m in methods]
                    for method in methods:
                        _add(functions, method, module, path, module_names, local_defs, node.name)
    for fn in functions.values():  # a class's constructor called: its methods run on that object
        for target in list(fn.calls):
            fn.calls.update(classes.get(target, []))
        fn.calls &= set(functions)
    return functions


def _add(functions, node: ast.FunctionDef, module, path, module_names, local_defs, class_name) -> None:
    qualname = f"{module}.{class_name}.{node.name}" if class_name else f"{module}.{node.name}"
    public = not node.name.startswith("_") and not (class_name or "").startswith("_") \
        and not any(part.startswith("_") for part in module.split("."))
    fn = Function(qualname, module, path, node.lineno, public, any(_is_declaration(d) for d in node.decorator_list))
    names = {**module_names, **_imports(node, module)}
    scanner = _BodyScan(fn, names, local_defs, class_name)
    for statement in node.body:
        scanner.visit(statement)
    functions[qualname] = fn


def writers(functions: dict[str, Function]) -> dict[str, list[str]]:
    """Every function that writes, with one path to the write (`f → g: line N: what`)."""
    path: dict[str, list[str]] = {name: [f"{name}: {fn.direct[0]}"] for name, fn in functions.items() if fn.direct}
    changed = True
    while changed:
        changed = False
        for name, fn in functions.items():
            if name in path:
                continue
            for callee in sorted(fn.calls):
                if callee in path and not functions[callee].declared:
                    path[name] = [name, *path[callee]]
                    changed = True
                    break
    return path
