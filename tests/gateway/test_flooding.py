"""Flooding members (issue 10, finding 2 and parts of 7), over real WebSockets to a served
exchange: the frame budgets per session and per member (error 13, nothing journalled), the
bound on a member's waiting commands (error 14), cancels of orders that are not live answered
by the gateway, round-robin between members' backlogs, the error budget per member across
reconnects, the queue-depth metric, duplicate keys; and the pure parts (buckets, the derived
defaults, the work queue's order).

Nothing here measures time: the budgets' clock is frozen (``monotonic_ns``) or moved by hand,
and the engine is held by a blocking job while work piles up, so every verdict is a count or
a position."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from exchange.config import Config, ConfigError, GatewayConfig, parse_config
from exchange.gateway.hub import MAX_BATCH, Hub, WorkQueue, _Work
from exchange.gateway.member import wire
from exchange.gateway.member.budget import NANO, BudgetLimits, FrameBudget, TokenBucket
from exchange.model import SubmitOrder
from tests.gateway.conftest import (
    SYMBOL,
    Member,
    Served,
    fast_config,
    logged_on,
    order,
    start_served,
    stop_served,
)


THROTTLED = int(wire.ErrorCode.THROTTLED)
TOO_MANY_PENDING = int(wire.ErrorCode.TOO_MANY_PENDING)


class Clock:
    """The budgets' clock, moved only by the test."""

    def __init__(self) -> None:
        self.now_ns = 10**12

    def __call__(self) -> int:
        return self.now_ns


def gateway_config(**fields: int) -> Config:
    return msgspec.structs.replace(fast_config(), gateway=GatewayConfig(**fields))


async def served_with(tmp_path: Path, config: Config, **hub_options: Any) -> Served:
    served = await start_served(tmp_path / "data", config=config, **hub_options)
    await served.open_day()
    return served


async def wait_until(condition: Callable[[], bool], what: str, limit_s: float = 60.0) -> None:
    """Poll until the condition holds (the limit only stops a broken run; no verdict on time)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    while not condition():
        assert loop.time() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.01)


class EngineHeld:
    """A blocking job that holds the drain task until released: work piles up meanwhile."""

    def __init__(self, hub: Hub) -> None:
        self.gate = threading.Event()
        self.task = asyncio.create_task(hub.run_blocking(lambda service: self.gate.wait(60)))

    async def release(self) -> None:
        self.gate.set()
        await self.task


async def reports_and_errors(member: Member, count: int, prefix: str = "") -> tuple[list[dict], list[dict]]:
    """Wait for ``count`` answers: errors, and ``new``/``rejected`` reports of orders whose
    client order id starts with ``prefix`` (a member's sessions all get its reports)."""
    got: list[dict] = []
    while len(got) < count:
        message = await member.expect("execution_report", "error")
        if message["type"] == "error" or (
                message["exec_type"] in ("new", "rejected") and message["client_order_id"].startswith(prefix)):
            got.append(message)
    return [m for m in got if m["type"] == "execution_report"], [m for m in got if m["type"] == "error"]


# -- frame budgets -----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_frames_over_the_session_budget_are_answered_and_never_journalled(tmp_path, http) -> None:
    clock = Clock()
    served = await served_with(tmp_path, gateway_config(session_frame_burst=5, session_frames_per_second=1000),
                               monotonic_ns=clock)
    try:
        member = await logged_on(http, served, await served.add_member("M1"))
        seq_before = served.hub.service.last_seq
        for i in range(12):
            await member.send(order(f"o-{i}", "buy", 1, "55.00"))
        accepted, errors = await reports_and_errors(member, 12)
        assert [r["client_order_id"] for r in accepted] == [f"o-{i}" for i in range(5)]
        assert [e["code"] for e in errors] == [THROTTLED] * 7
        assert errors[0]["problem"] == "over the session's frame budget: new_order o-5 was not taken"
        assert served.hub.service.last_seq - seq_before == 5, "only the budgeted orders reached the journal"
        assert served.hub.tracker.lookup_client_order("M1", "o-5") is None
        assert served.hub.metrics.gateway_refusals["session_budget"] == 7

        clock.now_ns += NANO // 1000  # one frame's worth of refill: the throttled id is free
        await member.send(order("o-5", "buy", 1, "55.00"))
        again = await member.expect("execution_report")
        assert (again["exec_type"], again["client_order_id"]) == ("new", "o-5")
        assert member.gaps == []
    finally:
        await stop_served(served)


@pytest.mark.asyncio
async def test_the_member_budget_is_shared_by_its_sessions_and_kept_across_reconnects(tmp_path, http) -> None:
    clock = Clock()
    config = gateway_config(session_frame_burst=5, member_frame_burst=8, session_frames_per_second=1000,
                            member_frames_per_second=1000)
    served = await served_with(tmp_path, config, monotonic_ns=clock)
    try:
        key = await served.add_member("M1")
        first, second = await logged_on(http, served, key), await logged_on(http, served, key)
        for i in range(5):
            await first.send(order(f"a-{i}", "buy", 1, "55.00"))
        accepted, errors = await reports_and_errors(first, 5)
        assert len(accepted) == 5 and errors == []
        for i in range(5):
            await second.send(order(f"b-{i}", "buy", 1, "55.00"))
        accepted, errors = await reports_and_errors(second, 5, prefix="b-")
        assert len(accepted) == 3 and [e["code"] for e in errors] == [THROTTLED, THROTTLED]
        assert errors[0]["problem"] == "over the member's frame budget: new_order b-3 was not taken"
        assert sorted(o.client_order_id for o in served.hub.tracker.open_orders("M1")) == sorted(
            [f"a-{i}" for i in range(5)] + ["b-0", "b-1", "b-2"])
        await first.close()
        await second.close()

        third = await logged_on(http, served, key)  # a new connection buys no new budget
        await third.send({"type": "heartbeat"})
        assert (await third.expect("error"))["code"] == THROTTLED
    finally:
        await stop_served(served)


@pytest.mark.asyncio
async def test_a_flood_reaches_the_journal_only_up_to_the_budget(tmp_path, http) -> None:
    """2,000 frames as fast as the socket takes them, with a frozen budget clock: the burst
    passes, the rest is answered (13) and costs the journal and the tracker nothing."""
    served = await served_with(tmp_path, gateway_config(session_frame_burst=40, session_frames_per_second=10**6),
                               monotonic_ns=Clock())
    try:
        flooder = await logged_on(http, served, await served.add_member("FLOOD"))
        seq_before = served.hub.service.last_seq
        frames = [msgspec.json.encode(order(f"f-{i}", "buy", 1, "55.00")).decode() for i in range(2_000)]
        for frame in frames:
            await flooder.ws.send_str(frame)
        for i in range(20):  # and cancels of unknown ids, which used to go to the journal unthrottled
            await flooder.send({"type": "cancel", "instrument": SYMBOL, "order_id": 10**6 + i})
        accepted, errors = await reports_and_errors(flooder, 2_000)
        assert len(accepted) == 40 and len(errors) == 1_960
        await wait_until(lambda: served.hub.metrics.gateway_refusals["session_budget"] == 1_980, "every frame answered")
        assert served.hub.service.last_seq - seq_before == 40
        assert len(served.hub.tracker.open_orders("FLOOD")) == 40
    finally:
        await stop_served(served)


# -- waiting commands and fairness ---------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_members_waiting_commands_are_bounded_and_a_mass_cancel_still_goes(tmp_path, http) -> None:
    served = await served_with(tmp_path, gateway_config(member_max_pending=10))
    try:
        member = await logged_on(http, served, await served.add_member("M1"))
        held = EngineHeld(served.hub)
        for i in range(15):
            await member.send(order(f"p-{i}", "buy", 1, "55.00"))
        errors = [await member.expect("error") for _ in range(5)]
        assert [e["code"] for e in errors] == [TOO_MANY_PENDING] * 5
        assert errors[0]["problem"] == "the member has 10 commands waiting for the exchange: new_order p-10 was not taken"
        await member.send({"type": "mass_cancel"})
        await wait_until(lambda: served.hub.waiting("M1") == 11, "the mass cancel queued beyond the bound")
        await held.release()
        accepted, _ = await reports_and_errors(member, 10)
        assert [r["client_order_id"] for r in accepted] == [f"p-{i}" for i in range(10)]
        await wait_until(lambda: not served.hub.tracker.open_orders("M1"), "the mass cancel ran")
        await member.send(order("p-10", "buy", 1, "55.00"))  # never taken: its id is free
        accepted, _ = await reports_and_errors(member, 1, prefix="p-10")
        assert accepted[0]["exec_type"] == "new"
        assert served.hub.metrics.gateway_refusals["member_pending"] == 5
    finally:
        await stop_served(served)


@pytest.mark.asyncio
async def test_a_flooders_backlog_does_not_sit_in_front_of_another_members_order(served, http) -> None:
    hub = served.hub
    flood_key, honest_key = await served.add_member("FLOOD"), await served.add_member("HONEST")
    await served.open_day()
    flooder, honest = await logged_on(http, served, flood_key), await logged_on(http, served, honest_key)
    executed: list[tuple[int, str]] = []  # (batch number, the member of each order executed)
    batches = [0]
    run_batch, execute = hub._run_batch, hub.service.execute

    async def counting_batches(batch: list) -> bool:
        batches[0] += 1
        return await run_batch(batch)

    def recording(command):
        if isinstance(command, SubmitOrder):
            executed.append((batches[0], command.member_id))
        return execute(command)

    hub._run_batch = counting_batches
    hub.service.execute = recording
    held = EngineHeld(hub)
    await wait_until(lambda: batches[0] == 1, "the engine is held")
    for i in range(5_000):
        await flooder.send(order(f"f-{i}", "buy", 1, "55.00"))
    await wait_until(lambda: hub.waiting("FLOOD") == 5_000, "the flood queued")
    await honest.send(order("honest-1", "sell", 1, "60.00"))
    await wait_until(lambda: hub.waiting("HONEST") == 1, "the honest order queued")
    await held.release()
    report = await honest.expect("execution_report")
    assert (report["exec_type"], report["client_order_id"]) == ("new", "honest-1")

    position = [member for _, member in executed].index("HONEST")
    assert position <= 1, f"the honest order ran after {position} of the flooder's"
    assert executed[position][0] == 2, "in the first batch after the engine was released"
    await wait_until(lambda: len(executed) == 5_001, "the flood executed")
    assert [member for _, member in executed].count("FLOOD") == 5_000
    assert max(batch for batch, _ in executed) - 1 >= 5_000 // MAX_BATCH  # the flood took its batches


@pytest.mark.asyncio
async def test_the_queue_depth_metric_counts_members_commands(served, http) -> None:
    member = await logged_on(http, served, await served.add_member("M1"))
    await served.open_day()
    held = EngineHeld(served.hub)
    for i in range(3):
        await member.send(order(f"q-{i}", "buy", 1, "55.00"))
    await wait_until(lambda: served.hub.waiting("M1") == 3, "three orders waiting")
    async with http.get(served.url + "/metrics") as response:
        text = await response.text()
    assert "exchange_command_queue_depth 3.0\n" in text  # prometheus_client writes floats
    await held.release()
    await reports_and_errors(member, 3)
    assert "exchange_command_queue_depth 0.0\n" in served.hub.metrics.render()


# -- cancels of orders that are not live ----------------------------------------------------------


@pytest.mark.asyncio
async def test_cancels_and_amends_of_orders_that_are_not_live_are_answered_without_the_journal(served, http) -> None:
    alice, bob = await served.add_member("ALICE"), await served.add_member("BOB")
    await served.open_day()
    a, b = await logged_on(http, served, alice), await logged_on(http, served, bob)
    await b.send(order("bob-1", "buy", 1, "55.00"))
    bobs = (await b.expect("execution_report"))["order_id"]
    await a.send(order("gone", "buy", 1, "55.00"))
    gone = (await a.expect("execution_report"))["order_id"]
    await a.send({"type": "cancel", "instrument": SYMBOL, "order_id": gone})
    assert (await a.expect("execution_report"))["exec_type"] == "canceled"
    await a.send(order("live", "buy", 1, "55.00"))
    live = (await a.expect("execution_report"))["order_id"]

    seq_before = served.hub.service.last_seq
    cases = [
        ({"type": "cancel", "instrument": SYMBOL, "order_id": 987_654}, ("cancel", 987_654, None, 109)),
        ({"type": "cancel", "instrument": SYMBOL, "order_id": bobs}, ("cancel", bobs, None, 109)),
        ({"type": "cancel", "instrument": SYMBOL, "order_id": gone}, ("cancel", gone, "gone", 109)),
        ({"type": "cancel", "instrument": SYMBOL, "client_order_id": "gone"}, ("cancel", gone, "gone", 109)),
        ({"type": "cancel", "instrument": "CCER", "order_id": live}, ("cancel", live, "live", 109)),
        ({"type": "cancel", "instrument": "NOT-LISTED", "order_id": live}, ("cancel", live, "live", 501)),
        ({"type": "amend", "instrument": SYMBOL, "order_id": gone, "qty": 1, "price": "55.00"}, ("amend", gone, "gone", 109)),
        ({"type": "amend", "instrument": SYMBOL, "client_order_id": "nope", "qty": 1, "price": "55.00"},
         ("amend", None, "nope", 109)),
    ]
    for frame, expected in cases:
        await a.send(frame)
        reject = await a.expect("cancel_reject")
        assert (reject["response_to"], reject["order_id"], reject["client_order_id"], reject["reject_code"]) == expected, frame
    assert served.hub.service.last_seq == seq_before, "nothing of those reached the journal"
    assert served.hub.metrics.gateway_refusals["order_not_live"] == len(cases)

    await a.send({"type": "cancel", "instrument": SYMBOL, "order_id": live})  # a live one still goes
    assert (await a.expect("execution_report"))["exec_type"] == "canceled"
    assert served.hub.service.last_seq == seq_before + 1
    assert a.gaps == []


# -- the error budget per member --------------------------------------------------------------------


@pytest.mark.asyncio
async def test_reconnecting_does_not_reset_the_members_error_budget(tmp_path, http) -> None:
    served = await served_with(tmp_path, fast_config(), monotonic_ns=Clock())
    try:
        key = await served.add_member("M1")
        first = await logged_on(http, served, key)
        for _ in range(wire.MAX_ERRORS_PER_MINUTE):
            await first.ws.send_str("{")
        codes = [m["code"] for m in [await first.expect("error") for _ in range(wire.MAX_ERRORS_PER_MINUTE)]]
        assert codes == [int(wire.ErrorCode.MALFORMED_JSON)] * wire.MAX_ERRORS_PER_MINUTE
        await first.ws.send_str("{")
        assert (await first.expect("error"))["code"] == wire.ErrorCode.TOO_MANY_ERRORS
        assert (await first.expect("session_closing"))["reason"] == "too_many_errors"

        second = await logged_on(http, served, key)
        await second.ws.send_str("{")
        assert (await second.expect("error"))["code"] == wire.ErrorCode.TOO_MANY_ERRORS
        assert (await second.expect("session_closing"))["reason"] == "too_many_errors"
    finally:
        await stop_served(served)


# -- duplicate keys ------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_frame_naming_a_field_twice_is_refused_not_last_wins(served, http) -> None:
    member = await logged_on(http, served, await served.add_member("M1"))
    await served.open_day()
    seq_before = served.hub.service.last_seq
    await member.ws.send_str('{"type":"new_order","client_order_id":"d-1","instrument":"CEA-2025",'
                             '"side":"buy","qty":1,"price":"55.00","qty":90000}')
    error = await member.expect("error")
    assert (error["code"], error["field"]) == (wire.ErrorCode.INVALID_FIELD, "qty")
    assert error["problem"] == "the field is given more than once"
    assert served.hub.service.last_seq == seq_before


# -- the pure parts ---------------------------------------------------------------------------------


def test_the_budgets_derive_from_the_order_rate_unless_configured() -> None:
    assert BudgetLimits.of(Config()) == BudgetLimits(100, 200, 200, 400, 400)
    config = parse_config(b"[risk.limits]\norders_per_second = 10\norder_burst = 30\n[gateway]\nmember_max_pending = 7\n")
    assert BudgetLimits.of(config) == BudgetLimits(20, 60, 40, 120, 7)
    with pytest.raises(ConfigError, match="session_frame_brust"):
        parse_config(b"[gateway]\nsession_frame_brust = 5\n")
    with pytest.raises(ConfigError, match="member_frame_burst"):
        parse_config(b"[gateway]\nmember_frame_burst = 0\n")


def test_a_token_bucket_refills_in_integers_and_a_refusal_takes_nothing() -> None:
    bucket = TokenBucket(per_second=4, burst=2)
    went = []
    for _ in range(3):
        went.append(bucket.has_token(0))
        if went[-1]:
            bucket.take()
    assert went == [True, True, False]
    assert bucket.wait_ns() == NANO // 4
    assert not bucket.has_token(NANO // 4 - 1)
    assert bucket.has_token(NANO // 4)
    bucket.take()
    assert bucket.has_token(10 * NANO) and bucket.tokens == 2 * NANO, "never above the burst"
    budget = FrameBudget(TokenBucket(1000, 1), TokenBucket(1000, 5))
    assert budget.spend(0) is None and budget.spend(0) == "session"
    assert budget.member.tokens == 4 * NANO, "the refused frame took nothing from the member"
    assert budget.wait_s() == pytest.approx(0.001)


@pytest.mark.asyncio
async def test_the_work_queue_takes_members_in_turns_and_keeps_barriers_in_place() -> None:
    queue = WorkQueue()
    loop = asyncio.get_running_loop()

    def work(name: str, member: str | None) -> _Work:
        return _Work(lambda service: None, name, loop.create_future(), member_id=member)

    for name, member in [("a1", "A"), ("a2", "A"), ("a3", "A"), ("b1", "B"), ("op", None), ("a4", "A"), ("c1", "C")]:
        queue.put(work(name, member))
    assert (queue.size, queue.waiting("A"), queue.waiting("B")) == (7, 4, 1)
    first = await queue.take(3)
    assert [w.command for w in first] == ["a1", "b1", "a2"]
    rest = await queue.take(100)
    assert [w.command for w in rest] == ["a3", "op", "a4", "c1"], "the barrier runs after all before it"
    assert (queue.size, queue.waiting("A")) == (0, 0)
