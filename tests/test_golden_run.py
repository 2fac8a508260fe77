"""A seeded run's journal, state and event stream, pinned before the house redesign.

The journal is the exchange's record of what it was told: a redesign of the rooms behind the
engine must not change a byte of it for the same seeded input. The state hash and the event
stream may change only on purpose; each intended change is written here beside its new value.

Recorded at commit 99641c3 (before issue 9), ``exchange simulate --in-process --seed 7
--members 20 --commands 5000 --days 2``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from exchange.cli import main

# Moved by issue 11 (deposit and withdrawal references): Deposit and Withdraw gained a trailing
# ``reference`` field. Commands are msgspec array_like structs, for which msgspec (0.22) has no
# omit_defaults, so every Deposit/Withdraw now encodes one more element (an empty string: the
# sim sends no reference). Not a redesign: old journals decode and replay as before
# (tests/test_deposit_references.py decodes the old three-element form).
# Was 936b4eaab74f601701d05c4ad07234953e031c2599af018a3e9423d058560281.
# Moved again by issue 11 (distinct cancel reasons): MassCancel gained a trailing ``reason``
# (default MEMBER, what every older record meant), so each of the run's 54 mass cancels
# encodes one more element; the events and the state hash do not move, and old records decode
# to the same command (tests/gateway/test_protocol_member.py decodes the old forms).
# Was 79a38a94ba79bcaea6e725d0fe90a629f3af5cdc5b2cfe1d4b81be6c0732e8e7.
JOURNAL_SHA256 = "5d94454263a84d2bcd867ce9dbeb87d6a3275285e3ea3e20942a27d53a4af87d"
# Moved by issue 9 part A: OrderRejected carries the refused order's fields (side, order_type,
# tif, price_fen, qty_t); CommandRejected.command became the CommandName enum (same bytes).
# Was f5f5cf31153182f9792ec643728d9c49993dfcea5a472aeb434f0af44c400616.
EVENTS_SHA256 = "886614784ff1497f822b1882df0418f8a0f3c8ecb7f5c71632c6024386b0a739"
# Moved by issue 9 part B: the risk state's layout (RiskState gains the house accounts and
# the open holds by kind and id; AccountState loses buy_limits and gains account_kind).
# Was 3da58404fccd8e846fdab78f930d0e7bfce4defa99dc666f2d82bda1275244d3.
# Moved by issue 11: AccountState gains ``references`` (each member's deposit and withdrawal
# references, empty in this run). The value also holds the other issue-11 state change in the
# tree when it was taken (without references the state hash was 1829ba1b...19e0b3).
# Was c5c47ed14de605cade1b00223b913f47f452eeee29d1b3e051b84b2e6e27b488.
# Also in it, from issue 10 (trading days, VoidDay): CoreState gains a trailing ``opening``
# (what a void needs while a day is open; None, one nil byte, at the end of this run). Without
# it the value is b73eaaee71edd75f55405462f265937ca31d3db8f5163beaad1ef12eae2040e9.
STATE_HASH = "8d05e05efb8346ee27aec0e1479cc89733f405fcfeffc502cf9c7375147af44a"


def test_seeded_in_process_run_journals_the_same_bytes(tmp_path: Path, capsys) -> None:
    code = main(["simulate", "--in-process", "--seed", "7", "--members", "20", "--commands", "5000",
                 "--days", "2", "--data-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert hashlib.sha256((tmp_path / "commands.journal").read_bytes()).hexdigest() == JOURNAL_SHA256
    assert f"state hash {STATE_HASH}" in out
    assert event_stream_sha256(tmp_path / "commands.journal") == EVENTS_SHA256


def event_stream_sha256(journal_path: Path) -> str:
    """SHA-256 over every command's canonical event bytes, replayed from the journal alone."""
    from exchange.app import build_core
    from exchange.config import load_config
    from exchange.engine import FileJournal, encode_events
    from exchange.engine.engine import replay

    digest = hashlib.sha256()
    journal = FileJournal(journal_path)
    try:
        for seq, ts_ns, events in replay(build_core(load_config(None)), journal.records()):
            digest.update(encode_events(seq, ts_ns, events))
    finally:
        journal.close()
    return digest.hexdigest()
