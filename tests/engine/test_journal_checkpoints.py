"""Reading a journal from a snapshot's position resumes at a checkpoint taken when the file
was opened, instead of verifying the whole file a second time; it reads the same records and
checks the same chain."""

from __future__ import annotations

from pathlib import Path

import pytest

from exchange.engine import FileJournal, FsyncPolicy
from exchange.engine import journal as journal_module
from exchange.engine.journal import JournalError


def write(path: Path, count: int) -> list[bytes]:
    journal = FileJournal(path, fsync=FsyncPolicy.NEVER)
    chains = [journal.chain_hash]
    for seq in range(1, count + 1):
        journal.append(seq, seq * 10, f"command {seq}".encode())
        chains.append(journal.chain_hash)
    journal.close()
    return chains


def test_reading_after_a_checkpoint_gives_the_same_records_and_checks_the_chain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "j"
    chains = write(path, 1_000)
    plain = FileJournal(path)
    expected = {after: [(r.seq, r.ts_ns, bytes(r.payload)) for r in plain.records(after, chains[after])] for after in (0, 63, 64, 65, 500, 1_000)}
    plain.close()
    monkeypatch.setattr(journal_module, "CHECKPOINT_EVERY", 64)
    journal = FileJournal(path)
    assert [c.seq for c in journal._checkpoints] == list(range(64, 1_001, 64))
    for after, records in expected.items():
        assert [(r.seq, r.ts_ns, bytes(r.payload)) for r in journal.records(after, chains[after])] == records
        with pytest.raises(JournalError, match="chain mismatch"):
            list(journal.records(after, chains[after - 1] if after else b"\0" * 16))
    journal.close()


def test_a_journal_grown_after_opening_reads_to_its_end_from_a_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(journal_module, "CHECKPOINT_EVERY", 10)
    path = tmp_path / "j"
    write(path, 35)
    journal = FileJournal(path, fsync=FsyncPolicy.NEVER)
    for seq in range(36, 50):
        journal.append(seq, seq, b"later")
    assert [r.seq for r in journal.records(after_seq=33)] == list(range(34, 50))
    journal.close()
