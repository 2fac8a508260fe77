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


def test_engine_imports_pure_rooms_and_its_own_code() -> None:
    rooms = tuple(f"exchange.{r}" for r in ("model", "engine", *PURE_ROOMS))

    def allowed(name: str) -> bool:
        if name.startswith("exchange."):
            return name.startswith(rooms)
        return top(name) in {"msgspec", "sortedcontainers"} or (
            is_stdlib(name) and top(name) not in {"asyncio", "random", "time", "socket"}
        )

    assert [v for p in python_files("exchange", "engine") for v in violations(p, allowed)] == []


def test_registry_adapter_imports_nothing_from_exchange() -> None:
    def allowed(name: str) -> bool:
        return top(name) != "exchange"

    assert [v for p in python_files("registry_adapter") for v in violations(p, allowed)] == []


def test_gateway_uses_the_engine_api_not_the_book() -> None:
    def allowed(name: str) -> bool:
        return not name.startswith(("exchange.book", "exchange.engine.", "exchange.clearing", "registry_adapter."))

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
        if path.name in ("cli.py", "app.py", "serve.py", "served_simulation.py"):
            continue
        names = imports_of(path)
        wires_gateway = any(n.startswith("exchange.gateway") for n in names) and room_of(path) != "gateway"
        assert not wires_gateway, f"{path.relative_to(ROOT)} wires the gateway"


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
    bad.write_text("import time\nfrom sqlalchemy import select\nfrom exchange.model import Side\n")
    assert imports_of(bad) == ["time", "sqlalchemy", "exchange.model"]
