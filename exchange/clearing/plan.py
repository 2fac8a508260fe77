"""The settlement plan: a day's obligations turned into registry legs and ledger legs.

Pure and deterministic: no I/O, no clock, and the same obligations in the same order always
give the same legs with the same ids. Settlement (:mod:`exchange.clearing.settlement`) reads
the stores, asks the plan what to post and what to check, and executes it stage by stage; a
run resumed after a crash rebuilds the same plan and posts the same ids, which both stores
recognise as done.

Every obligation gives two legs, each with an idempotency id derived from the trading day,
the trade id and the leg, so that a leg posted once is never posted again, however often
settlement runs:

    settle:2026-11-23:T1234:allowance      seller -> buyer, in the registry
    settle:2026-11-23:T1234:cash           buyer -> seller, in the cash ledger

and each account that pays gets legs of its own (``settle:DAY:M:<account>:hold|advance|
repay``; the ``M`` stays from when every account was a member's, so ids never change).

The registry unit of an instrument is its symbol (``CEA-2025``, ``CCER``); an account's
registry account and cash account are both named by its account id.

The net per account and asset (``+`` to deliver or pay, ``-`` to receive) goes on the
statements, is what each account's cash is held for before delivery, and must equal the
exchange's own view of the day's obligations (the closing positions).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Protocol

import msgspec

from exchange.clearing.ledger import (
    SETTLEMENT,
    Operation,
    Transfer,
    TransferCode,
    VoidPending,
)
from exchange.clearing.obligations import CASH, Obligation
from exchange.model.units import format_fen
from registry_adapter.port import Transfer as RegistryTransfer

SETTLEMENT_CODE = TransferCode.SETTLEMENT


class ClosingPosition(Protocol):
    """One row of the exchange's view at the close (the trade store's ``closing_positions``
    rows, or any record with these fields: read-only, so a frozen struct fits too)."""

    @property
    def member_id(self) -> str: ...  # an account id

    @property
    def asset(self) -> str: ...

    @property
    def settled(self) -> int: ...

    @property
    def obligation(self) -> int: ...


def leg_id(trading_day: str, trade_id: int, leg: str) -> str:
    return f"settle:{trading_day}:T{trade_id}:{leg}"


def account_leg_id(trading_day: str, account: str, leg: str) -> str:
    return f"settle:{trading_day}:M:{account}:{leg}"


def obligations_digest(trading_day: str, obligations: Sequence[Obligation]) -> str:
    """A fingerprint of the day's obligations, taken when settlement freezes them: a later
    run that finds other trades for the day stops instead of settling something else."""
    return hashlib.blake2b(msgspec.msgpack.encode([trading_day, obligations]), digest_size=16).hexdigest()


class SettlementPlan:
    """The day's obligations with what each account owes, per asset, and the legs that settle
    them. ``received`` and ``delivered`` count tonnes of an instrument, or fen of ``cash``
    (delivered = paid). The legs are built on demand, stage by stage, so a resumed run never
    builds a million legs it will not post."""

    def __init__(self, trading_day: str, obligations: list[Obligation]) -> None:
        self.trading_day = trading_day
        self.obligations = obligations
        self.received: dict[tuple[str, str], int] = {}  # (account, asset) -> amount
        self.delivered: dict[tuple[str, str], int] = {}
        self.value_fen = self.volume_t = 0
        self._add_up()
        self.digest = obligations_digest(trading_day, obligations)

    def _add_up(self) -> None:
        # The tightest loop of settlement set-up: plain dicts of ints, one pass, and the
        # value inlined rather than read through ``Obligation.value_fen``.
        received, delivered = self.received, self.delivered
        value_total = volume = 0
        for ob in self.obligations:
            qty, buyer, seller = ob.qty_t, (ob.buyer, ob.instrument), (ob.seller, ob.instrument)
            value = ob.price_fen * qty
            value_total += value
            volume += qty
            received[buyer] = received.get(buyer, 0) + qty
            delivered[seller] = delivered.get(seller, 0) + qty
            payer, payee = (ob.buyer, CASH), (ob.seller, CASH)
            delivered[payer] = delivered.get(payer, 0) + value
            received[payee] = received.get(payee, 0) + value
        self.value_fen, self.volume_t = value_total, volume

    # -- what each account owes ---------------------------------------------------------------

    def accounts(self) -> list[str]:
        """Every account with an obligation, sorted."""
        return sorted({account for account, _ in self.received} | {account for account, _ in self.delivered})

    def net(self, account: str, asset: str) -> int:
        """+ to deliver (or pay), - to receive."""
        return self.delivered.get((account, asset), 0) - self.received.get((account, asset), 0)

    def nets(self) -> dict[tuple[str, str], int]:
        """Every (account, asset) with a non-zero net."""
        keys = self.received.keys() | self.delivered.keys()
        return {key: net for key in keys if (net := self.net(*key))}

    def gross_pay_fen(self, account: str) -> int:
        return self.delivered.get((account, CASH), 0)

    def net_pay_fen(self, account: str) -> int:
        return self.net(account, CASH)

    # -- checks before anything posts ---------------------------------------------------------

    def obligation_problems(self, positions: Sequence[ClosingPosition]) -> list[str]:
        """The nets from the obligations must be the exchange's own obligations."""
        expected = {(row.member_id, row.asset): row.obligation for row in positions if row.obligation}
        found = self.nets()
        return [
            f"{account} {asset}: the trades owe {found.get((account, asset), 0)}, "
            f"the exchange's view {expected.get((account, asset), 0)}"
            for account, asset in sorted(expected.keys() | found.keys())
            if expected.get((account, asset), 0) != found.get((account, asset), 0)
        ]

    def delivery_problems(self, holdings: Mapping[str, dict[str, int]]) -> list[str]:
        """A dry run of the allowance legs, in trade order, over the registry's holdings
        (``holdings`` has every account the registry knows; it is changed in place). An
        account missing from it has no registry account, reported once; its legs are not
        run. A shortfall is reported once per account and instrument: the first trade that
        finds it short."""
        problems = [f"{account}: no registry account" for account in self.accounts() if account not in holdings]
        short: set[tuple[str, str]] = set()
        for ob in self.obligations:
            seller, buyer = holdings.get(ob.seller), holdings.get(ob.buyer)
            if seller is None or buyer is None:
                continue
            held = seller.get(ob.instrument, 0)
            if held < ob.qty_t and (ob.seller, ob.instrument) not in short:
                short.add((ob.seller, ob.instrument))
                problems.append(f"{ob.seller}: holds {held} t of {ob.instrument}, trade {ob.trade_id} delivers {ob.qty_t} t")
            seller[ob.instrument] = held - ob.qty_t
            buyer[ob.instrument] = buyer.get(ob.instrument, 0) + ob.qty_t
        return problems

    def payment_problems(self, available_fen: Mapping[str, int]) -> list[str]:
        """Every account must have a cash account holding its net payment (the gross is
        advanced by the settlement account, so only the net has to be there)."""
        problems = []
        for account in self.accounts():
            if account not in available_fen:
                problems.append(f"{account}: no cash account")
            elif available_fen[account] < self.net_pay_fen(account):
                problems.append(
                    f"{account}: {format_fen(available_fen[account])} CNY available, "
                    f"{format_fen(self.net_pay_fen(account))} CNY to pay"
                )
        return problems

    # -- the legs -----------------------------------------------------------------------------

    def hold_legs(self) -> list[Transfer]:
        """One pending transfer per net payer, account -> settlement, so nothing can withdraw
        the money while the allowances move."""
        day = self.trading_day
        return [
            Transfer(account_leg_id(day, account, "hold"), account, SETTLEMENT, net, SETTLEMENT_CODE, "", True)
            for account in self.accounts() if (net := self.net_pay_fen(account)) > 0
        ]

    def registry_legs(self) -> list[RegistryTransfer]:
        """Every allowance leg, seller -> buyer, in trade order: one registry batch."""
        day = self.trading_day
        return [
            RegistryTransfer(leg_id(day, ob.trade_id, "allowance"), ob.seller, ob.buyer, ob.instrument, ob.qty_t)
            for ob in self.obligations
        ]

    def pay_legs(self) -> list[Operation]:
        """One ledger batch: void the holds; advance each payer its gross purchases from the
        settlement account; every cash leg buyer -> seller; each payer repays the advance.
        The advance makes the cash legs independent of their order, so an account may pay with
        the same day's sale proceeds; the settlement account ends the batch at zero."""
        day, accounts = self.trading_day, self.accounts()
        payers = [(account, gross) for account in accounts if (gross := self.gross_pay_fen(account)) > 0]
        operations: list[Operation] = [
            VoidPending(account_leg_id(day, account, "hold")) for account in accounts if self.net_pay_fen(account) > 0
        ]
        operations.extend(
            Transfer(account_leg_id(day, account, "advance"), SETTLEMENT, account, gross, SETTLEMENT_CODE)
            for account, gross in payers
        )
        operations.extend(
            Transfer(leg_id(day, ob.trade_id, "cash"), ob.buyer, ob.seller, ob.value_fen, SETTLEMENT_CODE)
            for ob in self.obligations
        )
        operations.extend(
            Transfer(account_leg_id(day, account, "repay"), account, SETTLEMENT, gross, SETTLEMENT_CODE)
            for account, gross in payers
        )
        return operations
