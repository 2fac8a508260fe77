"""The house rules of ../shared/docs/architecture.md, enforced by reading imports (ast)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PURE_ROOMS = ("book", "block", "auction", "risk")
STDLIB = set(sys.stdlib_module_names)
IO_MODULES = {
    "asyncio", "aiohttp", "sqlalchemy", "psycopg", "time", "random", "socket", "os", "io",
    "pathlib", "threading", "subprocess", "shutil", "tempfile", "secrets", "uuid",
}


def imports_of(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == "exchange":
            names.extend(f"exchange.{alias.name}" for alias in node.names)  # ``from exchange import files``
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


def python_files(*parts: str) -> list[Path]:
    return sorted((ROOT.joinpath(*parts)).rglob("*.py"))


def room_of(path: Path) -> str:
    relative = path.relative_to(ROOT / "exchange")
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def violations(path: Path, allowed) -> list[str]:
    return [f"{path.relative_to(ROOT)} imports {name}" for name in imports_of(path) if not allowed(name)]


def top(name: str) -> str:
    return name.split(".")[0]


def is_stdlib(name: str) -> bool:
    return top(name) in STDLIB or top(name) == "__future__"


def test_model_imports_only_stdlib_and_msgspec() -> None:
    def allowed(name: str) -> bool:
        return (is_stdlib(name) and top(name) not in IO_MODULES) or top(name) == "msgspec" or name.startswith("exchange.model")

    assert [v for p in python_files("exchange", "model") for v in violations(p, allowed)] == []


@pytest.mark.parametrize("room", PURE_ROOMS)
def test_pure_rooms_do_no_io(room: str) -> None:
    numeric = {"numpy"} if room in ("auction", "risk") else set()

    def allowed(name: str) -> bool:
        if name.startswith(("exchange.model", f"exchange.{room}")):
            return True
        if top(name) in {"msgspec", "sortedcontainers"} | numeric:
            return True
        return is_stdlib(name) and top(name) not in IO_MODULES

    assert [v for p in python_files("exchange", room) for v in violations(p, allowed)] == []


# The one module that writes files at rest (atomically, durably, privately): it imports nothing
# from the exchange, so every room that writes files may use it.
FILES = "exchange.files"


def test_the_files_module_imports_only_the_standard_library() -> None:
    def allowed(name: str) -> bool:
        return is_stdlib(name)

    assert violations(ROOT / "exchange" / "files.py", allowed) == []


def test_engine_imports_pure_rooms_and_its_own_code() -> None:
    rooms = tuple(f"exchange.{r}" for r in ("model", "engine", *PURE_ROOMS))

    def allowed(name: str) -> bool:
        if name.startswith("exchange."):
            return name.startswith(rooms) or name == FILES
        return top(name) in {"msgspec", "sortedcontainers"} or (
            is_stdlib(name) and top(name) not in {"asyncio", "random", "time", "socket"}
        )

    assert [v for p in python_files("exchange", "engine") for v in violations(p, allowed)] == []


def test_registry_adapter_imports_nothing_from_exchange() -> None:
    def allowed(name: str) -> bool:
        return top(name) != "exchange"

    assert [v for p in python_files("registry_adapter") for v in violations(p, allowed)] == []


def is_module(name: str, prefix: str) -> bool:
    """``name`` is the module ``prefix`` or inside it (``exchange.sim`` is not ``exchange.simulation``)."""
    return name == prefix or name.startswith(prefix + ".")


COMPOSITION_ROOT = ("exchange.app", "exchange.cli", "exchange.serve", "exchange.service")
SIMULATIONS = ("exchange.simulation", "exchange.served_simulation", "exchange.sim")


def test_gateway_never_imports_the_composition_root_or_the_simulations() -> None:
    """The gateway sits behind its service port: whoever composes the exchange hands it in."""
    def allowed(name: str) -> bool:
        return not any(is_module(name, banned) for banned in (*COMPOSITION_ROOT, *SIMULATIONS))

    assert [v for p in python_files("exchange", "gateway") for v in violations(p, allowed)] == []


def test_gateway_uses_the_port_not_the_engine_clearing_or_registry() -> None:
    def allowed(name: str) -> bool:
        return not any(
            is_module(name, banned) for banned in ("exchange.engine", "exchange.clearing", "exchange.risk", "exchange.book", "registry_adapter")
        )

    assert [v for p in python_files("exchange", "gateway") for v in violations(p, allowed)] == []


def test_gateway_imports_only_the_model_the_config_files_and_itself_from_exchange() -> None:
    def allowed(name: str) -> bool:
        return top(name) != "exchange" or name == FILES or any(
            is_module(name, room) for room in ("exchange.model", "exchange.config", "exchange.gateway"))

    assert [v for p in python_files("exchange", "gateway") for v in violations(p, allowed)] == []


def test_clearing_never_imports_a_concrete_registry() -> None:
    def allowed(name: str) -> bool:
        return not (name.startswith("registry_adapter.") and name != "registry_adapter.port") and not name.startswith(
            ("exchange.gateway", "exchange.engine", "exchange.book")
        )

    assert [v for p in python_files("exchange", "clearing") for v in violations(p, allowed)] == []


def test_only_the_composition_root_wires_shell_and_core() -> None:
    """Outside the CLI, no module imports both the gateway and a store or adapter."""
    for path in python_files("exchange"):
        if path.name in ("cli.py", "app.py", "serve.py", "init.py", "service.py", "served_simulation.py") or room_of(path) == "sim":
            continue
        names = imports_of(path)
        wires_gateway = any(n.startswith("exchange.gateway") for n in names) and room_of(path) != "gateway"
        assert not wires_gateway, f"{path.relative_to(ROOT)} wires the gateway"


# -- import cycles ------------------------------------------------------------------------------


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(paths: list[Path]) -> dict[str, set[str]]:
    """module -> the modules of ``paths`` it imports: every ``import`` and ``from`` anywhere in
    the file (top level, under ``if TYPE_CHECKING``, inside functions), relative ones resolved;
    ``from package import name`` counts as importing ``package.name`` when that is a module."""
    modules = {module_name(path): path for path in paths}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                targets = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source for alias in node.names]
            for target in targets:
                while target and target not in modules:  # ``import a.b.c`` of a non-module: its package
                    target = target.rpartition(".")[0]
                if target:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with a cycle (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

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
            if len(component) > 1 or node in graph[node]:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def test_no_import_cycles_in_exchange() -> None:
    """No module of ``exchange/`` imports, however indirectly, itself: not at the top, not
    under ``TYPE_CHECKING``, not inside a function."""
    graph = import_graph(python_files("exchange"))
    assert "exchange.gateway.hub" in graph and graph["exchange.gateway.hub"]
    assert cycles(graph) == []


def test_the_cycle_check_sees_every_kind_of_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "exchange" / "room"
    package.mkdir(parents=True)
    (tmp_path / "exchange" / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from exchange.room.b import B\n")
    (package / "b.py").write_text("def f():\n    from . import c\n")
    (package / "c.py").write_text("from .a import x\n")
    (package / "d.py").write_text("import exchange.room.a\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    graph = import_graph(sorted((tmp_path / "exchange").rglob("*.py")))
    assert graph["exchange.room.a"] == {"exchange.room.b"} and graph["exchange.room.b"] == {"exchange.room.c"}
    assert cycles(graph) == [["exchange.room.a", "exchange.room.b", "exchange.room.c"]]


CORE_ROOMS = ("model", "book", "block", "auction", "risk", "engine")


@pytest.mark.parametrize("room", CORE_ROOMS)
def test_core_has_no_float_or_decimal(room: str) -> None:
    """Money and quantities are integers of fen and tonnes."""
    found = []
    for path in python_files("exchange", room):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Name) and node.id in {"float", "Decimal"}:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} uses {node.id}")
            if isinstance(node, ast.Constant) and isinstance(node.value, float):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} has a float literal")
            if isinstance(node, ast.Attribute) and node.attr in {"now", "today", "utcnow"}:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} reads the clock (.{node.attr})")
    assert found == []


def test_the_rules_catch_a_violation(tmp_path: Path) -> None:
    """The checker is not vacuous: an I/O import in a pure room is seen."""
    bad = tmp_path / "bad.py"
    bad.write_text("import time\nfrom sqlalchemy import select\nfrom exchange.model import Side\nfrom exchange import app\n")
    assert imports_of(bad) == ["time", "sqlalchemy", "exchange.model", "exchange.app"]
