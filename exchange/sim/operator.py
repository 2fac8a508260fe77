"""The operator of the served run over the HTTP API, with the role tokens the server wrote:
the administrator, the clearing house and the regulator.

:class:`Operator` makes the calls; :func:`operator_actions` is what the operator does to the
market during continuous trading: every few hundred orders one decision of
:func:`exchange.sim.strategies.operator_action` (a halt or a kill switch, undone a few hundred
orders later and before the session ends, a deposit, a withdrawal), drawn from the operator's
own generator so the members' draws do not depend on it.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import msgspec

from exchange.sim.checks import ServedRun
from exchange.progress import Progress
from exchange.sim.strategies import OperatorAction, operator_action

EVERY_ORDERS = (200, 800)  # orders between two operator decisions
POLL_S = 0.01

# How each action is asked for: (name in the summary, path, role, body).
_REQUESTS = {
    "halt": ("halt", "/instruments/{symbol}/halt", "regulator"),
    "resume": ("resume", "/instruments/{symbol}/resume", "regulator"),
    "kill": ("kill switch", "/members/{member_id}/kill", "regulator"),
    "restore": ("restore", "/members/{member_id}/status", "admin"),
    "deposit": ("deposit", "/clearing/deposits", "clearing"),
    "withdraw": ("withdrawal", "/clearing/withdrawals", "clearing"),
}


class OperatorError(Exception):
    """The operator API answered what the run cannot go on from."""


class Operator:
    """HTTP calls with role tokens."""

    def __init__(self, http: aiohttp.ClientSession, url: str, tokens: dict[str, str]) -> None:
        self.http, self.url, self.tokens = http, url, tokens
        self.references = 0

    async def call(self, method: str, path: str, role: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"}
        data = None if body is None else msgspec.json.encode(body)
        if data is not None:
            headers["Content-Type"] = "application/json"
        async with self.http.request(method, self.url + path, data=data, headers=headers) as response:
            return response.status, msgspec.json.decode(await response.read())

    async def ok(self, method: str, path: str, role: str, body: Any = None) -> Any:
        status, answer = await self.call(method, path, role, body)
        if status not in (200, 201):
            raise OperatorError(f"{method} {path}: {status} {answer}")
        return answer

    async def act(self, action: OperatorAction, result: ServedRun) -> None:
        """One operator action; a refusal (a withdrawal of more than the member has) is counted."""
        what, path, role = _REQUESTS[action.kind]
        body: Any = None
        if action.kind == "restore":
            body = {"status": "active"}
        elif action.kind in ("deposit", "withdraw"):
            self.references += 1  # the clearing house's payment reference, one per instruction
            body = {"member_id": action.member_id, "amount_fen": action.amount_fen, "reference": f"sim-{self.references}"}
        status, answer = await self.call("POST", path.format(symbol=action.symbol, member_id=action.member_id), role, body)
        result.operator[what] += 1
        if status not in (200, 201):
            result.operator_refusals[(what, answer.get("code"))] += 1


@dataclass
class _Pending:
    """Halts and kill switches in force, and the actions that undo them (due at orders sent)."""

    halted: set[str] = field(default_factory=set)
    killed: set[str] = field(default_factory=set)
    undo: list[tuple[int, OperatorAction]] = field(default_factory=list)

    def due(self, sent: int, everything: bool) -> list[OperatorAction]:
        ready = [action for at, action in self.undo if at <= sent or everything]
        self.undo = [(at, action) for at, action in self.undo if not (at <= sent or everything)]
        for action in ready:
            self.halted.discard(action.symbol)
            self.killed.discard(action.member_id)
        return ready


async def operator_actions(operator: Operator, rnd: random.Random, symbols: list[str], members: list[str],
                           progress: Progress, result: ServedRun, stop: asyncio.Event) -> None:
    """Until ``stop``: a decision every few hundred orders the members send; at ``stop``,
    everything still halted or killed is undone."""
    pending = _Pending()
    next_at = progress.sent + rnd.randrange(*EVERY_ORDERS)
    while True:
        try:
            async with asyncio.timeout(POLL_S):
                await stop.wait()
        except TimeoutError:
            pass
        sent = progress.sent
        for action in pending.due(sent, stop.is_set()):
            await operator.act(action, result)
        if stop.is_set():
            return
        if sent >= next_at:
            next_at = sent + rnd.randrange(*EVERY_ORDERS)
            await _decide(operator, rnd, symbols, members, sent, pending, result)


async def _decide(operator: Operator, rnd: random.Random, symbols: list[str], members: list[str], sent: int,
                  pending: _Pending, result: ServedRun) -> None:
    symbol, member = rnd.choice(symbols), rnd.choice(members)
    decision = operator_action(rnd, member, symbol, symbol in pending.halted, member in pending.killed)
    if decision.action.kind == "halt":
        pending.halted.add(symbol)
    elif decision.action.kind == "kill":
        pending.killed.add(member)
    await operator.act(decision.action, result)
    if decision.undo is not None:
        pending.undo.append((sent + decision.undo_after, decision.undo))
