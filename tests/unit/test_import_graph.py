"""The package's import graph, read from the source with `ast`: no cycles among tq_gguf's modules,
and every import inside a function marked with the reason it is deferred.

Imports belong at the top of a module. One is deferred only where a heavy or not yet
installed dependency is kept out on purpose (numpy, gguf and llama_cpp for `--help` and
`tq-gguf build`, matplotlib for plots), and its line says so: `# deferred: <reason>`.
Cycles count through deferred imports too: a deferred import that closes a cycle only hides it.

    python tests/unit/test_import_graph.py    # prints the graph's size and every deferred import
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "tq_gguf"
MARK = "# deferred:"
# The subpackages in the order they may import each other: each only those before it (docs/DEVELOPING.md "Layout").
LAYERS = ("kv", "nativebuild", "native", "reference", "gguf", "runtime", "analysis", "cli")
# The one import against that order, deferred: CacheConfig's validate() and llama_kwargs() ask the
# installed build which types it has and their ggml ids.
UPWARD = {("tq_gguf.kv.cacheconfig", "tq_gguf.native.typeids")}


@dataclass(frozen=True)
class Import:
    module: str      # the importing module
    target: str      # what it imports: a tq_gguf module, or another top-level name
    line: int
    deferred: bool   # inside a function or class body
    reason: str | None  # the text after MARK on the import's lines


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def _top_level(tree: ast.Module) -> set[int]:
    """ids of the import nodes at module level (including inside module-level if/try)."""
    out, todo = set(), list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            out.add(id(node))
        elif isinstance(node, (ast.If, ast.Try)):
            todo += node.body + node.orelse + getattr(node, "finalbody", []) + \
                [n for h in getattr(node, "handlers", []) for n in h.body]
    return out


def imports() -> list[Import]:
    known = modules()
    found = []
    for module, path in known.items():
        source = path.read_text()
        lines = source.splitlines()
        tree = ast.parse(source)
        top = _top_level(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(node, module, path.name == "__init__.py")
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
            else:
                continue
            text = " ".join(lines[node.lineno - 1: node.end_lineno])
            reason = text.split(MARK, 1)[1].strip() if MARK in text else None
            for target in dict.fromkeys(targets):
                found.append(Import(module, target, node.lineno, id(node) not in top, reason))
    return found


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected group of modules that import each other."""
    found, state = [], {}  # state: 1 on the current path, 2 done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                found.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    edges: dict[str, set[str]] = {m: set() for m in known}
    for imp in imports():
        if imp.target in known and imp.target != imp.module:
            edges[imp.module].add(imp.target)
    return edges


def test_no_import_cycles():
    found = cycles(graph())
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_every_deferred_import_says_why():
    unexplained = [f"{imp.module}:{imp.line} imports {imp.target}" for imp in imports()
                   if imp.deferred and not imp.reason]
    assert not unexplained, (f"imports inside functions without a `{MARK} <reason>` comment "
                             f"(move them to the top of the module):\n" + "\n".join(unexplained))


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 2 and parts[1] in LAYERS else None


def test_subpackages_import_only_earlier_ones():
    upward = {(imp.module, imp.target) for imp in imports()
              if None not in (_layer(imp.module), _layer(imp.target)) and _layer(imp.target) > _layer(imp.module)}
    assert upward == UPWARD, f"imports against the layer order {' < '.join(LAYERS)}: {sorted(upward - UPWARD)}"


def test_one_ffi_and_one_library_handle():
    """Every ggml declaration lives on native/ggml.py's one FFI, which opens the library once."""
    calls = []
    for module, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                if name in ("FFI", "dlopen", "cdef"):  # (kvstats opens NumPy's OpenBLAS with ctypes, not ggml)
                    calls.append((module, name))
    assert sorted(calls) == [("tq_gguf.native.ggml", "FFI"), ("tq_gguf.native.ggml", "cdef"),
                             ("tq_gguf.native.ggml", "dlopen")], calls


def test_the_graph_is_read():
    """The reader sees what it must: a known top-level edge and a known deferred import."""
    edges = graph()
    assert "tq_gguf.kv.cachetypes" in edges["tq_gguf.kv.cacheconfig"]
    assert any(i.module == "tq_gguf.native.llamacpp" and i.target == "llama_cpp" and i.deferred for i in imports())
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


if __name__ == "__main__":
    edges = graph()
    deferred = [i for i in imports() if i.deferred]
    print(f"{len(edges)} modules, {sum(map(len, edges.values()))} edges among them, "
          f"cycles: {cycles(edges) or 'none'}")
    print(f"{len(deferred)} deferred imports:")
    for imp in deferred:
        print(f"  {imp.module}:{imp.line} {imp.target}: {imp.reason or 'NO REASON GIVEN'}")
    sys.exit(1 if cycles(edges) or any(not i.reason for i in deferred) else 0)
