"""What the served run found, and the checks it makes of it.

The served run is not reproducible (the sockets interleave), so instead of pinning a journal
it checks consistency between what the members were told, what the regulator reads and what
the journal rebuilds:

* every new order was answered exactly once (``new`` or ``rejected``);
* every order reached exactly one final state, except GTC orders still open at the end, which
  the exchange must count as open too;
* the members' ``trade`` reports are exactly the regulator's trades, two per trade, with the
  same quantity, price and members; each order's fills add up to its ``cum_qty``; no execution
  is reported twice;
* ``session_seq`` and the book feed without gaps on every connection;
* no ``error`` frame, no session closed by the server, no report a member cannot place;
* each day's close statistics equal the regulator's trades, and its settlement reconciles with
  zero differences over the same trades and value;
* after a settled day the next start of day changes nothing, and the state rebuilt from the
  journal alone has the state hash the running exchange reported.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from exchange.gateway.member.wire import parse_price

if TYPE_CHECKING:
    from exchange.sim.member_client import SimMember


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class DayResult:
    trading_day: str
    closes: list[dict] = field(default_factory=list)  # the DayClosed events of end of day
    trades: list[dict] = field(default_factory=list)  # the regulator's trades of the day
    settlement: dict | None = None  # the settlement report, as the endpoint answered
    settlement_error: str = ""
    holding_changes: int = 0  # start-of-day loads that changed the exchange's view (after day 1)


@dataclass
class ServedRun:
    url: str = ""
    data_dir: str = ""
    seed: int = 0
    members: int = 0
    window: int = 0
    styles: Counter = field(default_factory=Counter)
    requests: Counter = field(default_factory=Counter)  # order, cancel, amend, mass_cancel
    exec_types: Counter = field(default_factory=Counter)
    order_rejects: Counter = field(default_factory=Counter)  # reject code -> count
    cancel_rejects: Counter = field(default_factory=Counter)  # (cancel|amend, code) -> count
    cancel_reasons: Counter = field(default_factory=Counter)
    operator: Counter = field(default_factory=Counter)  # action -> count
    operator_refusals: Counter = field(default_factory=Counter)  # (action, code) -> count
    days: list[DayResult] = field(default_factory=list)
    trading_s: float = 0.0  # wall time of the continuous sessions
    elapsed_s: float = 0.0  # the whole run, set-up and shutdown included
    latencies_ns: list[int] = field(default_factory=list)  # new order -> its first answer
    open_orders_at_end: dict[str, int] = field(default_factory=dict)  # the exchange's count, per member
    state_hash: str = ""
    replay_hash: str = ""
    hub_fatal: str = ""  # what stopped the hub, if anything did
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(check.ok for check in self.checks)

    @property
    def orders(self) -> int:
        return self.requests["order"]

    @property
    def orders_per_s(self) -> float:
        return self.orders / self.trading_s if self.trading_s else 0.0


def gather(result: ServedRun, clients: list[SimMember]) -> None:
    """Add up what the members counted."""
    for client in clients:
        result.requests.update(client.requests)
        result.exec_types.update(client.exec_types)
        result.order_rejects.update(client.order_rejects)
        result.cancel_rejects.update(client.cancel_rejects)
        result.cancel_reasons.update(client.cancel_reasons)
        result.latencies_ns.extend(client.latencies_ns)


def run_checks(result: ServedRun, clients: list[SimMember]) -> list[Check]:
    return [
        answered_once(clients),
        one_final_state(result, clients),
        executions_are_the_trades(result, clients),
        no_gaps(clients),
        no_problems(clients),
        closes_are_the_trades(result),
        settlements_reconcile(result),
        open_changes_nothing(result),
        journal_rebuilds_state(result),
    ]


def answered_once(clients: list[SimMember]) -> Check:
    orders = [order for client in clients for order in client.orders.values()]
    unanswered = sum(1 for order in orders if order.answers == 0)
    twice = sum(1 for order in orders if order.answers > 1)
    return Check("every order answered once (new or rejected)", not unanswered and not twice,
                 f"{len(orders):,} orders, {unanswered} unanswered, {twice} answered twice")


def one_final_state(result: ServedRun, clients: list[SimMember]) -> Check:
    open_gtc = bad_final = total = 0
    for client in clients:
        for order in client.orders.values():
            total += 1
            if order.is_open and order.tif == "gtc" and order.finals == 0:
                open_gtc += 1
            elif order.finals != 1:
                bad_final += 1
    mismatched = sorted(c.member_id for c in clients if len(c.open) != result.open_orders_at_end.get(c.member_id, -1))
    disagree = "" if not mismatched else f" except for {len(mismatched)} members: " + ", ".join(mismatched[:5])
    return Check(
        "every order has exactly one final state", not bad_final and not mismatched,
        f"{total - open_gtc - bad_final:,} final, {open_gtc:,} GTC still open (the exchange agrees"
        f"{disagree}), {bad_final} without exactly one",
    )


def executions_are_the_trades(result: ServedRun, clients: list[SimMember]) -> Check:
    cum_wrong = sum(1 for client in clients for order in client.orders.values() if order.filled != order.cum)
    reported: Counter = Counter()
    details: dict[tuple[int, int | None], tuple[str, str, int, str]] = {}
    for client in clients:
        for trading_day, trade_id, order_id, side, qty, price in client.fills:
            reported[(trading_day, trade_id, order_id)] += 1
            details[(trade_id, order_id)] = (client.member_id, side, qty, price)
    expected, wrong, trades = set(), 0, 0
    for day in result.days:
        for t in day.trades:
            trades += 1
            for order_id, member, side in ((t["buy_order_id"], t["buy_member_id"], "buy"),
                                           (t["sell_order_id"], t["sell_member_id"], "sell")):
                expected.add((day.trading_day, t["trade_id"], order_id))
                seen = details.get((t["trade_id"], order_id))
                wrong += seen is not None and seen != (member, side, t["qty_t"], t["price"])
    missing, invented = len(expected - set(reported)), len(set(reported) - expected)
    duplicated = sum(1 for n in reported.values() if n > 1)
    return Check(
        "executions reported = the regulator's trades",
        not (missing or invented or duplicated or wrong or cum_wrong),
        f"{sum(reported.values()):,} trade reports for {trades:,} trades: {missing} missing, {invented} not "
        f"in the trades, {duplicated} duplicated, {wrong} different, {cum_wrong} orders whose fills miss cum_qty",
    )


def no_gaps(clients: list[SimMember]) -> Check:
    seq_gaps = sum(client.seq_gaps for client in clients)
    book_gaps = sum(client.view.book_gaps for client in clients)
    return Check("sequence numbers without gaps", not seq_gaps and not book_gaps,
                 f"session_seq gaps {seq_gaps}, book feed gaps {book_gaps} on {len(clients)} connections")


def no_problems(clients: list[SimMember]) -> Check:
    problems = [f"{client.member_id}: {problem}" for client in clients for problem in client.problems]
    return Check("no error, no dropped session, no stray report", not problems,
                 "none" if not problems else f"{len(problems)}: " + "; ".join(problems[:5]))


def closes_are_the_trades(result: ServedRun) -> Check:
    wrong = []
    for day in result.days:
        volume: Counter = Counter()
        count: Counter = Counter()
        for t in day.trades:
            volume[t["instrument"]] += t["qty_t"]
            count[t["instrument"]] += 1
        for close in day.closes:
            if (close["volume_t"], close["trade_count"]) != (volume[close["instrument"]], count[close["instrument"]]):
                wrong.append(f"{day.trading_day} {close['instrument']}")
    return Check("close statistics = the regulator's trades", not wrong and all(d.closes for d in result.days),
                 "equal" if not wrong else "different: " + ", ".join(wrong))


def settlements_reconcile(result: ServedRun) -> Check:
    wrong = []
    for day in result.days:
        report = day.settlement
        value = sum(parse_price(t["price"]) * t["qty_t"] for t in day.trades)
        volume_t = sum(t["qty_t"] for t in day.trades)
        if report is None:
            wrong.append(f"{day.trading_day}: {day.settlement_error}")
        elif report["differences"] or (report["trades"], report["volume_t"], report["value_fen"]) != (len(day.trades), volume_t, value):
            wrong.append(f"{day.trading_day}: {len(report['differences'])} differences, "
                         f"{report['trades']} trades settled of {len(day.trades)}")
    return Check("settlement reconciled, zero differences", not wrong, "every day" if not wrong else "; ".join(wrong))


def open_changes_nothing(result: ServedRun) -> Check:
    changes = sum(day.holding_changes for day in result.days)
    return Check("start of day after a settlement changes nothing", not changes,
                 f"{changes} holdings changed at the open of a later day")


def journal_rebuilds_state(result: ServedRun) -> Check:
    same = bool(result.state_hash) and result.state_hash == result.replay_hash
    detail = "state hash identical" if same else f"served {result.state_hash[:16]}, replayed {result.replay_hash[:40]}"
    if result.hub_fatal:
        detail += f"; the hub stopped: {result.hub_fatal}"
    return Check("the journal rebuilds the same state", same and not result.hub_fatal, detail)
