"""Session guards across a crash: cancel-on-disconnect and the dead-man timer are journalled
(``SetSessionGuard``), kept by a snapshotted projection (``SessionGuards``), and after a
restart a guarded member who does not log back on within its grace period has its orders
cancelled by a journalled ``MassCancel``.

The crash is a real SIGKILL of ``exchange serve`` (as in test_serve_restart.py); members are
real WebSocket clients. Waits are on conditions with generous timeouts, never on elapsed time.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from exchange.app import build_core
from exchange.config import Config
from exchange.engine import decode_command
from exchange.gateway.guards import Guard, SessionGuards, effective_guard
from exchange.model.commands import MassCancel, SetSessionGuard
from exchange.model.events import OrderCancelled, SessionGuardSet
from exchange.model.stream import Applied
from exchange.serve import compose
from tests.gateway.conftest import replay_journal
from tests.gateway.conftest import (
    DAY, Member, call, fast_config, fixed_day_config_file, logged_on, open_registry_account, order, start_served,
    stop_served,
)

pytestmark = pytest.mark.asyncio
ROOT = Path(__file__).resolve().parents[2]
WAIT_S = 30.0  # generous: a condition that must come true, on a loaded machine too


# -- a real `exchange serve` ---------------------------------------------------------------------


class Serve:
    """One ``exchange serve`` process over a data directory."""

    def __init__(self, process: subprocess.Popen, url: str, start_seq: int) -> None:
        self.process, self.url, self.start_seq = process, url, start_seq

    @classmethod
    async def start(cls, data_dir: Path, *options: str) -> Serve:
        process = subprocess.Popen(
            [sys.executable, "-c", "import sys; from exchange.serve import main; sys.exit(main(sys.argv[1:]))",
             "--port", "0", "--data-dir", str(data_dir), "--config", fixed_day_config_file(data_dir.parent), *options],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        assert process.stdout is not None  # stdout=PIPE
        line = await asyncio.to_thread(process.stdout.readline)
        match = re.search(r"serving on (http://\S+) .*state at seq (\d+)", line)
        if not match:
            process.kill()
            process.wait()
            raise AssertionError(f"no URL in {line!r}")
        return cls(process, match[1], int(match[2]))

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    async def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(self.process.wait, 20) == 0

    def reap(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


async def open_market(http: aiohttp.ClientSession, serve: Serve, data_dir: Path, member_id: str) -> tuple[str, bytes]:
    """Admit and fund a member, open the day, continuous trading; the member's key."""
    tokens = json.loads((data_dir / "operator-tokens.json").read_text())
    admin, clearing = tokens["admin"], tokens["clearing"]
    await call(http, serve.url, admin, "POST", "/members", {"member_id": member_id, "kind": "voluntary"})
    issued = await call(http, serve.url, admin, "POST", f"/members/{member_id}/credentials")
    await call(http, serve.url, clearing, "POST", "/clearing/deposits", {"member_id": member_id, "amount_fen": 10**10, "reference": "opening"})
    open_registry_account(data_dir, member_id)
    await call(http, serve.url, clearing, "POST", "/clearing/start-of-day", {"trading_day": DAY})
    await call(http, serve.url, admin, "POST", "/market/phase", {"phase": "continuous"})
    return issued["key_id"], bytes.fromhex(issued["secret"])


async def rest_orders(member: Member, prefix: str, n: int) -> list[str]:
    """Place ``n`` resting buy orders; their client order ids, each acknowledged (durable)."""
    ids = []
    for i in range(n):
        await member.send(order(f"{prefix}-{i}", "buy", 10 + i, f"57.{i:02d}"))
        report = await member.expect("execution_report")
        assert report["exec_type"] == "new", report
        ids.append(report["client_order_id"])
    return ids


async def open_orders(http: aiohttp.ClientSession, serve: Serve, data_dir: Path, member_id: str) -> int:
    tokens = json.loads((data_dir / "operator-tokens.json").read_text())
    members = await call(http, serve.url, tokens["admin"], "GET", "/members")
    [account] = [m for m in members if m["member_id"] == member_id]
    return account["open_orders"]


async def wait_until(condition, what: str, timeout: float = WAIT_S) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def replayed(data_dir: Path) -> list[Applied]:
    """The journal, replayed: every record with the events it caused."""
    return replay_journal(data_dir, Config())


def guards_in(records: list[Applied], member_id: str) -> list[tuple[bool, int]]:
    return [(r.command.cancel_on_disconnect, r.command.dead_man_ms) for r in records
            if isinstance(r.command, SetSessionGuard) and r.command.member_id == member_id]


def mass_cancels(records: list[Applied], member_id: str) -> list[Applied]:
    return [r for r in records if isinstance(r.command, MassCancel) and r.command.member_id == member_id]


# -- (a), (b), (c): across a SIGKILL ---------------------------------------------------------------


async def test_an_absent_member_with_cancel_on_disconnect_loses_its_orders_after_the_grace(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    serve = await Serve.start(data_dir)
    try:
        async with aiohttp.ClientSession() as http:
            key = await open_market(http, serve, data_dir, "R1")
            member = await logged_on_to(http, serve, key, cancel_on_disconnect=True)
            ids = await rest_orders(member, "a", 3)
            serve.kill()  # the member's orders rest in the journal, and so does its guard
        before = replayed(data_dir)
        assert guards_in(before, "R1") == [(True, 0)] and mass_cancels(before, "R1") == []

        serve = await Serve.start(data_dir, "--cancel-on-disconnect-grace-s", "0.2")
        async with aiohttp.ClientSession() as http:  # R1 stays away
            await wait_until(lambda: no_open_orders(http, serve, data_dir, "R1"), "R1's orders to be cancelled")
        await serve.terminate()
    finally:
        serve.reap()
    records = replayed(data_dir)
    [cancel] = mass_cancels(records, "R1")
    assert cancel.seq > serve.start_seq  # journalled by the restarted server, after its grace
    cancelled = [e for e in cancel.events if isinstance(e, OrderCancelled)]
    assert sorted(e.member_id for e in cancelled) == ["R1"] * len(ids)
    assert guards_in(records, "R1") == [(True, 0)]  # the guard stays: nothing left to lose


async def test_a_member_back_within_the_grace_keeps_its_orders(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    serve = await Serve.start(data_dir)
    try:
        async with aiohttp.ClientSession() as http:
            key = await open_market(http, serve, data_dir, "R1")
            member = await logged_on_to(http, serve, key, cancel_on_disconnect=True)
            ids = await rest_orders(member, "b", 3)
            serve.kill()
    finally:
        serve.reap()

    # The same composition `exchange serve` runs, in this process, to see the hub's timers.
    parts = compose(Config(), data_dir, cancel_on_disconnect_grace_s=120.0)
    await parts.start()
    try:
        hub = parts.hub
        assert hub.grace_pending("R1") and len(hub.tracker.open_orders("R1")) == len(ids)
        journalled = hub.service.last_seq
        async with aiohttp.ClientSession() as http:
            again = Member(await http.ws_connect(parts.server.url + "/ws", autoping=True, max_msg_size=0))
            assert (await again.logon(*key, cancel_on_disconnect=True))["type"] == "logon_ack"
            resent = {m["client_order_id"] for m in await again.drain(0.3) if m["type"] == "execution_report"}
            assert resent == set(ids)
            assert not hub.grace_pending("R1")  # its timer is cancelled: it can never fire
            await hub.run(lambda service: None)  # everything queued is durable
            assert len(hub.tracker.open_orders("R1")) == len(ids)
            assert hub.service.last_seq == journalled  # the same guard: the logon journalled nothing
            await again.close()
    finally:
        await parts.stop()
        parts.close()


async def test_a_dead_man_timer_armed_before_the_crash_fires_after_the_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    serve = await Serve.start(data_dir)
    try:
        async with aiohttp.ClientSession() as http:
            key = await open_market(http, serve, data_dir, "R1")
            member = await logged_on_to(http, serve, key, cancel_on_disconnect=False)
            ids = await rest_orders(member, "c", 2)
            await member.send({"type": "cancel_after", "seconds": 2})
            ids += await rest_orders(member, "c2", 1)  # acknowledged after the guard: it is durable
            serve.kill()
        assert guards_in(replayed(data_dir), "R1") == [(False, 2_000)]

        serve = await Serve.start(data_dir)  # the default (long) cancel-on-disconnect grace
        async with aiohttp.ClientSession() as http:  # R1 stays away
            await wait_until(lambda: no_open_orders(http, serve, data_dir, "R1"), "the dead-man timer to fire")
        await serve.terminate()
    finally:
        serve.reap()
    records = replayed(data_dir)
    [cancel] = mass_cancels(records, "R1")
    assert cancel.seq > serve.start_seq, "the timer fired before the crash: the test proves nothing"
    assert len([e for e in cancel.events if isinstance(e, OrderCancelled)]) == len(ids)
    assert guards_in(records, "R1") == [(False, 2_000), (False, 0)]  # fired: the timer is off


async def logged_on_to(http: aiohttp.ClientSession, serve: Serve, key: tuple[str, bytes], **options) -> Member:
    member = await Member.connect(http, serve.url + "/ws")
    ack = await member.logon(*key, **options)
    assert ack["type"] == "logon_ack", ack
    return member


async def no_open_orders(http: aiohttp.ClientSession, serve: Serve, data_dir: Path, member_id: str) -> bool:
    return await open_orders(http, serve, data_dir, member_id) == 0


# -- (d): the projection and the snapshots -------------------------------------------------------


async def test_the_guard_projection_snapshot_is_deterministic_and_round_trips() -> None:
    events = [SessionGuardSet("M2", True, 0), SessionGuardSet("M1", False, 30_000), SessionGuardSet("M3", False, 0),
              SessionGuardSet("M2", True, 5_000)]
    forward, backward = SessionGuards(), SessionGuards()
    for seq, event in enumerate(events, 1):
        forward.apply(Applied(seq, seq, DAY, SetSessionGuard(event.member_id, event.cancel_on_disconnect, event.dead_man_ms), [event]))
    for seq, event in enumerate([events[2], events[1], events[3]], 1):  # the same latest guards, another order
        backward.apply(Applied(seq, seq, DAY, SetSessionGuard(event.member_id, event.cancel_on_disconnect, event.dead_man_ms), [event]))
    data = forward.snapshot_state()
    assert data == backward.snapshot_state()
    restored = SessionGuards()
    restored.restore_state(data, 4)
    assert (restored.last_seq, restored.restored_seq, restored.snapshot_state()) == (4, 4, data)
    assert list(restored) == [Guard("M1", False, 30_000), Guard("M2", True, 5_000), Guard("M3", False, 0)]
    assert [g.member_id for g in restored.guarded()] == ["M1", "M2"]
    assert effective_guard([], 0, (True, 0)) == (True, 0)  # no live session: the flag stays
    assert effective_guard([False, True], 7_000, (False, 0)) == (True, 7_000)  # any live session


async def test_the_guards_travel_in_the_engines_snapshots(tmp_path: Path) -> None:
    """After a restart from a snapshot the guard projection was restored from it (replaying only
    the journal's tail) and equals the projection a replay of the whole journal builds; the
    restarted hub arms the recovered guards."""
    data_dir, config = tmp_path / "data", fast_config(snapshot_every=10)
    served = await start_served(data_dir, config=config)
    registry = served.registry
    try:
        keys = {m: await served.add_member(m) for m in ("G1", "G2", "G3")}
        served.hub.credentials_changed()
        await served.open_day()
        async with aiohttp.ClientSession() as http:
            g1 = await logged_on(http, served, keys["G1"], cancel_on_disconnect=True)
            g2 = await logged_on(http, served, keys["G2"], cancel_on_disconnect=False)
            await g2.send({"type": "cancel_after", "seconds": 60})
            g3 = await logged_on(http, served, keys["G3"], cancel_on_disconnect=False)
            for i in range(12):  # enough commands for a snapshot after the guards
                await g3.send(order(f"g3-{i}", "buy", 1 + i, "57.00"))
                await g3.expect("execution_report")
            await g1.send({"type": "cancel_after", "seconds": 45})
            await g1.send({"type": "order_status", "client_order_id": "none"})
            await g1.expect("error")
            await served.hub.run(lambda service: None)
            for member in (g1, g2, g3):
                await member.close()
        journal_length = served.hub.service.last_seq
    finally:
        await stop_served(served)

    served = await start_served(data_dir, registry=registry, config=config, cancel_on_disconnect_grace_s=120.0)
    try:
        guards = served.hub.guards
        assert 0 < guards.restored_seq <= journal_length == guards.last_seq
        full = SessionGuards()
        core = build_core(config)
        for record in served.parts.exchange.engine.journal.records():
            command = decode_command(record.payload)
            full.apply(Applied(record.seq, record.ts_ns, "", command, core.apply(record.seq, record.ts_ns, command)))
        assert full.snapshot_state() == guards.snapshot_state()
        # G3 never had a guard (no cancel-on-disconnect, no timer): nothing was journalled for it
        assert list(guards) == [Guard("G1", True, 45_000), Guard("G2", False, 60_000)]
        hub = served.hub
        assert (hub.grace_pending("G1"), hub.grace_pending("G2"), hub.grace_pending("G3")) == (True, False, False)
        assert (hub.dead_man_ms("G1"), hub.dead_man_ms("G2"), hub.dead_man_ms("G3")) == (45_000, 60_000, 0)
    finally:
        await stop_served(served)


# -- (e): a compact journal ----------------------------------------------------------------------


def guard_commands(served) -> list[SetSessionGuard]:
    return [command for record in served.parts.exchange.engine.journal.records()
            if isinstance(command := decode_command(record.payload), SetSessionGuard)]


async def settled(served, member: Member) -> None:
    """Every frame the member sent is handled (its session answered a later one) and durable."""
    await member.send({"type": "order_status", "client_order_id": "no-such-order"})
    await member.expect("error")
    await served.hub.run(lambda service: None)


async def test_only_a_change_of_the_guard_is_journalled(served, http) -> None:
    key = await served.add_member("M1")
    quiet = await served.add_member("M2")
    await served.open_day()
    first = await logged_on(http, served, key, cancel_on_disconnect=True)
    await settled(served, first)
    assert guard_commands(served) == [SetSessionGuard("M1", True, 0)]

    second = await logged_on(http, served, key, cancel_on_disconnect=True)  # the same guard
    third = await logged_on(http, served, key, cancel_on_disconnect=False)  # one live session still asks
    await third.send({"type": "heartbeat"})
    await first.send({"type": "cancel_after", "seconds": 5})
    await first.send({"type": "cancel_after", "seconds": 5})  # a renewal: the same period
    await settled(served, first)
    assert guard_commands(served) == [SetSessionGuard("M1", True, 0), SetSessionGuard("M1", True, 5_000)]

    await first.send({"type": "cancel_after", "seconds": 0})
    await settled(served, first)
    for left, session in enumerate((third, first, second), 1):  # sessions asking for it stay live
        await session.close()
        await wait_until(lambda left=left: _count(served, "M1", 3 - left), "a session to be gone")
    again = await logged_on(http, served, key, cancel_on_disconnect=True)  # after the last closed: the same
    m2 = await logged_on(http, served, quiet, cancel_on_disconnect=False)  # never guarded: nothing to say
    await settled(served, again)
    await settled(served, m2)
    assert guard_commands(served) == [SetSessionGuard("M1", True, 0), SetSessionGuard("M1", True, 5_000),
                                      SetSessionGuard("M1", True, 0)]
    assert served.hub.guards.get("M2") is None


async def test_the_guard_follows_the_live_sessions(served, http) -> None:
    """Cancel-on-disconnect while any live session asked for it: when the one that did closes
    and another stays, the guard drops; the last session closing changes nothing."""
    key = await served.add_member("M1")
    await served.open_day()
    asking = await logged_on(http, served, key, cancel_on_disconnect=True)
    other = await logged_on(http, served, key, cancel_on_disconnect=False)
    await asking.close()
    await wait_until(lambda: _count(served, "M1", 1), "the first session to be gone")
    await settled(served, other)
    assert guard_commands(served) == [SetSessionGuard("M1", True, 0), SetSessionGuard("M1", False, 0)]
    await other.close()
    await wait_until(_no_sessions(served, "M1"), "M1's sessions to be gone")
    await served.hub.run(lambda service: None)
    assert guard_commands(served)[-1] == SetSessionGuard("M1", False, 0) and len(guard_commands(served)) == 2


def _no_sessions(served, member_id: str):
    return lambda: _count(served, member_id, 0)


async def _count(served, member_id: str, n: int) -> bool:
    return len(served.hub.sessions.get(member_id, ())) == n

