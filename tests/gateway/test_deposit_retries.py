"""Deposit retries over the real operator HTTP API (issue 11).

A clearing house sends 1,000 deposits to a served exchange on loopback, each under its own
reference, and keeps resending until it gets an answer. Many attempts are lost on the way:
the connection is dropped right after the request is sent (whether it ran is unknown), the
answer arrives but is thrown away (it ran), or a retry races the attempt still in flight.
Every amount must move exactly once: in the member's funds, in the journal (one
FundsDeposited per reference; any other attempt is a FundsRetried) and in the cash ledger
(one deposit transfer per reference). Seeded, so a failure can be replayed.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import msgspec
import pytest
import sqlalchemy as sa
import yarl

from exchange.app import build_core
from exchange.clearing.ledger import BANK, CashLedger, TransferCode, cash_transfers
from exchange.engine import FileJournal
from exchange.engine.engine import replay
from exchange.model import MemberKind, RegisterMember
from exchange.model.events import FundsDeposited, FundsRetried
from tests.gateway.conftest import Served, fast_config, start_served, stop_served

pytestmark = pytest.mark.asyncio

DEPOSITS = 1_000
MEMBERS = [f"CH{n}" for n in range(1, 6)]
WORKERS = 8  # the clearing house's concurrent senders
PATH = "/clearing/deposits"
LOST = ("dropped", "ignored", "racing")


@dataclass(frozen=True)
class Planned:
    member_id: str
    amount_fen: int
    reference: str
    lost: tuple[str, ...]  # how the attempts before the answered one were lost

    @property
    def body(self) -> dict:
        return {"member_id": self.member_id, "amount_fen": self.amount_fen, "reference": self.reference}


def plan(seed: int) -> list[Planned]:
    rnd = random.Random(seed)
    return [
        Planned(rnd.choice(MEMBERS), rnd.randrange(1, 10**9), f"bank:{seed}-{n:04d}",
                tuple(rnd.choice(LOST) for _ in range(rnd.choice((0, 1, 1, 2, 3)))))
        for n in range(DEPOSITS)
    ]


class ClearingHouse:
    def __init__(self, http: aiohttp.ClientSession, served: Served) -> None:
        self.http, self.url = http, served.url
        self.token = served.tokens["clearing"]

    async def post(self, body: dict) -> tuple[int, dict]:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with self.http.post(self.url + PATH, json=body, headers=headers) as response:
            return response.status, await response.json()

    async def post_and_drop(self, body: dict) -> None:
        """Send the request on a connection of its own and close it without reading: the
        answer, if any, is lost, and whether the deposit ran is not known."""
        url = yarl.URL(self.url)
        reader, writer = await asyncio.open_connection(url.host, url.port)
        payload = msgspec.json.encode(body)
        head = (f"POST {PATH} HTTP/1.1\r\nHost: {url.host}:{url.port}\r\nAuthorization: Bearer {self.token}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\nConnection: close\r\n\r\n")
        writer.write(head.encode() + payload)
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def deposit(self, planned: Planned) -> None:
        """Every lost attempt, then one whose answer is read; check that answer."""
        ran = False  # an earlier attempt is known to have run
        for how in planned.lost:
            if how == "dropped":
                await self.post_and_drop(planned.body)
            elif how == "ignored":
                status, _ = await self.post(planned.body)
                assert status == 200
                ran = True
            else:  # a retry sent while the first is still in flight: one moves, one repeats it
                answers = await asyncio.gather(self.post(planned.body), self.post(planned.body))
                assert [status for status, _ in answers] == [200, 200]
                assert answers[0][1]["events"] == answers[1][1]["events"]
                assert [a["duplicate"] for _, a in answers].count(False) <= (0 if ran else 1)
                ran = True
        status, answer = await self.post(planned.body)
        assert status == 200, answer
        [event] = answer["events"]
        assert (event["event"], event["member_id"], event["amount_fen"], event["reference"]) == (
            "FundsDeposited", planned.member_id, planned.amount_fen, planned.reference,
        )
        if ran:
            assert answer["duplicate"] is True


async def test_a_thousand_retried_deposits_with_lost_answers_move_each_amount_once(tmp_path: Path) -> None:
    deposits = plan(seed=11)
    assert Counter(how for d in deposits for how in d.lost).keys() == set(LOST)
    expected: dict[str, int] = defaultdict(int)
    for d in deposits:
        expected[d.member_id] += d.amount_fen
    data_dir = tmp_path / "data"
    served = await start_served(data_dir)
    try:
        for member in MEMBERS:
            await served.hub.submit(RegisterMember(member, MemberKind.VOLUNTARY))
        async with aiohttp.ClientSession() as http:
            house = ClearingHouse(http, served)

            async def sender(share: list[Planned]) -> None:
                for planned in share:
                    await house.deposit(planned)

            await asyncio.gather(*(sender(deposits[w::WORKERS]) for w in range(WORKERS)))
            async with http.get(served.url + "/members", headers={"Authorization": f"Bearer {house.token}"}) as response:
                members = await response.json()
    finally:
        await stop_served(served)  # drains: a dropped attempt still in flight runs (as a retry) first

    assert {m["member_id"]: m["cash_available_fen"] for m in members} == expected

    moved, retried = journal_deposits(data_dir)
    assert moved == {d.reference: (d.member_id, d.amount_fen) for d in deposits}, "one FundsDeposited per reference"
    lost = Counter(how for d in deposits for how in d.lost)
    # Every attempt that ran but the first is a retry; a dropped one may or may not have run.
    assert lost["ignored"] + 2 * lost["racing"] <= retried <= lost["ignored"] + 2 * lost["racing"] + lost["dropped"]

    ledger = CashLedger(f"sqlite:///{data_dir / 'clearing.db'}")
    try:
        with ledger.engine.connect() as connection:
            t = cash_transfers.c
            rows = connection.execute(sa.select(t.memo, t.credit_account, t.amount_fen).where(t.code == TransferCode.DEPOSIT)).all()
        assert Counter(memo for memo, _, _ in rows) == Counter(f"reference {d.reference}" for d in deposits)
        assert sorted((memo, member, int(amount)) for memo, member, amount in rows) == sorted(
            (f"reference {d.reference}", d.member_id, d.amount_fen) for d in deposits
        )
        assert {member: ledger.balance(member) for member in MEMBERS} == expected
        assert ledger.balance(BANK) == -sum(expected.values())
        assert ledger.verify() == []
    finally:
        ledger.close()


def journal_deposits(data_dir: Path) -> tuple[dict[str, tuple[str, int]], int]:
    """The journal replayed alone: each reference's one movement, and how many retries."""
    moved: dict[str, tuple[str, int]] = {}
    retried = 0
    journal = FileJournal(data_dir / "commands.journal")
    try:
        for _, _, events in replay(build_core(fast_config()), journal.records()):
            for event in events:
                if type(event) is FundsDeposited:
                    assert event.reference not in moved, f"{event.reference} moved twice"
                    moved[event.reference] = (event.member_id, event.amount_fen)
                elif type(event) is FundsRetried:
                    retried += 1
    finally:
        journal.close()
    return moved, retried


async def test_a_reference_reused_for_another_amount_is_refused_and_one_is_required(served: Served, http) -> None:
    await served.hub.submit(RegisterMember("CH1", MemberKind.VOLUNTARY))
    house = ClearingHouse(http, served)
    first = {"member_id": "CH1", "amount_fen": 500, "reference": "bank:7"}
    assert (await house.post(first))[1]["duplicate"] is False
    status, answer = await house.post({**first, "amount_fen": 501})
    assert (status, answer["code"], answer["field"]) == (409, 223, "reference")
    headers = {"Authorization": f"Bearer {house.token}"}
    async with http.post(served.url + "/clearing/withdrawals", json=first, headers=headers) as response:
        assert (response.status, (await response.json())["field"]) == (409, "reference")  # another direction
    for body, problem in (
        ({"member_id": "CH1", "amount_fen": 500}, "required field is missing"),
        ({**first, "reference": ""}, "a reference is 1 to 64 of letters, digits and _ . : -"),
        ({**first, "reference": "bank 7"}, "a reference is 1 to 64 of letters, digits and _ . : -"),
        ({**first, "reference": "x" * 65}, "a reference is 1 to 64 of letters, digits and _ . : -"),
    ):
        status, answer = await house.post(body)
        assert (status, answer["field"], answer["error"]) == (400, "reference", problem)
    async with http.get(served.url + "/members", headers=headers) as response:
        assert [m["cash_available_fen"] for m in await response.json()] == [500]
