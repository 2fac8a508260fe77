"""``exchange serve`` as a real process: trade, SIGKILL it mid-session, start it again, and
the recovered state equals a replay of the journal; every acknowledged order is back; a
SIGTERM then shuts down gracefully (session_closing: server_shutdown)."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from pathlib import Path

import aiohttp
import pytest

from exchange.app import build_core
from exchange.config import Config
from exchange.engine import FileJournal, decode_command
from tests.gateway.conftest import DAY, Member, call, fixed_day_config_file, order, start_serve_process

pytestmark = pytest.mark.asyncio
ROOT = Path(__file__).resolve().parents[2]


async def start_serve(data_dir: Path) -> tuple[subprocess.Popen, str]:
    return await start_serve_process(data_dir, "--config", fixed_day_config_file(data_dir.parent))


def replayed_hash(data_dir: Path) -> tuple[int, str]:
    journal = FileJournal(data_dir / "commands.journal")
    core = build_core(Config())
    for record in journal.records():
        core.apply(record.seq, record.ts_ns, decode_command(record.payload))
    journal.close()
    return core.last_seq, core.state_hash()


async def test_sigkill_then_restart_recovers_the_journals_state(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    process, url = await start_serve(data_dir)
    try:
        tokens = json.loads((data_dir / "operator-tokens.json").read_text())
        assert oct((data_dir / "operator-tokens.json").stat().st_mode & 0o777) == "0o600"
        admin, clearing = tokens["admin"], tokens["clearing"]
        async with aiohttp.ClientSession() as http:
            await call(http, url, admin, "POST", "/members", {"member_id": "R1", "kind": "voluntary"})
            issued = await call(http, url, admin, "POST", "/members/R1/credentials")
            await call(http, url, clearing, "POST", "/clearing/deposits", {"member_id": "R1", "amount_fen": 10**10, "reference": "R1-1"})
            # admitting R1 opened its registry account (issue 11): the day opens without one more step
            await call(http, url, clearing, "POST", "/clearing/start-of-day", {"trading_day": DAY})
            await call(http, url, admin, "POST", "/market/phase", {"phase": "continuous"})
            key = (issued["key_id"], bytes.fromhex(issued["secret"]))
            member = await Member.connect(http, url + "/ws")
            assert (await member.logon(*key, cancel_on_disconnect=False))["type"] == "logon_ack"
            acked = []
            for i in range(30):
                await member.send(order(f"r-{i}", "buy", 10 + i, f"58.{i % 20:02d}"))
                acked.append((await member.expect("execution_report"))["client_order_id"])
            await member.send({"type": "cancel", "instrument": "CEA-2025", "client_order_id": "r-0"})
            await member.expect("execution_report")
            for i in range(30, 60):  # in flight when the process dies
                await member.send(order(f"r-{i}", "buy", 5, "58.00"))
            process.send_signal(signal.SIGKILL)
            process.wait(10)

        process, url = await start_serve(data_dir)
        async with aiohttp.ClientSession() as http:
            state = await call(http, url, tokens["regulator"], "GET", "/state")
            member = await Member.connect(http, url + "/ws")
            ack = await member.logon(*key, cancel_on_disconnect=False)  # the guard stays as journalled
            assert ack["type"] == "logon_ack" and ack["trading_day"] == DAY
            resent = {m["client_order_id"] for m in await member.drain(0.3) if m["type"] == "execution_report"}
            assert set(acked[1:]) <= resent and "r-0" not in resent
            process.send_signal(signal.SIGTERM)
            closing = await member.expect("session_closing")
            assert closing["reason"] == "server_shutdown"
        assert await asyncio.to_thread(process.wait, 20) == 0
        last_seq, state_hash = replayed_hash(data_dir)
        assert (state["last_seq"], state["state_hash"]) == (last_seq, state_hash)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


async def test_a_restart_from_a_snapshot_restores_the_views_and_replays_only_the_tail(tmp_path: Path) -> None:
    """The gateway's views travel in the engine's snapshots: after a restart the order tracker
    answers every order status as before, and it was restored from the snapshot (it replayed
    only the journal's tail), ending in the state a replay of the whole journal gives."""
    from exchange.gateway.member.orders import OrderTracker
    from exchange.model.stream import Applied
    from tests.gateway.conftest import fast_config, logged_on, start_served, stop_served

    data_dir, config = tmp_path / "data", fast_config(snapshot_every=25)
    served = await start_served(data_dir, config=config)
    registry = served.registry
    ids = [f"s-{i}" for i in range(40)]
    try:
        buyer, seller = await served.add_member("B1"), await served.add_member("S1")
        served.hub.credentials_changed()  # keep the keys for the restart
        await served.open_day()
        async with aiohttp.ClientSession() as http:
            b = await logged_on(http, served, buyer, cancel_on_disconnect=False)
            s = await logged_on(http, served, seller, cancel_on_disconnect=False)
            for i, client_order_id in enumerate(ids):
                member = b if i % 2 else s
                await member.send(order(client_order_id, "buy" if i % 2 else "sell", 5 + i, f"58.{10 + i % 7:02d}"))
                await member.expect("execution_report")
            await s.send({"type": "cancel", "instrument": "CEA-2025", "client_order_id": "s-0"})
            await s.drain(0.3)
            before = await order_statuses(b, s, ids)
            await b.close()
            await s.close()
        journal_length = served.hub.service.last_seq
    finally:
        await stop_served(served)

    served = await start_served(data_dir, registry=registry, config=config)
    try:
        tracker, market = served.hub.tracker, served.hub.market_data
        assert tracker.restored_seq > 0 and market.restored_seq == tracker.restored_seq
        assert tracker.records_applied == journal_length - tracker.restored_seq < journal_length
        assert market.records_applied == tracker.records_applied
        full = OrderTracker()  # the tracker a replay of the whole journal builds
        core = build_core(config)
        for record in served.parts.exchange.engine.journal.records():  # the running exchange's own journal
            command = decode_command(record.payload)
            full.apply(Applied(record.seq, record.ts_ns, "", command, core.apply(record.seq, record.ts_ns, command)))
        assert full.last_seq == journal_length and full.snapshot_state() == tracker.snapshot_state()
        async with aiohttp.ClientSession() as http:
            b, s = await logged_on(http, served, buyer), await logged_on(http, served, seller)
            assert await order_statuses(b, s, ids) == before
    finally:
        await stop_served(served)


async def order_statuses(b: Member, s: Member, ids: list[str]) -> list[dict]:
    """Each order's status report (without the session's sequence number)."""
    statuses = []
    for i, client_order_id in enumerate(ids):
        member = b if i % 2 else s
        await member.send({"type": "order_status", "client_order_id": client_order_id})
        while True:
            report = await member.expect("execution_report")
            if report["exec_type"] == "order_status" and report["client_order_id"] == client_order_id:
                break
        statuses.append({k: v for k, v in report.items() if k != "session_seq"})
    return statuses
