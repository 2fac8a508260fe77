"""The service port: everything the gateway asks of the running exchange, as a Protocol.

The gateway (the hub, the member sessions, the operator API) depends on this and on
``exchange.model`` only, never on the composition root (``exchange.app``), the engine's
journal, the risk room's accounts or the clearing side's stores. The composition root adapts
its :class:`~exchange.app.Exchange` to the port (``exchange/service.py``) and hands the
adapter to the hub.

Decisions:

* **Writes return stream records.** :meth:`ExchangePort.execute` journals and applies one
  command and returns its :class:`~exchange.model.stream.Applied` record, which is *not yet
  durable*; :meth:`ExchangePort.commit` makes the journal durable and hands every record it
  now covers to the projections (the gateway's views among them), and returns those records.
  The hub calls ``commit`` once per batch (group commit) before it tells anyone anything.
* **Reads return the port's own structs** (below), so the gateway never holds an object of
  the core or of a store: a member's account, the state summary, a day's trades. They are
  plain msgspec structs copied out by the adapter.
* **Reads of the stores wait for them.** ``day_trades``, ``day_positions`` and ``settle``
  first let the SQL projections catch up with the journal (the adapter's business).
* **Expected failures are values or named exceptions**: :meth:`registry_refusal` says which
  member the registry cannot answer for; ``settle`` raises whatever stopped settlement (its
  message is reported to the clearing house as it is).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import msgspec

from exchange.model.commands import Command, RegisterMember
from exchange.model.enums import MemberKind, MemberStatus, TradingPhase
from exchange.model.stream import Applied


class HoldingBalance(msgspec.Struct, frozen=True):
    """One member's balance of one instrument, in tonnes."""

    instrument: str
    available_t: int
    reserved_t: int
    locked_t: int
    obligation_t: int


class MemberAccount(msgspec.Struct, frozen=True):
    """One member's account as the exchange keeps it (money in fen)."""

    member_id: str
    kind: MemberKind
    status: MemberStatus
    killed: bool
    cash_available_fen: int
    cash_reserved_fen: int
    cash_pending_fen: int
    cash_obligation_fen: int
    open_orders: int
    position_t: int
    holdings: list[HoldingBalance]


class StateSummary(msgspec.Struct, frozen=True):
    """The engine's position and state hash (equal to a replay of the journal)."""

    last_seq: int
    state_hash: str
    journal_chain: str
    trading_day: str


class TradeRecord(msgspec.Struct, frozen=True):
    """One stored trade. ``aggressor`` is the side that took liquidity (1 buy, 2 sell; None
    for a trade off the book, such as a block deal), the order ids are what each side's
    trade came from (None when not an order)."""

    trade_id: int
    trading_day: str
    instrument: str
    price_fen: int
    qty_t: int
    aggressor: int | None
    buy_member_id: str
    buy_order_id: int | None
    sell_member_id: str
    sell_order_id: int | None
    seq: int


class DayState(msgspec.Struct, frozen=True):
    """Where the trading day is, as the calendar driver needs it: the core's trading day
    ("" before the first), whether it is open, its phase, and whether settlement of that day
    has finished."""

    trading_day: str
    day_open: bool
    phase: TradingPhase
    settled: bool


class RegistryRefusal(msgspec.Struct, frozen=True):
    """The registry could not answer for a member (so the day must not open)."""

    member_id: str
    problem: str


class AdmissionRefusal(msgspec.Struct, frozen=True):
    """A member could not be admitted: one of its accounts could not be opened (nothing was
    registered)."""

    member_id: str
    problem: str


class ExchangePort(Protocol):
    """The running exchange as the gateway sees it. Every method is called from the hub's
    drain task (one at a time, in order with the commands), except ``settle``, which runs in
    a worker thread while the drain task waits, and the two properties, which are cheap."""

    @property
    def last_seq(self) -> int:
        """The sequence number of the last command applied."""

    @property
    def trading_day(self) -> str:
        """The core's trading day ("" before the first)."""

    # -- writes ----------------------------------------------------------------------------

    def execute(self, command: Command) -> Applied:
        """Journal and apply one command; its record (durable after the next ``commit``)."""

    def commit(self) -> list[Applied]:
        """Make the journal durable, deliver what it now covers to the projections; those
        records, in sequence order."""

    def start_day(self, trading_day: str) -> list[Applied]:
        """Open the day and load every member's settled holdings from the registry."""

    def end_day(self) -> Applied:
        """Close the trading day (and make it durable)."""

    def admit_member(self, command: RegisterMember) -> Applied | AdmissionRefusal:
        """Open the member's registry account (a member holding, its id the member id) and its
        cash account, then register it, in one step; the refusal, with nothing registered,
        if an account cannot be opened. Opening is idempotent: an account opened before (by
        the registry's operator, or by an admission refused later) is used as it is."""

    def settle(self, trading_day: str) -> dict[str, Any]:
        """Settle a closed day; the settlement report as JSON-ready builtins. Raises what
        stopped it."""

    # -- reads -----------------------------------------------------------------------------

    def member_accounts(self) -> list[MemberAccount]:
        """Every member's account, in member id order."""

    def state_summary(self) -> StateSummary:
        """The position, the state hash and the journal's chain hash."""

    def day_trades(self, trading_day: str) -> list[TradeRecord]:
        """A day's stored trades in trade id order."""

    def day_positions(self, trading_day: str) -> list[dict[str, Any]]:
        """A day's stored closing positions (one dict per member and asset); empty until the
        day closed."""

    def statements_dir(self, trading_day: str) -> Path | None:
        """Where a settled day's statement files are, or None if there are none."""

    def registry_refusal(self) -> RegistryRefusal | None:
        """The first member (in id order) whose holdings the registry cannot give, if any."""

    def day_state(self) -> DayState:
        """The trading day's state (the engine's, and whether its settlement finished)."""
