"""The served run's summary as it is printed: the members and their rate, the execution reports,
each instrument's day, the rejects by reason, the operator's actions, each settlement and the
checks, ending with ``all checks passed`` (or ``SOME CHECKS FAILED``) and the state hash.
"""

from __future__ import annotations

import sys
from typing import TextIO

from exchange.model.rejects import RejectReason
from exchange.model.units import format_fen
from exchange.sim.checks import ServedRun


def _percentile(values: list[int], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] / 1e6


def print_served_summary(run: ServedRun, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    sections = (_rates, _reports, _instruments, _rejects, _operator, _settlements, _checks)
    for section in sections:
        for line in section(run):
            print(line, file=out)


def _rates(run: ServedRun) -> list[str]:
    styles = ", ".join(f"{n} {style}s" for style, n in sorted(run.styles.items()))
    return [
        f"served simulation: {len(run.days)} trading day(s), {run.members} members over WebSockets ({styles}), "
        f"seed {run.seed}, window {run.window}",
        f"orders {run.orders:,}  cancels {run.requests['cancel']:,}  amends {run.requests['amend']:,}  "
        f"mass cancels {run.requests['mass_cancel']:,}  in {run.trading_s:.1f} s of continuous trading: "
        f"{run.orders_per_s:,.0f} orders/s over the sockets; order to first answer "
        f"p50 {_percentile(run.latencies_ns, 0.5):.1f} ms, p99 {_percentile(run.latencies_ns, 0.99):.1f} ms; "
        f"whole run {run.elapsed_s:.1f} s",
    ]


def _reports(run: ServedRun) -> list[str]:
    order = ("new", "trade", "replaced", "canceled", "expired", "rejected", "order_status")
    lines = ["execution reports: " + "  ".join(f"{kind} {run.exec_types[kind]:,}" for kind in order if run.exec_types[kind])]
    if run.cancel_reasons:
        lines.append("cancelled because: " + "  ".join(f"{reason} {n:,}" for reason, n in sorted(run.cancel_reasons.items())))
    return lines


def _price(value: int | None) -> str:
    return format_fen(value) if value is not None else "-"


def _instruments(run: ServedRun) -> list[str]:
    lines = [f"{'instrument':<10} {'open':>9} {'high':>9} {'low':>9} {'close':>9} {'volume t':>13} {'turnover CNY':>18} {'trades':>8}"]
    for symbol, item in _instrument_table(run).items():
        lines.append(
            f"{symbol:<10} {_price(item['open']):>9} {_price(item['high']):>9} {_price(item['low']):>9} "
            f"{_price(item['close']):>9} {item['volume']:>13,} {format_fen(item['turnover'], grouped=True):>18} {item['trades']:>8,}"
        )
    return lines


def _rejects(run: ServedRun) -> list[str]:
    rows = [(f"{code} {_reason_name(code)}", n) for code, n in sorted(run.order_rejects.items())]
    rows += [(f"{code} {_reason_name(code)} ({what})", n) for (what, code), n in sorted(run.cancel_rejects.items())]
    return ["rejects by reason:"] + [f"  {name:<48} {count:>8,}" for name, count in rows or [("none", 0)]]


def _operator(run: ServedRun) -> list[str]:
    if not run.operator:
        return []
    line = "operator: " + "  ".join(f"{what} {n}" for what, n in sorted(run.operator.items()))
    refused = sum(run.operator_refusals.values())
    if refused:
        kinds = ", ".join(f"{what} {_reason_name(code)}" for (what, code) in sorted(run.operator_refusals, key=str))
        line += f"  ({refused} refused: {kinds})"
    return [line]


def _settlements(run: ServedRun) -> list[str]:
    lines = []
    for day in run.days:
        report = day.settlement
        if report is None:
            lines.append(f"settlement of {day.trading_day} STOPPED: {day.settlement_error}")
            continue
        lines.append(
            f"settled {report['trading_day']}: {report['trades']:,} trades, {report['volume_t']:,} t, "
            f"{format_fen(report['value_fen'], grouped=True)} CNY among {report['members']:,} members; "
            f"{report['allowance_legs']:,} allowance legs and {report['cash_legs']:,} cash legs; "
            f"reconciliation: {len(report['differences'])} differences"
        )
    return lines


def _checks(run: ServedRun) -> list[str]:
    lines = ["checks:"] + [f"  [{'ok' if check.ok else 'FAILED'}] {check.name}: {check.detail}" for check in run.checks]
    return lines + [f"{'all checks passed' if run.ok else 'SOME CHECKS FAILED'}; state hash {run.state_hash}"]


_REASON_NAMES: dict[int, str] = {int(reason): reason.name for reason in RejectReason}


def _reason_name(code: int | None) -> str:
    """The reject reason's name for a known code, else the code as given."""
    name = _REASON_NAMES.get(code) if code is not None else None
    return name if name is not None else str(code)


def _instrument_table(run: ServedRun) -> dict[str, dict]:
    table: dict[str, dict] = {}
    for day in run.days:
        for close in day.closes:
            item = table.setdefault(close["instrument"], {"open": None, "high": None, "low": None, "close": 0,
                                                          "volume": 0, "turnover": 0, "trades": 0})
            if close["open_fen"] is not None:
                item["open"] = item["open"] if item["open"] is not None else close["open_fen"]
                item["high"] = max(item["high"] or 0, close["high_fen"])
                item["low"] = close["low_fen"] if item["low"] is None else min(item["low"], close["low_fen"])
            item["close"] = close["close_fen"]
            item["volume"] += close["volume_t"]
            item["turnover"] += close["turnover_fen"]
            item["trades"] += close["trade_count"]
    return dict(sorted(table.items()))
