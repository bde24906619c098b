"""The package's shape: no import cycle among rankscope's modules, counting imports inside
functions (deferring an import to dodge a cycle is still a cycle), small modules and small
functions."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "rankscope"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
# A ratchet while the redesign lands: modules still in a cycle / still over the size limit.
# Each must shrink, never grow; an entry that no longer applies must be removed.
STILL_IN_A_CYCLE: set[str] = set()
STILL_TOO_BIG: dict[str, int] = {}


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _target(mods: dict[str, Path], dotted: str) -> str | None:
    """The deepest module of the package that `dotted` names."""
    parts = dotted.split(".")
    while parts and ".".join(parts) not in mods:
        parts.pop()
    return ".".join(parts) or None


def imports_of(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """Every rankscope module `name` imports, at any depth (top level, functions, classes),
    plus the packages whose __init__ such an import runs first."""
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                here = name.split(".") if is_pkg else name.split(".")[:-1]
                here = here[: len(here) - (node.level - 1)]
                base = ".".join(here + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names]
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
            and node.args
        ):
            arg = node.args[0]
            if isinstance(arg, ast.JoinedStr) and isinstance(arg.values[0], ast.Constant):
                prefix = str(arg.values[0].value)
                names = [m for m in mods if m.startswith(prefix) and m != prefix]
            elif isinstance(arg, ast.Constant):
                names = [str(arg.value)]
        for dotted in names:
            if dotted.split(".")[0] != PACKAGE or (target := _target(mods, dotted)) is None:
                continue
            parts = target.split(".")
            chain = [".".join(parts[:i]) for i in range(2, len(parts) + 1)]
            found |= {m for m in chain if m in mods and not name.startswith(m + ".")}
    found.discard(name)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(name, path, mods) for name, path in mods.items()}


def test_the_graph_sees_imports_inside_functions(tmp_path):
    """The checker itself: a cycle closed by a function-level import is found."""
    pkg = tmp_path / PACKAGE
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from rankscope.b import f\n")
    (pkg / "b.py").write_text("def f():\n    from rankscope import a\n")
    mods = {f"rankscope.{m}": pkg / f"{m}.py" for m in "ab"} | {"rankscope": pkg / "__init__.py"}
    g = {n: imports_of(n, p, mods) for n, p in mods.items()}
    assert cycles(g) == [["rankscope.a", "rankscope.b"]]


def test_no_import_cycle_among_rankscope_modules():
    in_cycles = {m for comp in cycles(graph()) for m in comp}
    assert in_cycles <= STILL_IN_A_CYCLE, f"new modules in a cycle: {in_cycles - STILL_IN_A_CYCLE}"
    assert STILL_IN_A_CYCLE <= in_cycles, f"no longer cyclic: {STILL_IN_A_CYCLE - in_cycles}"


def test_modules_stay_small():
    big = {
        name: n
        for name, path in modules().items()
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    grown = {m: n for m, n in big.items() if n > STILL_TOO_BIG.get(m, MAX_MODULE_LINES)}
    assert not grown, f"modules over {MAX_MODULE_LINES} lines (or grown): {grown}"
    assert set(STILL_TOO_BIG) <= set(big), f"now small: {set(STILL_TOO_BIG) - set(big)}"


def long_functions(path: Path) -> dict[str, int]:
    """{qualified name: lines} of the functions (methods, nested ones) over the limit, counted
    from the first decorator to the last line."""
    out: dict[str, int] = {}

    def walk(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                first = min([child.lineno] + [d.lineno for d in child.decorator_list])
                if (n := child.end_lineno - first + 1) > MAX_FUNCTION_LINES:
                    out[prefix + child.name] = n
                walk(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                walk(child, f"{prefix}{child.name}.")

    walk(ast.parse(path.read_text()), "")
    return out


def test_the_function_size_check_counts_decorators_and_nesting(tmp_path):
    """The checker itself: a method's decorator counts, a short function is not reported."""
    body = "".join(f"        x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES - 1))
    path = tmp_path / "m.py"
    path.write_text(f"def g():\n    pass\n\n\nclass C:\n    @staticmethod\n    def f():\n{body}")
    assert long_functions(path) == {"C.f": MAX_FUNCTION_LINES + 1}


def test_functions_stay_small():
    long = {f"{m}.{f}": n for m, p in modules().items() for f, n in long_functions(p).items()}
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"
