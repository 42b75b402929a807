"""The package's import graph: no cycle between subpackages, and the low layers import nothing above them."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lightning_fl"

def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _lazy_alias_nodes(tree: ast.Module, path: Path) -> set[int]:
    """Nodes inside a package ``__init__``'s module-level ``def __getattr__`` (the permitted lazy aliases)."""
    if path.name != "__init__.py":
        return set()
    return {id(node) for top in tree.body if isinstance(top, ast.FunctionDef) and top.name == "__getattr__"
            for node in ast.walk(top)}




def module_edges() -> set[tuple[str, str]]:
    """Every import of a ``lightning_fl`` module by a ``lightning_fl`` module, function-local and
    ``TYPE_CHECKING`` ones included."""
    edges = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        skip = _lazy_alias_nodes(tree, path)
        source = _module_name(path)
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            edges |= {(source, t) for t in targets if t == "lightning_fl" or t.startswith("lightning_fl.")}
    return edges


def subpackage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "lightning_fl"


def package_edges() -> dict[tuple[str, str], list[tuple[str, str]]]:
    """Subpackage edges, each with the module imports that make it (pending ones left out)."""
    out: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
    for source, target in sorted(module_edges()):
        a, b = subpackage(source), subpackage(target)
        if a != b and b != "lightning_fl":
            out[(a, b)].append((source, target))
    return out


def strongly_connected(nodes: set[str], edges: set[tuple[str, str]]) -> list[list[str]]:
    """Tarjan's strongly connected components."""
    succ: dict[str, list[str]] = defaultdict(list)
    for a, b in edges:
        succ[a].append(b)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in succ[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            components.append(sorted(component))

    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return components


def test_no_cycle_between_subpackages():
    assert len(module_edges()) > 100, f"the package's imports were not read from {PACKAGE}"
    edges = package_edges()
    nodes = {n for edge in edges for n in edge}
    cycles = [c for c in strongly_connected(nodes, set(edges)) if len(c) > 1]
    report = [
        f"{a}->{b}: {src} -> {dst}"
        for cycle in cycles for (a, b), imports in edges.items() if a in cycle and b in cycle for src, dst in imports
    ]
    assert not cycles, "import cycles between subpackages:\n" + "\n".join(report)


def test_low_layers_import_only_what_is_below_them():
    allowed = {
        "codecs": {"codecs", "exceptions", "seeding", "checks"},
        "server": {"server", "exceptions", "checks", "seeding"},
        "nn": {"nn", "checks", "exceptions"},
        "datamodules": {"datamodules", "checks", "exceptions", "json_files", "namespaces", "seeding"},
        "federation": {"federation", "checkpoint", "checks", "codecs", "datamodules", "exceptions", "namespaces",
                       "seeding", "server", "strategies"},
    }
    wrong = [
        f"{src} -> {dst}"
        for src, dst in sorted(module_edges())
        if subpackage(src) in allowed and subpackage(dst) not in allowed[subpackage(src)] | {"lightning_fl"}
    ]
    assert not wrong, "imports above the importing layer:\n" + "\n".join(wrong)


def test_lazy_aliases_resolve():
    from lightning_fl.nn import DropoutGroup, ShrunkModule, SubmodelPlan, TensorSlice, find_dropout_groups
    from lightning_fl.server import ClientStore, FlatState, TensorSpec

    assert FlatState.__module__ == "lightning_fl.federation.flat"
    assert {ClientStore.__module__, TensorSpec.__module__} == {"lightning_fl.federation.client_store",
                                                               "lightning_fl.federation.flat"}
    assert all(c.__module__.startswith("lightning_fl.algorithms.federated_dropout")
               for c in (DropoutGroup, ShrunkModule, SubmodelPlan, TensorSlice, find_dropout_groups))


def test_plug_ins_do_not_reach_for_the_host():
    """Algorithms and simulated devices see the runtime through contexts, never through the server callback."""
    host = {"lightning_fl.federation.host", "lightning_fl.callbacks.fedavg", "lightning_fl.callbacks",
            "lightning_fl.federation", "lightning_fl"}
    plug_in = ("lightning_fl.algorithms", "lightning_fl.systems")
    seam = {"lightning_fl.federation.algorithm", "lightning_fl.federation.context"}
    wrong = [
        f"{src} -> {dst}"
        for src, dst in sorted(module_edges())
        if (src.startswith(plug_in) or src in seam) and dst in host
    ]
    assert not wrong, "plug-ins importing the server callback:\n" + "\n".join(wrong)
