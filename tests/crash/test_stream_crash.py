"""SIGKILL against the stores that follow the event stream: no store ever holds what the journal
does not, and a restart catches every store up to the journal, posting nothing twice.

Before the one-stream redesign the cash ledger committed each deposit as it was applied and the
trade store flushed on its own schedule, while the journal was flushed only at the end of a
batch: a kill in between left deposits and trades in SQL that the journal never got, and once a
reused sequence number carried another deposit the server could never start again. Here a
child process (``stream_child.py``) takes deposits, withdrawals and crossing orders in flight
and is killed right after a store commit (its next commands still in the journal's buffer) and
at random moments; after every kill the stores are checked against the journal, and the run
ends with a settlement that must reconcile to zero.
"""

from __future__ import annotations

import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from exchange.app import Exchange, build_core
from exchange.config import Config
from exchange.engine import replay_applied
from exchange.model import Deposit, MemberKind, RegisterMember
from exchange.model.events import FundsDeposited, FundsWithdrawn, OrderFilled

CHILD = Path(__file__).with_name("stream_child.py")
DAY = "2026-11-23"


def run_child(data_dir: Path, seed: int, kill_at_store_commit: int = 0) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(CHILD), str(data_dir), str(seed), str(kill_at_store_commit)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def wait_for_flushes(child: subprocess.Popen[str], count: int) -> None:
    assert child.stdout is not None
    for _ in range(count):
        line = child.stdout.readline()
        assert line.startswith("flushed "), f"child said {line!r}; stderr: {child.stderr.read() if child.stderr else ''}"


def journal_truth(exchange: Exchange) -> tuple[Counter[str], dict[int, int]]:
    """Each member's deposits less withdrawals, and each trade id's journal sequence, from
    the journal alone."""
    money: Counter[str] = Counter()
    trades: dict[int, int] = {}
    for applied in replay_applied(build_core(Config()), exchange.engine.journal.records()):
        for event in applied.events:
            if type(event) is FundsDeposited:
                money[event.member_id] += event.amount_fen
            elif type(event) is FundsWithdrawn:
                money[event.member_id] -= event.amount_fen
            elif type(event) is OrderFilled:
                trades[event.trade_id] = applied.seq
    return money, trades


def check_stores_follow_the_journal(data_dir: Path) -> int:
    """Recover, let the stores catch up, and compare them with the journal; the journal's
    length."""
    exchange = Exchange.open(Config(), data_dir, time.time_ns)
    try:
        assert exchange.clearing is not None
        exchange.sync_stores()
        last_seq = exchange.engine.last_seq
        assert exchange.clearing.store.last_seq == exchange.clearing.funds.last_seq == last_seq
        money, trades = journal_truth(exchange)
        ledger = exchange.clearing.ledger
        assert {member: ledger.balance(member) for member in money} == dict(money)
        stored = {row.trade_id: row.seq for row in exchange.clearing.store.day_trades(DAY)}
        assert stored == trades, "the trade store holds exactly the journal's trades, each from its own record"
        assert ledger.verify() == []
        return last_seq
    finally:
        exchange.close()


def settle_and_reconcile(data_dir: Path) -> None:
    exchange = Exchange.open(Config(), data_dir, time.time_ns)
    try:
        exchange.end_day()
        report = exchange.settle(DAY)
        assert report.differences == []
    finally:
        exchange.close()
    check_stores_follow_the_journal(data_dir)


@pytest.mark.parametrize("commit", [1, 2, 5])
def test_a_kill_right_after_a_store_commit_loses_and_doubles_nothing(tmp_path: Path, commit: int) -> None:
    child = run_child(tmp_path, seed=commit, kill_at_store_commit=commit)
    assert child.wait(timeout=120) == -signal.SIGKILL
    first = check_stores_follow_the_journal(tmp_path)
    child = run_child(tmp_path, seed=commit + 100, kill_at_store_commit=commit)
    assert child.wait(timeout=120) == -signal.SIGKILL
    assert check_stores_follow_the_journal(tmp_path) > first
    settle_and_reconcile(tmp_path)


def test_fifty_random_kills_with_deposits_orders_and_trades_in_flight(tmp_path: Path) -> None:
    rng = random.Random(2026)
    lengths = []
    for kill in range(50):
        child = run_child(tmp_path, seed=kill)
        wait_for_flushes(child, rng.randrange(1, 40))
        time.sleep(rng.random() * 0.02)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
        lengths.append(check_stores_follow_the_journal(tmp_path))
    assert lengths == sorted(lengths) and lengths[-1] > lengths[0], "the journal only grows"
    settle_and_reconcile(tmp_path)


def test_a_crash_image_taken_after_a_store_commit_never_has_the_store_ahead(tmp_path: Path) -> None:
    """Deterministic: commands applied but not flushed, the stores told to commit all they
    have, and the data directory copied as a crash would leave it (the journal's unflushed
    buffer lost). Recovery from the copy must find no store ahead of the journal."""
    live = tmp_path / "live"
    exchange = Exchange.open(Config(), live, time.time_ns)
    exchange.execute(RegisterMember("A", MemberKind.VOLUNTARY))
    exchange.execute(Deposit("A", 500))
    exchange.flush()
    for amount in range(1, 40):
        exchange.execute(Deposit("A", amount))  # in the journal's buffer only
    for worker in exchange.workers:
        worker.flush()  # whatever the stores were handed is committed now
    shutil.copytree(live, tmp_path / "image")
    exchange.close()
    assert check_stores_follow_the_journal(tmp_path / "image") == 2


def test_a_store_ahead_of_the_journal_is_one_line_for_the_operator(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The journal lost its tail (an OS crash with fsync off): settle refuses with one line
    naming the store and both positions, no traceback."""
    import sqlalchemy as sa

    from exchange.cli import main
    from exchange.clearing.stream_positions import write_position

    exchange = Exchange.open(Config(), tmp_path, time.time_ns)
    exchange.execute(RegisterMember("A", MemberKind.VOLUNTARY))
    exchange.close()
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'clearing.db'}")
    with engine.begin() as connection:
        write_position(connection, "trades", 50)
    engine.dispose()
    assert main(["settle", "--date", DAY, "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the trades store has applied up to journal sequence 50" in err and "Traceback" not in err
