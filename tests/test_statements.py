"""Account statements are in integer fen and tonnes, with the columns docs/statements.md
documents: the header, each record, and the sums the document promises (trade lines add up to
the net lines), checked on a small day written by ``write_statements`` and on the worked
example in the document itself."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import msgspec

from exchange.clearing.obligations import CASH, Obligation, Venue
from exchange.clearing.plan import SettlementPlan
from exchange.clearing.settlement import STATEMENT_HEADER, write_statements

ROOT = Path(__file__).resolve().parents[1]
DAY = "2026-01-05"
CEA = "CEA-2025"


class Position(msgspec.Struct, frozen=True):
    member_id: str
    asset: str
    settled: int
    obligation: int


def day() -> tuple[SettlementPlan, list[Position]]:
    """M1 buys 40 t at 58.15 and sells 10 t at 58.20 (to and from M2)."""
    trades = [
        Obligation(311, Venue.BOOK, CEA, 40, 5815, "M1", "M2", 1, 2),
        Obligation(312, Venue.BOOK, CEA, 10, 5820, "M2", "M1", 3, 4),
    ]
    positions = [
        Position("M1", CASH, 10_000_000 - 174_400, 174_400), Position("M1", CEA, 1_030, -30),
        Position("M2", CASH, 20_000_000 + 174_400, -174_400), Position("M2", CEA, 970, 30),
    ]
    return SettlementPlan(DAY, trades), positions


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_a_statement_is_in_fen_with_the_documented_records(tmp_path: Path) -> None:
    plan, positions = day()
    write_statements(tmp_path, plan, positions)
    text = (tmp_path / "M1.csv").read_text()
    assert text.splitlines()[0] == "record,instrument,trade_id,side,qty_t,price_fen,amount_fen"
    assert STATEMENT_HEADER == "record,instrument,trade_id,side,qty_t,price_fen,amount_fen\n"
    assert text.splitlines()[1:] == [
        "trade,CEA-2025,311,buy,40,5815,-232600",
        "trade,CEA-2025,312,sell,10,5820,58200",
        "net,,,pay,,,-174400",
        "settled_cash,,,,,,9825600",
        "net,CEA-2025,,receive,30,,",
        "settled_holding,CEA-2025,,,1030,,",
    ]
    assert "." not in text.replace("CEA-2025", ""), "no decimal point: money is integer fen"


def test_the_trade_lines_add_up_to_the_net_lines(tmp_path: Path) -> None:
    plan, positions = day()
    write_statements(tmp_path, plan, positions)
    for account in ("M1", "M2"):
        records = rows(tmp_path / f"{account}.csv")
        trades = [r for r in records if r["record"] == "trade"]
        nets = {r["instrument"]: r for r in records if r["record"] == "net"}
        assert sum(int(r["amount_fen"]) for r in trades) == int(nets[""]["amount_fen"])
        signed = sum(int(r["qty_t"]) * (1 if r["side"] == "buy" else -1) for r in trades)
        assert signed == int(nets[CEA]["qty_t"])
        for trade in trades:  # the amount is price x quantity, signed by the side
            value = int(trade["price_fen"]) * int(trade["qty_t"])
            assert int(trade["amount_fen"]) == (-value if trade["side"] == "buy" else value)
    assert rows(tmp_path / "M2.csv")[0]["amount_fen"] == "232600"  # the same trade, the other side


def test_the_document_names_every_column_and_its_example_is_what_the_code_writes(tmp_path: Path) -> None:
    doc = (ROOT / "docs" / "statements.md").read_text()
    for column in STATEMENT_HEADER.strip().split(","):
        assert f"| `{column}` |" in doc, column
    for record in ("trade", "net", "settled_holding", "settled_cash"):
        assert f"`{record}`" in doc, record
    example = re.search(r"```\n(record,.*?)```", doc, re.DOTALL)
    assert example is not None
    plan, positions = day()
    write_statements(tmp_path, plan, positions)
    written = (tmp_path / "M1.csv").read_text().splitlines()
    assert example[1].splitlines() == written
