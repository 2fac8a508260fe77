"""The authority's operations carry an operation id (issue 11), on SQLite and PostgreSQL: run
again with the same id, issue, allocate and correct return the first result and change
nothing; the same id with another request is refused naming what it was used for; a refused
operation leaves its id free; two runs of one id at the same moment record it once. The
``exchange registry`` commands require the id and say when a re-run changed nothing."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from registry_adapter.admin import main
from registry_adapter.memory import InMemoryRegistry
from registry_adapter.port import InsufficientHolding, OperationIdConflict, Transfer
from registry_adapter.sql import CapExceeded, InvalidInput, SqlRegistry, operation_ids

AUTHORITY: dict[str, Any] = {"actor": "authority:li", "reason": "measures, article 12"}
CAP_T = 1_000_000


@pytest.fixture
def registry(db_url: str) -> Iterator[SqlRegistry]:
    registry = SqlRegistry(db_url)
    registry.create_schema()
    for account_id, kind in (("GOV", "government_allocation"), ("RES", "adjustment_reserve"),
                             ("M1", "member_holding"), ("M2", "member_holding"), ("EX", "exchange_settlement")):
        registry.open_account(account_id, kind, **AUTHORITY)
    registry.set_annual_cap(2025, CAP_T, **AUTHORITY)
    yield registry
    assert registry.verify() == []
    registry.close()


def held(registry: SqlRegistry, account_id: str) -> int:
    return registry.holdings(account_id).get("CEA-2025", 0)


def test_a_retried_issue_returns_the_first_entry_and_issues_nothing(registry: SqlRegistry) -> None:
    seq = registry.issue("CEA-2025", 900_000, **AUTHORITY, operation_id="iss-2025-1")
    entries = len(registry.entries_between())
    assert registry.issue("CEA-2025", 900_000, actor="authority:wang", reason="retry", operation_id="iss-2025-1") == seq
    assert len(registry.entries_between()) == entries
    assert registry.annual_cap(2025) == (CAP_T, 900_000) and held(registry, "GOV") == 900_000
    [entry] = [e for e in registry.entries_between() if e.seq == seq]
    assert entry.idempotency_id == "iss-2025-1"
    record = registry.operation("iss-2025-1")
    assert record is not None and (record.operation, record.entry_seq, record.actor) == ("issue", seq, "authority:li")
    # The rules are not weighed again: the cap has no room for another 900,000 t, the retry stands.
    with pytest.raises(CapExceeded):
        registry.issue("CEA-2025", 900_000, **AUTHORITY, operation_id="iss-2025-2")
    assert registry.issue("CEA-2025", 900_000, **AUTHORITY, operation_id="iss-2025-1") == seq


@pytest.mark.parametrize("other", [("CEA-2025", 900_001), ("CEA-2026", 900_000)], ids=["qty", "unit"])
def test_an_issue_id_with_another_request_is_refused(registry: SqlRegistry, other: tuple[str, int]) -> None:
    registry.set_annual_cap(2026, CAP_T, **AUTHORITY)
    registry.issue("CEA-2025", 900_000, **AUTHORITY, operation_id="iss-1")
    entries = registry.entries_between()
    with pytest.raises(OperationIdConflict, match=r"'iss-1' was already used for another request: issue \[\"CEA-2025\",900000\]"):
        registry.issue(*other, **AUTHORITY, operation_id="iss-1")
    assert registry.entries_between() == entries


def test_a_retried_allocation_moves_once_and_another_request_is_refused(registry: SqlRegistry) -> None:
    registry.issue("CEA-2025", 100_000, **AUTHORITY)
    seq = registry.allocate("M1", "CEA-2025", 10_000, **AUTHORITY, operation_id="alloc:M1:2025")
    assert registry.allocate("M1", "CEA-2025", 10_000, **AUTHORITY, operation_id="alloc:M1:2025") == seq
    assert (held(registry, "M1"), held(registry, "GOV")) == (10_000, 90_000)
    for changed in (dict(account_id="M2"), dict(qty_t=10_001), dict(compliance_only=True)):
        arguments: dict[str, Any] = {"account_id": "M1", "unit": "CEA-2025", "qty_t": 10_000, **changed}
        with pytest.raises(OperationIdConflict):
            registry.allocate(**arguments, **AUTHORITY, operation_id="alloc:M1:2025")
    assert (held(registry, "M1"), held(registry, "M2")) == (10_000, 0)


def test_a_retried_correction_does_not_undo_a_later_one(registry: SqlRegistry) -> None:
    """Correct to 800 (lost answer), correct to 1,200, then the retry of the first arrives:
    it returns the first correction's entry and the allocation stays at 1,200."""
    registry.issue("CEA-2025", 100_000, **AUTHORITY)
    allocation = registry.allocate("M1", "CEA-2025", 1_000, **AUTHORITY)
    first = registry.correct_allocation(allocation, 800, **AUTHORITY, operation_id="fix-1")
    registry.correct_allocation(allocation, 1_200, **AUTHORITY, operation_id="fix-2")
    assert registry.correct_allocation(allocation, 800, **AUTHORITY, operation_id="fix-1") == first
    assert held(registry, "M1") == 1_200
    with pytest.raises(OperationIdConflict, match="change"):
        registry.correct_allocation(allocation, 700, **AUTHORITY, operation_id="fix-1")


def test_a_correction_that_changed_nothing_still_takes_its_id(registry: SqlRegistry) -> None:
    registry.issue("CEA-2025", 100_000, **AUTHORITY)
    allocation = registry.allocate("M1", "CEA-2025", 1_000, **AUTHORITY)
    assert registry.correct_allocation(allocation, 1_000, **AUTHORITY, operation_id="fix-0") is None
    registry.correct_allocation(allocation, 900, **AUTHORITY, operation_id="fix-9")
    assert registry.correct_allocation(allocation, 1_000, **AUTHORITY, operation_id="fix-0") is None
    assert held(registry, "M1") == 900
    record = registry.operation("fix-0")
    assert record is not None and record.entry_seq is None


def test_one_id_names_one_request_across_operations_and_transfers(registry: SqlRegistry) -> None:
    seq = registry.issue("CEA-2025", 100_000, **AUTHORITY, operation_id="op-1")
    with pytest.raises(OperationIdConflict, match="issue"):
        registry.allocate("M1", "CEA-2025", 10, **AUTHORITY, operation_id="op-1")
    registry.allocate("M1", "CEA-2025", 10, **AUTHORITY)
    registry.apply_transfers([Transfer("2026-01-05:trade:1", "M1", "M2", "CEA-2025", 5)], "exchange", "settlement")
    with pytest.raises(OperationIdConflict, match="entry"):
        registry.allocate("M1", "CEA-2025", 10, **AUTHORITY, operation_id="2026-01-05:trade:1")
    assert registry.operation("op-1") is not None and registry.operation("2026-01-05:trade:1") is None
    assert registry.issue("CEA-2025", 100_000, **AUTHORITY, operation_id="op-1") == seq


def test_a_refused_operation_leaves_its_id_free(registry: SqlRegistry) -> None:
    with pytest.raises(InsufficientHolding):
        registry.allocate("M1", "CEA-2025", 1_000, **AUTHORITY, operation_id="alloc-1")
    assert registry.operation("alloc-1") is None
    registry.issue("CEA-2025", 1_000, **AUTHORITY)
    registry.allocate("M1", "CEA-2025", 1_000, **AUTHORITY, operation_id="alloc-1")
    assert held(registry, "M1") == 1_000


@pytest.mark.parametrize("bad", ["", "a b", "x" * 65, "é", "a\n"])
def test_a_malformed_operation_id_is_refused_before_any_work(registry: SqlRegistry, bad: str) -> None:
    with pytest.raises(InvalidInput, match="operation id"):
        registry.issue("CEA-2025", 1, **AUTHORITY, operation_id=bad)
    assert registry.annual_cap(2025) == (CAP_T, 0)


def test_two_runs_of_one_id_at_once_issue_once(registry: SqlRegistry) -> None:
    """Two operators' terminals retry the same issue at the same moment."""
    start = threading.Barrier(4)
    results: list[int] = []

    def run() -> None:
        start.wait()
        results.append(registry.issue("CEA-2025", 1_000, **AUTHORITY, operation_id="iss-race"))

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4 and len(set(results)) == 1
    assert registry.annual_cap(2025) == (CAP_T, 1_000) and held(registry, "GOV") == 1_000


def test_verify_notices_an_operation_id_pointing_at_another_entry(registry: SqlRegistry) -> None:
    registry.issue("CEA-2025", 1_000, **AUTHORITY, operation_id="iss-1")
    other = registry.allocate("M1", "CEA-2025", 10, **AUTHORITY)
    with registry.engine.begin() as connection:
        connection.execute(sa.update(operation_ids).values(entry_seq=other))
    assert registry.verify() == [f"operation id 'iss-1' (issue) points at entry {other}, which is not its entry"]
    with registry.engine.begin() as connection:
        connection.execute(sa.delete(operation_ids))


def test_the_in_memory_fake_keeps_the_same_promise() -> None:
    fake = InMemoryRegistry()
    fake.open_account("M1")
    fake.issue("M1", "CEA-2025", 500, operation_id="i-1")
    fake.issue("M1", "CEA-2025", 500, operation_id="i-1")
    assert fake.holdings("M1") == {"CEA-2025": 500}
    with pytest.raises(OperationIdConflict):
        fake.issue("M1", "CEA-2025", 501, operation_id="i-1")
    fake.issue("M1", "CEA-2025", 500)
    fake.issue("M1", "CEA-2025", 500)  # no id: every call credits
    assert fake.holdings("M1") == {"CEA-2025": 1_500}


# -- the CLI ----------------------------------------------------------------------------------


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["registry", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_cli_requires_an_id_and_a_rerun_changes_nothing(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    db = ["--db", f"sqlite:///{tmp_path / 'registry.db'}"]
    assert cli(capsys, "init", *db)[0] == 0
    for account_id, kind in (("GOV", "government_allocation"), ("M1", "member_holding")):
        assert cli(capsys, "open-account", account_id, "--type", kind, *db)[0] == 0
    assert cli(capsys, "set-cap", "2025", "1000000", *db)[0] == 0
    with pytest.raises(SystemExit) as exited:
        main(["registry", "issue", "CEA-2025", "1000", "--reason", "x", *db])
    assert exited.value.code == 2 and "the following arguments are required: --id" in capsys.readouterr().err

    issue = ["issue", "CEA-2025", "900000", "--reason", "2025 issuance", "--id", "ISS-2025", *db]
    code, out, _ = cli(capsys, *issue)
    assert code == 0 and out.startswith("issued 900,000 t of CEA-2025")
    code, out, _ = cli(capsys, *issue)
    assert (code, out) == (0, "already done: operation ISS-2025 was recorded before as entry 4; nothing changed\n")
    code, out, err = cli(capsys, "issue", "CEA-2025", "900001", "--reason", "x", "--id", "ISS-2025", *db)
    assert (code, out) == (2, "") and err.startswith("error: operation id 'ISS-2025' was already used for another request: issue")

    allocate = ["allocate", "M1", "CEA-2025", "1000", "--reason", "free allocation", "--id", "AL-M1", *db]
    assert cli(capsys, *allocate)[1] == "allocated 1,000 t of CEA-2025 to M1 from the government allocation account (entry 5)\n"
    assert cli(capsys, *allocate)[1].startswith("already done: operation AL-M1 was recorded before as entry 5")
    correct = ["correct-allocation", "#5", "800", "--reason", "verified data", "--id", "FIX-1", *db]
    assert cli(capsys, *correct)[1] == "allocation #5 now amounts to 800 t (correcting entry 6)\n"
    assert cli(capsys, *correct)[1].startswith("already done: operation FIX-1 was recorded before as entry 6")
    code, out, _ = cli(capsys, "correct-allocation", "5", "800", "--reason", "x", "--id", "FIX-2", *db)
    assert (code, out) == (0, "allocation #5 already amounts to 800 t: nothing to correct\n")
    code, out, _ = cli(capsys, "holdings", "M1", *db)
    assert out.splitlines()[-1].split() == ["CEA-2025", "800", "0"]
    code, out, _ = cli(capsys, "history", "M1", *db)
    assert "[id AL-M1]" in out and "[id FIX-1; corrects #5]" in out
    assert cli(capsys, "verify", *db)[0] == 0
