"""The gateway's service port, implemented over :class:`~exchange.app.Exchange`.

Part of the composition root: this is the one place that knows both what the gateway asks
(:class:`exchange.gateway.port.ExchangePort`) and where the answers live (the engine, the
core's risk state, the clearing side's stores and settlement, the registry). It copies what
it reads into the port's structs, so the gateway never holds an object of the core or a store.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import sqlalchemy as sa

from exchange.app import Clearing, Exchange
from exchange.clearing.ledger import LedgerError
from exchange.gateway.port import (
    AdmissionRefusal, DayState, HoldingBalance, MemberAccount, RegistryRefusal, StateSummary, TradeRecord,
)
from exchange.model.commands import Command, RegisterMember
from exchange.model.stream import Applied
from registry_adapter.port import MEMBER_HOLDING, RegistryError


class ExchangeService:
    """:class:`~exchange.gateway.port.ExchangePort` over an open :class:`Exchange`."""

    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange

    @property
    def last_seq(self) -> int:
        return self.exchange.engine.last_seq

    @property
    def trading_day(self) -> str:
        return self.exchange.core.trading_day

    # -- writes --------------------------------------------------------------------------------

    def execute(self, command: Command) -> Applied:
        return self.exchange.execute(command)

    def commit(self) -> list[Applied]:
        return self.exchange.flush()

    def start_day(self, trading_day: str) -> list[Applied]:
        return self.exchange.start_day(trading_day)

    def end_day(self) -> Applied:
        return self.exchange.end_day()

    def admit_member(self, command: RegisterMember) -> Applied | AdmissionRefusal:
        if command.member_id in self.exchange.core.risk.accounts:
            return self.execute(command)  # registered already: the core's refusal, nothing opened
        problem = self._open_accounts(command.member_id)
        if problem is not None:
            return AdmissionRefusal(command.member_id, problem)
        return self.execute(command)

    def _open_accounts(self, member_id: str) -> str | None:
        """The cash account first (the exchange's own database), then the registry's."""
        clearing = self.exchange.clearing
        if clearing is None:  # an exchange without its clearing side (benchmarks) has no accounts to open
            return None
        try:
            clearing.ledger.open_member_account(member_id)
        except (LedgerError, sa.exc.SQLAlchemyError) as error:
            return f"the cash ledger cannot open its account: {error}"
        try:
            clearing.registry.open_account(member_id, MEMBER_HOLDING, actor="exchange", reason="member admitted")
        except RegistryError as error:
            return f"the registry cannot open its account: {error}"
        return None

    def settle(self, trading_day: str) -> dict[str, Any]:
        return msgspec.to_builtins(self.exchange.settle(trading_day))

    # -- reads ---------------------------------------------------------------------------------

    def member_accounts(self) -> list[MemberAccount]:
        accounts = self.exchange.core.risk.state().accounts  # the members' only, not the house's
        members = []
        for a in sorted(accounts, key=lambda account: account.member_id):
            assert a.kind is not None  # only a house account has no member kind
            members.append(MemberAccount(
                a.member_id, a.kind, a.status, a.killed, a.cash_available_fen, a.cash_reserved_fen,
                a.cash_pending_fen, a.cash_obligation_fen, a.open_orders, a.position_t,
                [HoldingBalance(symbol, h.available_t, h.reserved_t, h.locked_t, h.obligation_t) for symbol, h in a.holdings],
            ))
        return members

    def state_summary(self) -> StateSummary:
        engine, core = self.exchange.engine, self.exchange.core
        return StateSummary(engine.last_seq, core.state_hash(), engine.journal.chain_hash.hex(), core.trading_day)

    def day_trades(self, trading_day: str) -> list[TradeRecord]:
        clearing = self._clearing()
        self.exchange.sync_stores()
        return [_trade_record(row._mapping) for row in clearing.store.day_trades(trading_day)]

    def day_positions(self, trading_day: str) -> list[dict[str, Any]]:
        clearing = self._clearing()
        self.exchange.sync_stores()
        return [dict(row._mapping) for row in clearing.store.day_positions(trading_day)]

    def statements_dir(self, trading_day: str) -> Path | None:
        clearing = self.exchange.clearing
        root = clearing.settlement.statements_dir if clearing is not None else None
        return None if root is None else Path(root) / trading_day

    def registry_refusal(self) -> RegistryRefusal | None:
        registry = self.exchange.registry
        if registry is None:
            return None
        for member_id in sorted(self.exchange.core.risk.accounts):
            try:
                registry.holdings(member_id)
            except Exception as error:  # noqa: BLE001 - the registry's refusal, reported as it is
                return RegistryRefusal(member_id, str(error))
        return None

    def day_state(self) -> DayState:
        core = self.exchange.core
        clearing = self.exchange.clearing
        status = clearing.settlement.status(core.trading_day) if clearing is not None and core.trading_day else None
        return DayState(core.trading_day, core.day_open, core.risk.phase, status is not None and status[0] == "settled")

    def _clearing(self) -> Clearing:
        clearing = self.exchange.clearing
        assert clearing is not None, "the exchange was opened without its clearing side"
        return clearing


def _trade_record(row: Any) -> TradeRecord:
    """A stored trade as the port gives it (the store names the parties ``buyer``/``seller``
    and what each side's hold backed ``buy_source``/``sell_source``)."""
    aggressor = row["aggressor"]
    return TradeRecord(
        row["trade_id"], row["trading_day"], row["instrument"], row["price_fen"], row["qty_t"],
        None if aggressor is None else int(aggressor),
        row["buyer"], row["buy_source"], row["seller"], row["sell_source"], row["seq"],
    )
