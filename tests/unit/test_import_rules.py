"""The house's layering: which part may import which, and no import cycle anywhere.

Read from the sources (imports at any depth, lazy ones included), so a cycle or an upward
import fails here before it confuses a reader. The table is docs/architecture.md's
"Layers" section; a new part of the house gets a row in both.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("gateway", "adapters", "consent")

# Each part and the parts it may import (besides itself), lowest layer first.
BASE = {"gateway.pb", "gateway.base"}
ALLOWED: dict[str, set[str]] = {
    "gateway.pb": set(),
    "gateway.base": {"gateway.pb"},
    "gateway.storage": {"gateway.base"},
    "gateway.telemetry": {"gateway.base"},
    # Running as a service (processes, probes): knows nothing of the exchange.
    "gateway.runtime": set(),
    "adapters": BASE,
    "consent": BASE | {"gateway.storage"},
    "gateway.security": BASE,
    "gateway.audit": BASE | {"gateway.storage", "gateway.security"},
    "gateway.pipeline": BASE | {"adapters", "gateway.telemetry", "gateway.security"},
    "gateway.engine": BASE
    | {
        "adapters",
        "consent",
        "gateway.security",
        "gateway.audit",
        "gateway.pipeline",
        "gateway.telemetry",
    },
    "gateway.services": BASE
    | {
        "adapters",
        "consent",
        "gateway.security",
        "gateway.audit",
        "gateway.pipeline",
        "gateway.engine",
        "gateway.telemetry",
        "gateway.contests",
        "gateway.events",
        "gateway.transparency",
    },
    # The DCI facade: another edge of the engine, beside the gRPC services (which it does
    # not import: the server hands it RegistryExchange's method table).
    "gateway.dci": BASE
    | {
        "adapters",
        "gateway.security",
        "gateway.audit",
        "gateway.pipeline",
        "gateway.engine",
        "gateway.events",
    },
    "gateway.sdk": BASE | {"gateway.security", "consent"},
    "gateway.config": BASE | {"adapters"},
    # The console is a gateway client (the SDK) with its own store; the audit part for
    # record hashing and evidence bundles. Never the server, engine or services.
    "gateway.console": BASE
    | {
        "gateway.storage",
        "gateway.sdk",
        "gateway.audit",
        "gateway.security",
        "consent",
        "gateway.transparency",
    },
    # Contest cases: a pure state machine and its stores; the services, the console and the
    # portal call it, never the other way round.
    "gateway.contests": {"gateway.base", "gateway.storage"},
    # Registry events: the log and its stores, and the ingester that reads the registries'
    # journals (adapters) and shows scores as bands (the programmes' catalogue).
    "gateway.events": BASE | {"gateway.storage", "adapters", "gateway.pipeline"},
    # Transparency: the month's counts (pure), their disclosure control (pure), the
    # signed publication, and the readers of the stores they are counted from.
    "gateway.transparency": BASE
    | {
        "gateway.audit",
        "gateway.contests",
        "gateway.events",
        "gateway.pipeline",
        "consent",
        "adapters",
    },
    # The reference citizen portal: a gateway client like the console, whose link to the
    # gateway, words and pages it shares.
    "gateway.portal": BASE
    | {"gateway.sdk", "gateway.security", "consent", "gateway.console", "gateway.contests"},
}
# The composition root and the command line may import any part (never each other's
# callers: nothing imports them but the CLI).
TOP = {"gateway.server": {"gateway.cli"}, "gateway.cli": set()}
PARTS = sorted([*ALLOWED, *TOP], key=len, reverse=True)


def _part(module: str) -> str | None:
    return next((p for p in PARTS if module == p or module.startswith(p + ".")), None)


def _modules() -> Iterator[tuple[str, Path]]:
    """Every module of the house, the generated code included (it is imported, not read)."""
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            yield name.removesuffix(".__init__"), path


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The modules of the house that `path` imports (a name imported from a module counts
    as that module; a submodule imported from a package, as the submodule)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in modules else node.module)
    return {name for name in found if name in modules}


def _graph() -> dict[str, set[str]]:
    modules = dict(_modules())
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        if _part(name) == "gateway.pb":
            continue  # generated: its imports are protobuf's
        ancestors = {name.rsplit(".", n)[0] for n in range(1, name.count(".") + 1)}
        graph[name] = _imports(path, set(modules)) - ancestors - {name}
    return graph


def test_every_module_belongs_to_a_part() -> None:
    packages = set(PACKAGES)
    assert [name for name, _ in _modules() if _part(name) is None and name not in packages] == []


def test_each_part_imports_only_the_parts_below_it() -> None:
    upward = sorted(
        f"{module} -> {target}"
        for module, targets in _graph().items()
        for target in targets
        if (src := _part(module)) != (dst := _part(target))
        and src in ALLOWED
        and dst not in ALLOWED[src]
    )
    assert upward == []


def test_nothing_imports_the_composition_root_or_the_command_line() -> None:
    inward = sorted(
        f"{module} -> {target}"
        for module, targets in _graph().items()
        for target in targets
        if (dst := _part(target)) in TOP and (src := _part(module)) != dst and src not in TOP[dst]
    )
    assert inward == []


def test_no_module_imports_itself_back_through_others() -> None:
    graph = _graph()
    cycles: list[list[str]] = []
    for component in _strongly_connected(graph):
        if len(component) > 1:
            cycles.append(sorted(component))
    assert cycles == []


def _strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm, iterative (the graph is small, but recursion is not needed)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component: set[str] = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    components.append(component)
            elif child not in index:
                index[child] = low[child] = counter
                counter += 1
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph.get(child, ())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return components


# grpc is a transport: only the edges speak it. The services and the door (the gateway's
# edge), the SDK and the CLI (a partner's), the composition root, and the adapters
# that are themselves gRPC transports (a remote registry's client and journal reader, the
# reference backend).
GRPC_EDGES = ("gateway.services", "gateway.sdk", "gateway.cli", "gateway.server", "gateway.pb")
GRPC_TRANSPORTS = {"adapters.remote", "adapters.remote_journal", "adapters.backend"}


def test_only_the_edges_import_grpc() -> None:
    inner = []
    for name, path in _modules():
        if _part(name) in GRPC_EDGES or name in GRPC_TRANSPORTS:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            if any(n == "grpc" or n.startswith(("grpc.", "grpc_")) for n in names):
                inner.append(name)
    assert inner == []
