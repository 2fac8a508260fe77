"""``exchange simulate`` on the served exchange, small: six members over real WebSockets trade a
whole day, which is then settled. The run's own checks must pass (exit code 0), and the
members' client logs it leaves in the data directory must agree with the journal replayed on
its own: every client order id entered once with the outcome the member was told, every
execution reported once to each side with the journal's quantity and price, nothing invented.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter, defaultdict
from pathlib import Path

import msgspec

from exchange.app import build_core, open_engine
from exchange.config import Config
from exchange.engine import replay
from exchange.gateway.member.wire import ExecutionReport, decode_outbound, parse_price
from exchange.model.events import OrderAccepted, OrderFilled, OrderRejected
from exchange.sim.member_client import SimMember
from exchange.progress import Progress
from exchange.sim.served import MEMBER_LOGS, add_served_arguments, run_served, served_config

DAY = "2026-11-23"


def simulate_args(data_dir: Path, **overrides) -> argparse.Namespace:
    values = dict(seed=7, members=6, commands=600, days=1, start=DAY, config=None, data_dir=str(data_dir),
                  clearing_db=None, window=8, progress="never")
    values.update(overrides)
    return argparse.Namespace(**values)


def journal_events(data_dir: Path) -> list:
    config = served_config(Config())
    engine = open_engine(config, data_dir, time.time_ns)
    try:
        core = build_core(config)
        return [event for _, _, events in replay(core, engine.journal.records()) for event in events]
    finally:
        engine.close()


def client_logs(data_dir: Path) -> dict[str, list]:
    logs = {}
    for path in sorted((data_dir / MEMBER_LOGS).glob("*.jsonl")):
        logs[path.stem] = [decode_outbound(line) for line in path.read_text().splitlines()]
    return logs


def test_a_served_day_agrees_with_the_journal(tmp_path: Path, capsys) -> None:
    data_dir = tmp_path / "data"
    started = time.perf_counter()
    assert run_served(simulate_args(data_dir)) == 0
    assert time.perf_counter() - started < 20
    out = capsys.readouterr().out
    assert f"settled {DAY}:" in out and "reconciliation: 0 differences" in out
    assert "all checks passed" in out and "FAILED" not in out
    assert (data_dir / "statements" / DAY).is_dir()

    events = journal_events(data_dir)
    logs = client_logs(data_dir)
    assert sorted(logs) == [f"M{n:04d}" for n in range(1, 7)]

    entered: Counter = Counter()
    outcome: dict[tuple[str, str], OrderAccepted | OrderRejected] = {}
    for event in events:
        if isinstance(event, (OrderAccepted, OrderRejected)):
            key = (event.member_id, event.client_order_id)
            entered[key] += 1
            outcome[key] = event
    assert len(entered) == 600 and max(entered.values()) == 1, "every order reached the engine exactly once"
    fills = {event.trade_id: event for event in events if type(event) is OrderFilled}
    assert fills, "the members should have traded"

    reported: Counter = Counter()
    cum_qty: dict[int, int] = {}
    answered: Counter = Counter()
    for member, messages in logs.items():
        seqs = [message.session_seq for message in messages]
        assert seqs == list(range(1, len(seqs) + 1)), f"{member}: session_seq with a gap"
        for report in messages:
            if type(report) is not ExecutionReport:
                continue
            key = (member, report.client_order_id)
            assert key in outcome, f"{member} was told about an order the journal does not hold"
            entry = outcome[key]
            if report.exec_type in ("new", "rejected"):
                answered[key] += 1
                if isinstance(entry, OrderAccepted):
                    assert report.exec_type == "new" and report.order_id == entry.order_id
                else:
                    assert report.exec_type == "rejected" and report.reject_code == int(entry.reason)
            if report.order_id is not None:
                cum_qty[report.order_id] = report.cum_qty
            if report.exec_type == "trade":
                assert report.trade_id is not None and report.last_px is not None, "a trade report without its trade"
                fill = fills.get(report.trade_id)
                assert fill is not None, "an execution the journal does not hold"
                side_member = fill.buy_member_id if report.order_id == fill.buy_order_id else fill.sell_member_id
                assert report.order_id in (fill.buy_order_id, fill.sell_order_id) and side_member == member
                assert (report.last_qty, parse_price(report.last_px)) == (fill.qty_t, fill.price_fen)
                reported[(report.trade_id, report.order_id)] += 1
    assert set(answered) == set(outcome) and max(answered.values()) == 1, "each order answered exactly once"
    assert max(reported.values()) == 1, "an execution reported twice"
    expected = {(t, f.buy_order_id) for t, f in fills.items()} | {(t, f.sell_order_id) for t, f in fills.items()}
    assert set(reported) == expected, "the reports and the journal's fills differ"

    filled: dict[int, int] = defaultdict(int)
    for fill in fills.values():
        filled[fill.buy_order_id] += fill.qty_t
        filled[fill.sell_order_id] += fill.qty_t
    assert all(cum_qty.get(order_id) == qty for order_id, qty in filled.items()), "cum_qty differs from the fills"

    # Run again on the same directory: it already holds an exchange.
    assert run_served(simulate_args(data_dir)) == 2


def test_the_options_and_the_defaults(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_served_arguments(parser)
    args = parser.parse_args(["--window", "4", "--progress", "never"])
    assert (args.window, args.progress) == (4, "never")
    limits = served_config(Config()).risk.limits
    assert limits.orders_per_second >= 100_000 and limits.order_burst >= 100_000
    assert served_config(Config()).risk.limits.max_open_orders == Config().risk.limits.max_open_orders
    assert msgspec.structs.asdict(Config().risk.limits)["orders_per_second"] == 50, "the configuration is left as it was"


def test_a_lost_execution_report_fails_the_run(tmp_path: Path, monkeypatch, capsys) -> None:
    """The checks are not vacuous: one trade report the client drops turns the run red."""
    original = SimMember._report
    dropped: list[int | None] = []  # the trade id of the report dropped

    def lossy(self: SimMember, report: ExecutionReport) -> None:
        if report.exec_type == "trade" and not dropped:
            dropped.append(report.trade_id)
            return
        original(self, report)

    monkeypatch.setattr(SimMember, "_report", lossy)
    assert run_served(simulate_args(tmp_path / "data", members=4, commands=300)) == 1
    assert dropped
    out = capsys.readouterr().out
    assert "[FAILED] executions reported = the regulator's trades: " in out and "1 missing" in out
    assert "SOME CHECKS FAILED" in out


def test_the_progress_line() -> None:
    progress = Progress(total=20_000, enabled=False)
    progress.sent, progress.stage = 10_400, "2026-11-23 continuous 2/2"
    assert progress.line() == "[###############...............]  52% 10,400/20,000 orders  2026-11-23 continuous 2/2"
