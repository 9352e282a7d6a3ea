"""House rules of the code base, checked from the source: no import cycle, small modules, short signatures."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "bam"
MAX_LINES = 400
MAX_PARAMS = 6


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    """``if TYPE_CHECKING:`` blocks hold annotations only."""
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def _imports(tree: ast.Module, module: str, is_package: bool) -> set[str]:
    """Modules ``module`` imports, at module level or inside functions (``if TYPE_CHECKING:``
    blocks aside: they hold annotations only). A function-level import defers a cycle, it does
    not remove it, so both count."""
    found: set[str] = set()
    pending: list[ast.AST] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            pending.extend(node.orelse)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = module.split(".") if is_package else module.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join(pkg + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
        else:
            pending.extend(ast.iter_child_nodes(node))
    return found


def _graph() -> dict[str, set[str]]:
    """Import edges between bam modules (an import of a.b.c also imports the packages a and a.b)."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for imp in _imports(tree, name, path.name == "__init__.py"):
            parts = imp.split(".")
            for i in range(1, len(parts) + 1):
                target = ".".join(parts[:i])
                if target in mods and target != name and not name.startswith(target + "."):
                    graph[name].add(target)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                return [*stack[stack.index(m):], m]
            if m not in state and (found := visit(m)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_no_import_cycle_in_the_package() -> None:
    cycle = _cycle(_graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_modules_are_small() -> None:
    big = {str(p.relative_to(ROOT.parent)): n for p in ROOT.rglob("*.py")
           if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines: {big}"


def _exempt(fn: ast.FunctionDef | ast.AsyncFunctionDef, cls: ast.ClassDef | None) -> bool:
    """Click commands, model constructors and registered methods may take many parameters."""
    decorators = [ast.unparse(d) for d in fn.decorator_list]
    if any(".command(" in d or d.startswith("click.") or ".group(" in d for d in decorators):
        return True
    if any(d.startswith(("register_model(", "register_method(")) for d in decorators):
        return True  # a method's keyword parameters are its hyperparameters, like a model constructor's
    if cls is not None and fn.name == "__init__":
        bases = {ast.unparse(b) for b in cls.bases}
        return bool(bases & {"nn.Module", "torch.nn.Module", "Module"})
    return False


def test_functions_take_at_most_six_parameters() -> None:
    long = []
    for path in sorted(ROOT.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        todo: list[tuple[ast.AST, ast.ClassDef | None]] = [(tree, None)]
        while todo:
            node, cls = todo.pop()
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.ClassDef):
                    todo.append((child, child))
                elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    a = child.args
                    names = [x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs) if x.arg not in ("self", "cls")]
                    if len(names) > MAX_PARAMS and not _exempt(child, cls):
                        long.append(f"{path.relative_to(ROOT.parent)}:{child.lineno} {child.name}({len(names)})")
                    todo.append((child, None))
    assert not long, f"functions with more than {MAX_PARAMS} parameters: {long}"


def test_imports_inside_functions_count_and_type_checking_ones_do_not() -> None:
    src = ("from typing import TYPE_CHECKING\nimport bam.a\nif TYPE_CHECKING:\n    import bam.hint\n"
           "def f():\n    from bam.b import c\n    class K:\n        def g(self):\n            from . import d\n")
    found = _imports(ast.parse(src), "bam.pkg.mod", False)
    assert {"bam.a", "bam.b", "bam.b.c", "bam.pkg", "bam.pkg.d"} <= found and "bam.hint" not in found
