"""Deposit and withdrawal references in the core (issue 11): a retry with a reference the
member already used moves nothing and repeats the first outcome; the same reference for
another amount or direction is refused (REFERENCE_REUSED); the references travel in the
state (snapshots, the state hash); journals from before references still decode and replay.
The HTTP side, with lost answers over real sockets, is tests/gateway/test_deposit_retries.py.
"""

from __future__ import annotations

import msgspec
import pytest

from exchange.clearing.funds import FundsMirror
from exchange.clearing.ledger import BANK, CashLedger
from exchange.engine import ExchangeCore, decode_state, encode_state
from exchange.engine.engine import decode_command, encode_command
from exchange.model.commands import Command, Deposit, RegisterMember, SetMemberStatus, Withdraw
from exchange.model.enums import CommandName, MemberKind, MemberStatus
from exchange.model.events import CommandRejected, FundsDeposited, FundsRetried, FundsWithdrawn
from exchange.model.instruments import Instrument, InstrumentKind
from exchange.model.rejects import RejectReason
from exchange.model.stream import Applied

R = RejectReason
INSTRUMENT = Instrument("CEA-2025", InstrumentKind.ALLOWANCE, 10_000, vintage=2025)


class Core:
    """A core with members alice and bob, and a sequence counter."""

    def __init__(self) -> None:
        self.core = ExchangeCore([INSTRUMENT])
        self.seq = 0
        for member in ("alice", "bob"):
            self(RegisterMember(member, MemberKind.VOLUNTARY))

    def __call__(self, command) -> list:
        self.seq += 1
        return self.core.apply(self.seq, self.seq, command)

    def available(self, member: str) -> int:
        return self.core.risk.accounts[member].cash_available_fen


def test_a_retried_deposit_moves_nothing_and_repeats_the_first_outcome() -> None:
    m = Core()
    assert m(Deposit("alice", 500, "D-1")) == [FundsDeposited("alice", 500, 500, "D-1")]
    m(Deposit("alice", 200, "D-2"))
    retried = m(Deposit("alice", 500, "D-1"))
    assert retried == [FundsRetried(CommandName.DEPOSIT, "alice", "D-1", 500, 500)]
    assert retried[0].first() == FundsDeposited("alice", 500, 500, "D-1")  # what the first answered
    assert m.available("alice") == 700


def test_a_retried_withdrawal_moves_nothing_even_once_the_member_is_frozen() -> None:
    m = Core()
    m(Deposit("alice", 1_000, "D-1"))
    assert m(Withdraw("alice", 300, "W-1")) == [FundsWithdrawn("alice", 300, 700, "W-1")]
    m(SetMemberStatus("alice", MemberStatus.FROZEN))
    retried = m(Withdraw("alice", 300, "W-1"))
    assert retried == [FundsRetried(CommandName.WITHDRAW, "alice", "W-1", 300, 700)]
    assert retried[0].first() == FundsWithdrawn("alice", 300, 700, "W-1")
    assert m.available("alice") == 700
    assert [e.reason for e in m(Withdraw("alice", 1, "W-2"))] == [R.MEMBER_FROZEN]  # a new one is weighed


@pytest.mark.parametrize("retry", [
    Deposit("alice", 501, "D-1"),  # another amount
    Withdraw("alice", 500, "D-1"),  # another direction
], ids=["amount", "direction"])
def test_a_reference_reused_for_another_movement_is_refused(retry) -> None:
    m = Core()
    m(Deposit("alice", 500, "D-1"))
    before = encode_state(m.core.state())
    command = CommandName.DEPOSIT if type(retry) is Deposit else CommandName.WITHDRAW
    assert m(retry) == [CommandRejected(command, R.REFERENCE_REUSED, "alice")]
    after = m.core.state()
    after.last_seq -= 1
    assert encode_state(after) == before  # nothing changed but the sequence


def test_references_are_per_member() -> None:
    m = Core()
    m(Deposit("alice", 500, "D-1"))
    assert m(Deposit("bob", 500, "D-1")) == [FundsDeposited("bob", 500, 500, "D-1")]


def test_a_refused_movement_does_not_take_its_reference() -> None:
    """Nothing moved, so nothing can move twice: the same instruction may be sent again once
    its cause is fixed."""
    m = Core()
    assert [e.reason for e in m(Withdraw("alice", 300, "W-1"))] == [R.INSUFFICIENT_AVAILABLE]
    assert [e.reason for e in m(Deposit("alice", 0, "D-0"))] == [R.AMOUNT_NOT_POSITIVE]
    m(Deposit("alice", 1_000, "D-1"))
    assert m(Withdraw("alice", 300, "W-1")) == [FundsWithdrawn("alice", 300, 700, "W-1")]
    assert m(Deposit("alice", 5, "D-0")) == [FundsDeposited("alice", 5, 705, "D-0")]


def test_without_a_reference_every_deposit_moves_as_before() -> None:
    m = Core()
    assert m(Deposit("alice", 500)) == [FundsDeposited("alice", 500, 500)]
    assert m(Deposit("alice", 500)) == [FundsDeposited("alice", 500, 1_000)]
    assert m.core.risk.accounts["alice"].references == {}


def test_an_unknown_member_is_refused_before_its_reference_is_looked_at() -> None:
    m = Core()
    assert [e.reason for e in m(Deposit("carol", 5, "D-1"))] == [R.UNKNOWN_MEMBER]


def test_references_travel_in_the_snapshot_state() -> None:
    m = Core()
    m(Deposit("alice", 500, "D-1"))
    m(Withdraw("alice", 200, "W-1"))
    restored = ExchangeCore([INSTRUMENT])
    restored.restore(decode_state(encode_state(m.core.state())))
    assert restored.state_hash() == m.core.state_hash()
    assert restored.risk.accounts["alice"].references == m.core.risk.accounts["alice"].references
    assert restored.apply(m.seq + 1, 0, Withdraw("alice", 200, "W-1")) == [
        FundsRetried(CommandName.WITHDRAW, "alice", "W-1", 200, 300)
    ]
    assert restored.risk.accounts["alice"].cash_available_fen == 300


def test_the_state_hash_sees_the_references() -> None:
    """Two histories with the same money but different references are different states."""
    one, other = Core(), Core()
    one(Deposit("alice", 500, "D-1"))
    other(Deposit("alice", 500, "D-2"))
    assert one.core.state_hash() != other.core.state_hash()


def test_journals_from_before_references_still_decode_and_replay() -> None:
    """The old journal form: [tag, member_id, amount_fen]. It decodes with no reference and
    behaves as such a deposit always did; the new form round-trips its reference."""
    old = msgspec.msgpack.encode(["Deposit", "alice", 500])
    assert decode_command(old) == Deposit("alice", 500)
    assert decode_command(msgspec.msgpack.encode(["Withdraw", "alice", 5])) == Withdraw("alice", 5)
    assert decode_command(encode_command(Deposit("alice", 500, "D-1"))) == Deposit("alice", 500, "D-1")
    m = Core()
    assert m(decode_command(old)) == [FundsDeposited("alice", 500, 500)]
    assert m(decode_command(old)) == [FundsDeposited("alice", 500, 1_000)]


@pytest.mark.parametrize("reference", ["a b", "x" * 65, "é", "a/b", "a\n"])
def test_the_journal_decoder_refuses_a_malformed_reference(reference: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=r"at `\$\[3\]`"):
        decode_command(msgspec.msgpack.encode(["Deposit", "alice", 5, reference]))


def test_old_snapshots_without_references_still_restore() -> None:
    """A snapshot written before references: its accounts have one element fewer."""
    m = Core()
    m(Deposit("alice", 500))
    state = msgspec.to_builtins(m.core.state())
    for account in state[5][5]:  # risk.accounts: drop the trailing references
        account.pop()
    old_bytes = msgspec.msgpack.encode(state)
    restored = ExchangeCore([INSTRUMENT])
    restored.restore(decode_state(old_bytes))
    assert restored.state_hash() == m.core.state_hash()


def test_the_funds_mirror_posts_the_first_and_not_the_retry(tmp_path) -> None:
    """The cash ledger moves once per reference, with the reference in the transfer's memo."""
    m = Core()
    ledger = CashLedger(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger.create_schema()
    mirror = FundsMirror(ledger)
    mirror.create_schema()
    commands: list[Command] = [RegisterMember("carol", MemberKind.VOLUNTARY), Deposit("carol", 500, "D-1"),
                Deposit("carol", 500, "D-1"), Withdraw("carol", 100, "W-1"), Withdraw("carol", 100, "W-1")]
    for command in commands:
        events = m(command)
        mirror.apply(Applied(m.seq, m.seq, "", command, events))
    mirror.flush()
    assert ledger.balance("carol") == 400 == m.available("carol")
    assert ledger.balance(BANK) == -400
    deposit = ledger.transfer(f"journal:{m.seq - 3}:deposit")
    assert deposit is not None and deposit.transfer.memo == "reference D-1"
    assert ledger.transfer(f"journal:{m.seq - 2}:deposit") is None
    ledger.close()
