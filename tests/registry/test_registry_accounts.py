"""``exchange registry accounts``: every account in one table, by id, with its type, who holds
it, whether it is frozen, when it opened and the tonnes it holds (tradable and
compliance-only); a registry with no accounts says "0 accounts"."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry_adapter.admin import main


def ok(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code = main(["registry", *argv])
    out, err = capsys.readouterr()
    assert (code, err) == (0, ""), out
    return out


def test_the_accounts_table(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'registry.db'}"
    ok(capsys, "init", "--db", db)
    assert ok(capsys, "accounts", "--db", db).splitlines()[-1] == "0 accounts"
    for account_id, kind in (("GOV", "government_allocation"), ("RES", "adjustment_reserve"),
                             ("M2", "member_holding"), ("M1", "member_holding"), ("EX", "exchange_settlement")):
        ok(capsys, "open-account", account_id, "--type", kind, "--db", db)
    ok(capsys, "set-cap", "2025", "1000000", "--db", db)
    ok(capsys, "issue", "CEA-2025", "10000", "--reason", "r", "--id", "i1", "--db", db)
    ok(capsys, "allocate", "M1", "CEA-2025", "1200", "--reason", "r", "--id", "a1", "--db", db)
    ok(capsys, "allocate", "M1", "CEA-2025", "300", "--compliance-only", "--reason", "r", "--id", "a2", "--db", db)
    ok(capsys, "freeze", "M2", "--reason", "court order", "--db", db)

    lines = ok(capsys, "accounts", "--db", db).splitlines()
    assert lines[0].split()[:4] == ["account", "type", "held", "by"]
    rows = {line.split()[0]: line for line in lines[1:-1]}
    assert list(rows) == ["EX", "GOV", "M1", "M2", "RES"]  # by id
    assert lines[-1] == "5 accounts"
    m1 = rows["M1"].split()
    assert m1[1:4] == ["member_holding", "member", "M1"] and m1[4] == "no" and m1[-2:] == ["1,200", "300"]
    assert rows["M2"].split()[4] == "yes"  # frozen
    assert rows["GOV"].split()[1:4] == ["government_allocation", "the", "authority"] and rows["GOV"].split()[-2:] == ["8,500", "0"]
    assert "the exchange" in rows["EX"]


def test_accounts_without_a_registry_says_what_to_do(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = main(["registry", "accounts", "--db", f"sqlite:///{tmp_path / 'none.db'}"])
    _, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1 and "run `exchange registry init" in err
