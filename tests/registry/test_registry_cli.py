"""The registry's operator commands end to end on a temporary SQLite file: each prints a
readable result and returns 0, ``verify`` returns 1 on a problem, and a refusal or a missing
database prints a message naming the problem and returns 2."""

from __future__ import annotations

import argparse
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from registry_adapter.admin import DEFAULT_DB_URL, add_registry_commands, main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'registry.db'}"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["registry", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def ok(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code, out, err = run(capsys, *argv)
    assert (code, err) == (0, ""), out
    return out


@pytest.fixture
def market(capsys: pytest.CaptureFixture[str], db: str) -> str:
    ok(capsys, "init", "--db", db)
    for account_id, kind in (("GOV", "government_allocation"), ("RES", "adjustment_reserve"),
                             ("CAN", "cancellation"), ("M1", "member_holding")):
        ok(capsys, "open-account", account_id, "--type", kind, "--db", db, "--actor", "authority:li")
    ok(capsys, "set-cap", "2025", "1,000,000", "--db", db, "--actor", "authority:li")
    ok(capsys, "issue", "CEA-2025", "900000", "--reason", "2025 issuance", "--id", "iss-2025", "--db", db, "--actor", "authority:li")
    return db


def test_an_operator_session_from_init_to_verify(capsys: pytest.CaptureFixture[str], market: str) -> None:
    db = market
    out = ok(capsys, "allocate", "M1", "CEA-2025", "12_000", "--reason", "free allocation 2025", "--id", "a1", "--db", db, "--actor", "authority:li")
    assert "allocated 12,000 t of CEA-2025 to M1" in out
    ok(capsys, "allocate", "M1", "CEA-2025", "300", "--compliance-only", "--reason", "compliance-only share", "--id", "a2", "--db", db)
    ok(capsys, "allocate", "RES", "CEA-2025", "50000", "--reason", "reserve", "--id", "a3", "--db", db)
    ok(capsys, "allocate", "M1", "CEA-2025", "1000", "--from-reserve", "--reason", "new entrant", "--id", "a4", "--db", db)
    out = ok(capsys, "holdings", "M1", "--db", db)
    assert "holdings of M1 (member_holding)" in out
    assert out.splitlines()[-1].split() == ["CEA-2025", "13,000", "300"]
    out = ok(capsys, "history", "M1", "--db", db)
    lines = out.splitlines()
    assert lines[0] == "history of M1: 4 entries"
    assert "open_account" in lines[1] and "by authority:li" in lines[1]
    assert "allocate 12,000 t CEA-2025  GOV -> M1" in lines[2] and "by authority:li: free allocation 2025" in lines[2]
    assert "(compliance-only)" in lines[3] and "RES -> M1" in lines[4]
    assert ok(capsys, "history", "M1", "--limit", "1", "--db", db).splitlines()[0] == "history of M1: 1 entry (the latest 1)"
    out = ok(capsys, "verify", "--db", db)
    assert out.startswith("registry verified")
    assert "CEA-2025   created        900,000 t" in out


def test_freeze_and_unfreeze(capsys: pytest.CaptureFixture[str], market: str) -> None:
    assert ok(capsys, "freeze", "M1", "--reason", "court order", "--db", market) == "M1 is frozen\n"
    assert "frozen" in ok(capsys, "holdings", "M1", "--db", market).splitlines()[0]
    code, _, err = run(capsys, "allocate", "M1", "CEA-2025", "1", "--reason", "x", "--id", "f1", "--db", market)
    assert (code, err) == (2, "error: registry account 'M1' is frozen\n")
    ok(capsys, "unfreeze", "M1", "--reason", "lifted", "--db", market)
    ok(capsys, "allocate", "M1", "CEA-2025", "1", "--reason", "x", "--id", "f1", "--db", market)


@pytest.mark.parametrize(("argv", "message"), [
    (["holdings", "NOBODY"], "error: unknown registry account 'NOBODY'"),
    (["allocate", "M1", "CEA-2025", "900001", "--reason", "x", "--id", "r1"], "error: account 'GOV' holds 900000 t of CEA-2025, 900001 t wanted"),
    (["allocate", "M1", "CEA-2030", "1", "--reason", "x", "--id", "r2"], "error: account 'GOV' holds 0 t of CEA-2030, 1 t wanted"),
    (["allocate", "M1", "CEA-25", "1", "--reason", "x", "--id", "r3"], "error: unit 'CEA-25' is not valid here: expected an allowance unit CEA-YYYY"),
    (["issue", "CEA-2025", "100001", "--reason", "x", "--id", "r4"], "error: issuing 100001 t would exceed the 2025 cap of 1000000 t (900000 t issued)"),
    (["set-cap", "2025", "10"], "error: a 2025 cap of 10 t is too low: 900000 t are already issued"),
    (["set-cap", "2025", "0"], "error: quantity 0 is not a whole number of tonnes"),
    (["open-account", "GOV2", "--type", "government_allocation"], "error: registry account 'GOV' already exists as government_allocation"),
    (["allocate", "M1", "CEA-2025", "50001", "--reason", "x", "--from-reserve", "--id", "r5"], "error: account 'RES' holds 0 t"),
])
def test_a_refusal_names_the_problem_and_exits_2(
    capsys: pytest.CaptureFixture[str], market: str, argv: list[str], message: str,
) -> None:
    code, out, err = run(capsys, *argv, "--db", market)
    assert (code, out) == (2, "")
    assert err.startswith(message)
    assert ok(capsys, "verify", "--db", market).startswith("registry verified")


def test_without_a_database_nothing_is_created(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "none" / "registry.db"
    code, _, err = run(capsys, "holdings", "M1", "--db", f"sqlite:///{path}")
    assert code == 2 and "no registry database at" in err and "registry init" in err
    assert not path.exists()


def test_a_database_without_tables_says_to_init(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    sqlite3.connect(path).close()
    code, _, err = run(capsys, "verify", "--db", f"sqlite:///{path}")
    assert code == 2 and "no such table" in err and "registry init" in err


def test_a_bad_url_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "verify", "--db", "registry.db")
    assert (code, err) == (2, "error: 'registry.db' is not a database URL (e.g. sqlite:///data/registry.db)\n")


@pytest.mark.parametrize(("argv", "message"), [
    (["open-account", "X", "--type", "bank"], "invalid choice: 'bank'"),
    (["set-cap", "2025", "12t"], "'12t' is not a whole number of tonnes"),
    (["set-cap", "twenty", "1"], "'twenty' is not a year"),
    (["allocate", "M1", "CEA-2025", "1"], "the following arguments are required: --reason"),
])
def test_malformed_arguments_exit_2_with_argparse_message(
    capsys: pytest.CaptureFixture[str], db: str, argv: list[str], message: str,
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["registry", *argv, "--db", db])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_verify_exits_1_when_holdings_differ_from_the_journal(capsys: pytest.CaptureFixture[str], market: str) -> None:
    connection = sqlite3.connect(market.removeprefix("sqlite:///"))
    with connection:
        connection.execute("UPDATE registry_holdings SET qty_t = qty_t + 1 WHERE account_id = 'GOV'")
    connection.close()
    code, out, _ = run(capsys, "verify", "--db", market)
    assert code == 1
    assert out.startswith("registry verification FAILED")
    assert "holding ('GOV', 'CEA-2025', False): table 900001, journal 900000" in out


def test_the_default_database_is_data_registry_db(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    assert DEFAULT_DB_URL == "sqlite:///data/registry.db"
    assert ok(capsys, "init") == "registry ready at sqlite:///data/registry.db\n"
    assert (tmp_path / "data" / "registry.db").exists()
    assert ok(capsys, "open-account", "M1", "--type", "member_holding") == "opened M1 (member_holding)\n"
    assert ok(capsys, "open-account", "M1", "--type", "member_holding") == "already open: M1 (member_holding)\n"


def test_the_commands_plug_into_another_cli(capsys: pytest.CaptureFixture[str], market: str) -> None:
    parser = argparse.ArgumentParser(prog="exchange")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("simulate").set_defaults(run=lambda args: 0)
    add_registry_commands(commands)
    args = parser.parse_args(["registry", "holdings", "GOV", "--db", market])
    assert args.run(args) == 0
    assert "900,000" in capsys.readouterr().out


def test_the_module_runs_as_a_program(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'registry.db'}"
    result = subprocess.run(
        [sys.executable, "-m", "registry_adapter.admin", "registry", "init", "--db", db],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, f"registry ready at {db}\n", "")
