"""From a fresh clone to a settled day: the README's "Your first day as the operator", done
as an operator does it, with real processes and sockets only (issue 11's acceptance test).

``exchange init DIR``; ``exchange serve`` on what it made; the administrator admits two members
and issues their keys, the clearing house deposits their cash under a reference (operator
API, tokens from ``DIR/operator-tokens.json``); the authority sets a cap, issues and allocates
allowances to the seller with ``exchange registry`` on ``DIR/registry.db``; then
``exchange serve --time-scale 480 --calendar-start DAYT09:10`` runs the day by the calendar of
init's configuration. The members log on over the WebSocket and trade 100 t at 58.20 once a
session is open. Nobody calls a phase, start of day, end of day or settlement.

What it proves, from outcomes only: the day's statements are served and their lines (in fen)
show the trade on both sides with the settled cash and holdings; the registry (the authority's
own command) shows the buyer holding the 100 t and the seller the rest; the regulator's trades
list the one trade; the audit log holds the operators' set-up calls and nothing else, so the
start of day, the phases, the close and the settlement were the calendar's; SIGINT stops the
server with exit code 0.

Why it cannot flip under load:

- The set-up is done on a first server whose calendar stands on the Sunday evening before the
  day, at the wall clock's pace (``--calendar-start`` with scale 1): no step of the day is due
  for hours, so however slow the set-up is, it is finished before the start of day. The server
  is then stopped and started again with the scaled calendar from 09:10 (another anchor: a new
  timeline), as an operator prepares the evening before and serves the day. The registry
  allocation is therefore in place when the driver's start of day loads the holdings.
- Every wait is on an observable state (the first stdout line, the phase in ``GET
  /instruments``, an execution report, the statements endpoint) with a deadline of minutes,
  never a sleep of a fixed length.
- An order that reaches the engine after the morning session has ended (reject 213) is sent
  again when the afternoon session opens: a day order resting over the lunch break stays in the
  book. The trade happens in whichever session the machine's speed lets it happen in; the
  verdicts are on the settled statements, not on when. The members send heartbeats, so a
  session waiting through the break is not closed as silent (which would cancel its order).

The day is the Monday after today (exchange time; the next again if init's configuration has it
as a holiday). The driver opens only the calendar's own date; the operator API's window around
today (``max_days_from_today``, checked in ``exchange/gateway/operator/api.py``) does not apply to
it (``exchange/gateway/trading_day.py``), and a Monday within a week of today satisfies it anyway.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import aiohttp
import pytest

from exchange.config import load_config
from tests.gateway.conftest import Member, order

pytestmark = pytest.mark.asyncio

ROOT = Path(__file__).resolve().parents[1]
SCALE = 480  # 09:10 to 15:30 calendar time in under 50 real seconds
DEADLINE_S = 300.0  # generous: a busy machine is slow, never wrong
SELLER, BUYER = "M0001", "M0002"
CASH_FEN = 100_000_000
ALLOCATED_T = 5000
QTY_T, PRICE, PRICE_FEN = 100, "58.20", 5820
NOTIONAL_FEN = QTY_T * PRICE_FEN
OUTSIDE_TRADING_HOURS = 213
HEARTBEAT_S = 2.0  # well inside the session's default 10 s interval


def the_day(config_path: Path) -> date:
    """The Monday after today in exchange time, skipping the configuration's holidays."""
    calendar = load_config(config_path).calendar
    today = datetime.now(timezone(timedelta(hours=calendar.utc_offset_hours))).date()
    monday = today + timedelta(days=7 - today.weekday())
    while monday.isoformat() in calendar.holidays:
        monday += timedelta(days=7)
    return monday


def exchange_cli(*arguments: str) -> str:
    """``exchange ARGUMENTS`` in a process of its own; its stdout (it must succeed)."""
    done = subprocess.run([sys.executable, "-m", "exchange.cli", *arguments], cwd=ROOT,
                          capture_output=True, text=True, timeout=DEADLINE_S)
    assert done.returncode == 0, (arguments, done.stdout, done.stderr)
    return done.stdout


async def serve(data_dir: Path, *arguments: str) -> tuple[subprocess.Popen, str]:
    """``exchange serve`` on init's data directory and configuration; its URL once it serves."""
    process = subprocess.Popen(
        [sys.executable, "-m", "exchange.cli", "serve", "--data-dir", str(data_dir),
         "--config", str(data_dir / "config.toml"), "--port", "0", *arguments],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    assert process.stdout is not None  # stdout=PIPE
    try:
        line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), DEADLINE_S)
    except TimeoutError:
        line = ""
    match = re.search(r"serving on (http://\S+) ", line)
    if not match:
        process.kill()
        process.wait()
    assert match, f"no URL in {line!r}"
    return process, match[1]


async def interrupt(process: subprocess.Popen) -> int | None:
    """SIGINT, as an operator's Ctrl-C; the exit code (None: it did not stop, and was killed)."""
    process.send_signal(signal.SIGINT)
    try:
        return await asyncio.to_thread(process.wait, DEADLINE_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return None


async def request(http: aiohttp.ClientSession, url: str, token: str, method: str, path: str,
                  body: dict | None = None) -> tuple[int, object]:
    async with http.request(method, url + path, json=body, headers={"Authorization": f"Bearer {token}"}) as response:
        is_json = response.content_type == "application/json"
        return response.status, await (response.json() if is_json else response.text())


async def call(http: aiohttp.ClientSession, url: str, token: str, method: str, path: str, body: dict | None = None):
    status, payload = await request(http, url, token, method, path, body)
    assert status in (200, 201), (method, path, status, payload)
    return payload


async def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not await condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


# -- the evening before: members, keys, cash, allowances ---------------------------------------


async def set_up_members(http: aiohttp.ClientSession, url: str, tokens: dict[str, str]) -> dict[str, tuple[str, bytes]]:
    """Admit, key and fund both members (the operator API); their (key id, secret)."""
    keys = {}
    for member_id in (SELLER, BUYER):
        await call(http, url, tokens["admin"], "POST", "/members", {"member_id": member_id, "kind": "voluntary"})
        issued = await call(http, url, tokens["admin"], "POST", f"/members/{member_id}/credentials")
        keys[member_id] = (issued["key_id"], bytes.fromhex(issued["secret"]))
        await call(http, url, tokens["clearing"], "POST", "/clearing/deposits",
                   {"member_id": member_id, "amount_fen": CASH_FEN, "reference": f"PAY-{member_id}-1"})
    return keys


def allocate_allowances(registry_url: str) -> None:
    """The authority's commands from the README: a cap, an issue, the seller's allocation."""
    exchange_cli("registry", "set-cap", "2025", "1000000", "--db", registry_url)
    exchange_cli("registry", "issue", "CEA-2025", "100000", "--reason", "2025", "--id", "ISSUE-2025-1", "--db", registry_url)
    exchange_cli("registry", "allocate", SELLER, "CEA-2025", str(ALLOCATED_T), "--reason", "2025",
                 "--id", f"ALLOC-{SELLER}", "--db", registry_url)


# -- the day: trading once a session is open ------------------------------------------------------


async def phase(http: aiohttp.ClientSession, url: str, token: str, day: str) -> str:
    """The instrument's phase on ``day``: ``before`` until the day is opened."""
    if (await call(http, url, token, "GET", "/health"))["trading_day"] != day:
        return "before"
    [instrument] = [item for item in await call(http, url, token, "GET", "/instruments") if item["symbol"] == "CEA-2025"]
    return instrument["phase"]


async def wait_for_session(http: aiohttp.ClientSession, url: str, token: str, day: str) -> None:
    async def open_or_over() -> bool:
        return await phase(http, url, token, day) in ("continuous", "post_close")

    await wait_for(open_or_over, "a continuous session")
    assert await phase(http, url, token, day) == "continuous", "the day closed before the order could be sent"


async def place(member: Member, side: str, http: aiohttp.ClientSession, url: str, token: str, day: str) -> None:
    """Send the order in a continuous session: again in the next one if it arrived too late."""
    for attempt in range(1, 3):  # the morning session, then the afternoon
        await wait_for_session(http, url, token, day)
        client_order_id = f"{side}-{attempt}"
        await member.send(order(client_order_id, side, QTY_T, PRICE))
        answer = await answer_to(member, client_order_id)
        if answer["exec_type"] != "rejected":
            return
        assert answer["reject_code"] == OUTSIDE_TRADING_HOURS, answer
    raise AssertionError(f"the {side} order found no open session")


async def keep_alive(member: Member) -> None:
    """A member's heartbeats: a session silent for three intervals (30 s) is closed, and its
    cancel-on-disconnect (on by default) would cancel an order resting over the lunch break."""
    while True:
        await member.send({"type": "heartbeat"})
        await asyncio.sleep(HEARTBEAT_S)


async def answer_to(member: Member, client_order_id: str) -> dict:
    while True:
        report = await member.expect("execution_report", timeout=DEADLINE_S)
        if report["client_order_id"] == client_order_id and report["exec_type"] in ("new", "trade", "rejected"):
            return report


async def filled(member: Member) -> dict:
    """The member's fill (already received, or the next to come)."""
    while not (fills := member.reports("trade")):
        await member.expect("execution_report", timeout=DEADLINE_S)
    return fills[0]


async def trade_once(http: aiohttp.ClientSession, url: str, token: str, keys: dict[str, tuple[str, bytes]],
                     day: str) -> tuple[dict, dict]:
    """Both members log on before the open; the seller's order, then the buyer's, in a
    session; the execution reports of their fills (seller's, buyer's)."""
    members: dict[str, Member] = {}
    alive: list[asyncio.Task] = []
    try:
        for member_id, key in keys.items():
            members[member_id] = await Member.connect(http, url + "/ws")
            assert (await members[member_id].logon(*key))["type"] == "logon_ack"
            alive.append(asyncio.create_task(keep_alive(members[member_id])))
        await place(members[SELLER], "sell", http, url, token, day)
        await place(members[BUYER], "buy", http, url, token, day)
        return await filled(members[SELLER]), await filled(members[BUYER])
    finally:
        for task in alive:
            task.cancel()
        await asyncio.gather(*alive, return_exceptions=True)
        for member in members.values():
            await member.close()


async def statements_served(http: aiohttp.ClientSession, url: str, token: str, day: str) -> bool:
    status, names = await request(http, url, token, "GET", f"/clearing/statements/{day}")
    return status == 200 and bool(names)


def registry_holding_t(registry_url: str, account: str) -> int:
    """The account's CEA-2025 holding, tradable and compliance-only, as the authority's
    ``exchange registry holdings`` prints it."""
    shown = exchange_cli("registry", "holdings", account, "--db", registry_url)
    match = re.search(r"^\s*CEA-2025\s+([\d,]+)\s+([\d,]+)\s*$", shown, re.MULTILINE)
    assert match, shown
    return sum(int(figure.replace(",", "")) for figure in match.groups())


# -- the test -------------------------------------------------------------------------------------


async def test_from_exchange_init_to_a_settled_day_by_the_calendar(tmp_path: Path) -> None:
    data_dir = tmp_path / "venue"
    exchange_cli("init", str(data_dir))
    tokens = json.loads((data_dir / "operator-tokens.json").read_text())
    registry_url = f"sqlite:///{data_dir / 'registry.db'}"
    day = the_day(data_dir / "config.toml")
    evening_before = f"{(day - timedelta(days=1)).isoformat()}T20:00"

    process, url = await serve(data_dir, "--calendar-start", evening_before)  # scale 1: nothing due for hours
    try:
        async with aiohttp.ClientSession() as http:
            keys = await set_up_members(http, url, tokens)
            await asyncio.to_thread(allocate_allowances, registry_url)
            health = await call(http, url, tokens["admin"], "GET", "/health")
    finally:
        exit_code = await interrupt(process)
    assert exit_code == 0
    assert health["trading_day"] == "", health  # the evening before: no day opened yet

    process, url = await serve(data_dir, "--time-scale", str(SCALE), "--calendar-start", f"{day.isoformat()}T09:10")
    try:
        async with aiohttp.ClientSession() as http:
            sold, bought = await trade_once(http, url, tokens["admin"], keys, day.isoformat())
            await wait_for(lambda: statements_served(http, url, tokens["clearing"], day.isoformat()), "the statements")
            names = await call(http, url, tokens["clearing"], "GET", f"/clearing/statements/{day}")
            statements = {member_id: await call(http, url, tokens["clearing"], "GET", f"/clearing/statements/{day}/{member_id}.csv")
                          for member_id in (SELLER, BUYER)}
            trades = await call(http, url, tokens["regulator"], "GET", f"/regulator/trades/{day}")
            audit = await call(http, url, tokens["regulator"], "GET", "/regulator/audit?since=0&limit=1000")
            health = await call(http, url, tokens["admin"], "GET", "/health")
            held_t = {member_id: await asyncio.to_thread(registry_holding_t, registry_url, member_id)
                      for member_id in (SELLER, BUYER)}
    finally:
        exit_code = await interrupt(process)
    assert exit_code == 0

    assert (sold["ord_status"], sold["last_qty"], sold["last_px"]) == ("filled", QTY_T, PRICE)
    assert (bought["ord_status"], bought["last_qty"], bought["last_px"]) == ("filled", QTY_T, PRICE)
    [trade] = trades
    assert (trade["buy_member_id"], trade["sell_member_id"], trade["qty_t"], trade["price"]) == (BUYER, SELLER, QTY_T, PRICE)
    assert health["trading_day"] == day.isoformat()
    assert {f"{SELLER}.csv", f"{BUYER}.csv", "settlement-report.json"} <= set(names), names
    assert_statement(statements[BUYER], trade["trade_id"], "buy", cash_fen=CASH_FEN - NOTIONAL_FEN, holding_t=QTY_T)
    assert_statement(statements[SELLER], trade["trade_id"], "sell", cash_fen=CASH_FEN + NOTIONAL_FEN,
                     holding_t=ALLOCATED_T - QTY_T)
    assert held_t == {SELLER: ALLOCATED_T - QTY_T, BUYER: QTY_T}
    assert_only_set_up_calls(audit["entries"])


def assert_statement(text: str, trade_id: int, side: str, cash_fen: int, holding_t: int) -> None:
    """The member's statement, in fen (docs/statements.md): the trade, the nets, the settled figures."""
    sign = -1 if side == "buy" else 1
    lines = text.strip().splitlines()
    assert lines[0] == "record,instrument,trade_id,side,qty_t,price_fen,amount_fen", lines
    assert f"trade,CEA-2025,{trade_id},{side},{QTY_T},{PRICE_FEN},{sign * NOTIONAL_FEN}" in lines, lines
    assert f"net,,,{'pay' if side == 'buy' else 'receive'},,,{sign * NOTIONAL_FEN}" in lines, lines
    assert f"settled_cash,,,,,,{cash_fen}" in lines, lines
    assert f"net,CEA-2025,,{'receive' if side == 'buy' else 'deliver'},{-sign * QTY_T},," in lines, lines
    assert f"settled_holding,CEA-2025,,,{holding_t},," in lines, lines


def assert_only_set_up_calls(entries: list[dict]) -> None:
    """The operators' calls were the set-up, all answered: the day's steps were the calendar's."""
    made = [(entry["method"], entry["endpoint"], entry["status"]) for entry in entries]
    set_up = [("POST", "/members", 200), ("POST", "/members/{member_id}/credentials", 201),
              ("POST", "/clearing/deposits", 200)]
    assert made == set_up * 2, made
