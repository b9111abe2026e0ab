"""The packages import downward only, and the light SDK imports nothing heavy; read with `ast`, never imported.

Every import of every module counts: module-level, function-local and `if TYPE_CHECKING:` ones alike.
A module may import its own layer and the layers below; an import of a higher layer, or a cycle
between packages, fails. The light SDK (`specroute`, `specroute.client`, `specroute.errors` and
every project module they reach) must not import any of HEAVY.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Layers, lowest first: (unit, the module prefixes that belong to it). The longest matching prefix
# decides, so `specroute.cli` is a tool while `specroute.engine` is the library.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("protos", ("protos",)),
    ("core", ("core",)),
    ("verifier_service", ("verifier_service",)),
    ("drafter_service", ("drafter_service",)),
    ("router", ("router",)),
    ("specroute", ("specroute",)),  # library, services app, SDK, zoo and offline steps
    ("tools", ("specroute.cli", "specroute.demo", "specroute.loadtest", "bench")),
]
PACKAGES = ("protos", "core", "verifier_service", "drafter_service", "router", "specroute", "bench")
LIGHT_SDK = ("specroute", "specroute.client", "specroute.errors")
HEAVY = ("torch", "transformers", "ray", "sklearn", "numpy", "pydantic")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))
            if "__pycache__" not in p.parts}


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, int]]:
    """(absolute module imported, line) for every import in the file; `from a import b` gives a.b
    when a.b is a project module, else a."""
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                found.append((sub if sub in MODULES else module, node.lineno))
    return found


def _layer(module: str) -> tuple[int, str] | None:
    best = None
    for rank, (unit, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > best[2]):
                best = (rank, unit, len(prefix))
    return None if best is None else best[:2]


def _edges() -> list[tuple[str, str, int, str]]:
    """(importer, imported project module, line, importer's file) for every import between project modules."""
    edges = []
    for name, path in MODULES.items():
        for module, line in _imports(name, path):
            if _layer(module) is not None:
                edges.append((name, module, line, str(path.relative_to(ROOT))))
    return edges


def test_the_layer_table_covers_every_package():
    assert all(_layer(module) is not None for module in MODULES)


def test_no_module_imports_a_higher_layer():
    upward = []
    for importer, module, line, file in _edges():
        (low, low_unit), (high, high_unit) = _layer(importer), _layer(module)
        if high > low:
            upward.append(f"{file}:{line}: {importer} ({low_unit}) imports {module} ({high_unit})")
    assert not upward, "imports of a higher layer:\n" + "\n".join(upward)


def _package(module: str) -> str:
    unit = _layer(module)[1]
    return unit if unit != "tools" else module.split(".")[0] + "-tools"


def test_no_cycle_between_packages():
    graph: dict[str, set[str]] = {}
    for importer, module, _, _ in _edges():
        a, b = _package(importer), _package(module)
        if a != b:
            graph.setdefault(a, set()).add(b)
    cycles = []
    for start in graph:  # every package that reaches itself again
        seen, stack = set(), [(start, [start])]
        while stack:
            node, trail = stack.pop()
            for nxt in graph.get(node, ()):
                if nxt == start:
                    cycles.append(" -> ".join(trail + [start]))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, trail + [nxt]))
    assert not cycles, "cycles between packages:\n" + "\n".join(sorted(set(cycles)))


def _parents(module: str) -> list[str]:
    """The packages Python imports before `module` (their __init__ files run first)."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def test_the_light_sdk_imports_nothing_heavy():
    heavy, todo, seen = [], list(LIGHT_SDK), set()
    while todo:
        name = todo.pop()
        if name in seen or name not in MODULES:
            continue
        seen.add(name)
        path = MODULES[name]
        for module, line in _imports(name, path):
            if module.split(".")[0] in HEAVY:
                heavy.append(f"{path.relative_to(ROOT)}:{line}: {name} imports {module}")
            for reached in [*_parents(module), module]:
                if reached in MODULES:
                    todo.append(reached)
    assert {"specroute", "specroute.client", "specroute.errors"} <= seen
    assert not heavy, "heavy imports reached from the light SDK:\n" + "\n".join(heavy)
