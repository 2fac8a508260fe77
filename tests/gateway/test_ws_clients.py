"""24 concurrent clients (12 members, two sessions each) trading against each other with
random disconnects, reconnects and resubmissions of the same client order ids. Afterwards,
exactly, whatever the machine's load:

* each client order id reached the engine exactly once;
* no session saw a gap in session_seq, an execution the journal does not hold, an execution of
  another member's order, or the same execution twice;
* no session missed one: a session sees every execution of its member routed while it is
  connected, in stream order (trade ids grow with the stream), so between the first and the
  last execution it read it holds every one of its member's executions, and a session that
  stayed connected to the end (after a barrier through the hub) holds every one from its first
  on;
* every execution of the journal was either read live by a session or is recovered by order
  status after a reconnect: each order's ``cum_qty`` equals the journal's fills, each counted
  once.

A dropped connection loses what it had not read yet (the protocol's answer is the resync and
order status), so how many executions are read live depends on timing; that share is printed,
not asserted. The ``websockets`` library's client is used too when it is installed."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict

import pytest

from exchange.app import build_core
from exchange.engine import decode_command
from exchange.model.events import OrderAccepted, OrderFilled, OrderRejected
from tests.gateway.conftest import Member, fast_config, logged_on, order

pytestmark = pytest.mark.asyncio

MEMBERS = 12
CLIENTS_PER_MEMBER = 2
ORDERS_PER_CLIENT = 40
NO_SUCH_ORDER = 10**12


def journal_events(served) -> list:
    """Every event the journal holds, by replaying it through a fresh core."""
    exchange = served.parts.exchange
    exchange.flush()
    core = build_core(fast_config())
    events = []
    for record in exchange.engine.journal.records():
        events.extend(core.apply(record.seq, record.ts_ns, decode_command(record.payload)))
    return events


async def barrier(member: Member) -> None:
    """Wait until everything the hub had queued before now reached this session: a cancel of
    an unknown order goes through the hub's queue, and its reject comes back after every
    message routed before it."""
    await member.send({"type": "cancel", "instrument": "CEA-2025", "order_id": NO_SUCH_ORDER})
    while True:
        message = await member.expect("cancel_reject", timeout=30)
        if message["order_id"] == NO_SUCH_ORDER:
            return


async def run_client(http, served, key, name: str, seed: int, sessions: list[tuple[str, Member]]) -> tuple[list[str], Member]:
    rnd = random.Random(seed)
    member_id = f"C{name[1:3]}"
    ids = [f"{name}-{i}" for i in range(ORDERS_PER_CLIENT)]
    member = await logged_on(http, served, key, cancel_on_disconnect=False)
    sessions.append((member_id, member))
    i = 0
    while i < len(ids):
        side = rnd.choice(["buy", "sell"])
        price = f"58.{rnd.randrange(15, 26):02d}"
        await member.send(order(ids[i], side, rnd.randrange(1, 20), price))
        i += 1
        if rnd.random() < 0.15:  # drop the connection at once, come back, resend the last few
            await member.ws.close()
            member = await logged_on(http, served, key, cancel_on_disconnect=False)
            sessions.append((member_id, member))
            i = max(0, i - rnd.randrange(1, 4))
        elif rnd.random() < 0.3:
            await member.drain(0.01)
    return ids, member


async def test_concurrent_clients_lose_and_duplicate_nothing(served, http) -> None:
    keys = [await served.add_member(f"C{m:02d}") for m in range(MEMBERS)]
    await served.open_day()
    sessions: list[tuple[str, Member]] = []
    runs = [
        run_client(http, served, keys[m], f"c{m:02d}{c}", 1000 * m + c, sessions)
        for m in range(MEMBERS) for c in range(CLIENTS_PER_MEMBER)
    ]
    finished = await asyncio.gather(*runs)
    for _, last in finished:  # every session still connected holds all that was routed to it
        await barrier(last)
    events = journal_events(served)

    entered: defaultdict[tuple[str, str], int] = defaultdict(int)
    for event in events:
        if type(event) in (OrderAccepted, OrderRejected) and event.client_order_id:
            entered[(event.member_id, event.client_order_id)] += 1
    assert entered and max(entered.values()) == 1, "a client order id reached the engine twice"

    # The journal's executions: (order id, trade id) -> (member, quantity), per member in stream order.
    executions: dict[tuple[int, int], tuple[str, int]] = {}
    member_executions: dict[str, list[tuple[int, int]]] = defaultdict(list)  # (trade id, order id)
    for event in events:
        if type(event) is OrderFilled:
            for order_id, member_id in ((event.buy_order_id, event.buy_member_id), (event.sell_order_id, event.sell_member_id)):
                executions[(order_id, event.trade_id)] = (member_id, event.qty_t)
                member_executions[member_id].append((event.trade_id, order_id))
    assert executions, "the clients should have traded"

    still_connected = {id(last) for _, last in finished}
    read_live: set[tuple[int, int]] = set()
    for member_id, session in sessions:
        assert session.gaps == [], "session_seq gap"
        seen = [(r["order_id"], r["trade_id"], r["last_qty"]) for r in session.reports("trade")]
        keys_seen = [(order_id, trade_id) for order_id, trade_id, _ in seen]
        assert len(keys_seen) == len(set(keys_seen)), "an execution reported twice on one session"
        for order_id, trade_id, qty in seen:
            assert executions.get((order_id, trade_id)) == (member_id, qty), "an execution the journal does not hold"
        read_live.update(keys_seen)
        if not seen:
            continue
        first = min(trade_id for _, trade_id, _ in seen)
        last_trade = float("inf") if id(session) in still_connected else max(trade_id for _, trade_id, _ in seen)
        expected = {(o, t) for t, o in member_executions[member_id] if first <= t <= last_trade}
        assert set(keys_seen) == expected, f"a session of {member_id} missed an execution routed while it was connected"

    # Resync as a reconnecting client would: order status of every id; cum_qty must match the journal.
    checker = {}
    for m in range(MEMBERS):
        checker[m] = await logged_on(http, served, keys[m])
    accepted = {(e.member_id, e.client_order_id): e.order_id for e in events if type(e) is OrderAccepted}
    recovered: set[tuple[int, int]] = set()
    for index, (ids, _) in enumerate(finished):
        m = index // CLIENTS_PER_MEMBER
        member_id = f"C{m:02d}"
        for client_order_id in ids:
            await checker[m].send({"type": "order_status", "client_order_id": client_order_id})
            status = await checker[m].expect("execution_report", "error")
            while status["type"] == "execution_report" and status["client_order_id"] != client_order_id:
                status = await checker[m].expect("execution_report", "error")
            assert entered[(member_id, client_order_id)] == 1, f"{client_order_id} was lost"
            assert status["type"] == "execution_report"
            accepted_id = accepted.get((member_id, client_order_id))
            fills = [(o, t) for (o, t) in executions if o == accepted_id]
            assert status["cum_qty"] == sum(executions[key][1] for key in fills), "order status disagrees with the journal"
            recovered.update(key for key in fills if key not in read_live)
    unaccounted = set(executions) - read_live - recovered
    assert not unaccounted, f"executions neither reported live nor recovered by order status: {sorted(unaccounted)[:5]}"
    assert read_live.isdisjoint(recovered) and len(read_live) + len(recovered) == len(executions)
    print(f"{len(executions)} executions: {len(read_live)} read live, {len(recovered)} recovered by order status")


async def test_the_websockets_library_client(served) -> None:
    websockets = pytest.importorskip("websockets", reason="the websockets library is not installed; aiohttp's client covers the rest")
    import msgspec
    from tests.gateway.conftest import logon_frame

    key = await served.add_member("W1")
    async with websockets.connect(served.ws_url.replace("http", "ws", 1), compression=None) as ws:
        await ws.send(msgspec.json.encode(logon_frame(*key)).decode())
        assert msgspec.json.decode(await ws.recv())["type"] == "logon_ack"
