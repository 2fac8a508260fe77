"""The journal: what is appended comes back verified, a torn tail is cut and reported, and a
damaged byte anywhere is refused, never applied and never truncated away."""

from __future__ import annotations

import hashlib
import itertools
import os
import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.engine.journal import (
    FILE_HEADER_SIZE,
    FileJournal,
    FsyncPolicy,
    Journal,
    JournalCorrupted,
    JournalError,
    JournalRecord,
    MemoryJournal,
    scan,
)

TS = 1_700_000_000_000_000_000


def payload(seq: int, size: int = 60) -> bytes:
    return bytes((seq * 7 + i) % 256 for i in range(size))


def fill(journal, count: int, first: int = 1, size: int = 60) -> list[tuple[int, int, bytes]]:
    written = []
    for seq in range(first, first + count):
        journal.append(seq, TS + seq, payload(seq, size))
        written.append((seq, TS + seq, payload(seq, size)))
    return written


def contents(records) -> list[tuple[int, int, bytes]]:
    return [(r.seq, r.ts_ns, r.payload) for r in records]


def encode(records, base_seq: int = 0, base_chain: bytes = bytes(16)) -> bytes:
    """The documented format, written out independently of the module."""
    fields = struct.pack("<8sIQ16s", b"\x89CXJ\r\n\x1a\n", 1, base_seq, base_chain)
    link = zlib.crc32(fields)
    out = bytearray(fields + struct.pack("<I", link))
    for seq, ts_ns, body in records:
        head = struct.pack("<IQQ", len(body), seq, ts_ns)
        record = head + struct.pack("<I", zlib.crc32(head)) + body
        link = zlib.crc32(record, link)
        out += record + struct.pack("<I", link)
    return bytes(out)


@pytest.fixture
def no_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    """fsync is tested on its own; elsewhere it only makes loops over hundreds of files slow."""
    monkeypatch.setattr(os, "fsync", lambda fd: None)


# ------------------------------------------------------------------ round trip and format


@pytest.mark.parametrize("kind", ["memory", "file"])
def test_round_trip(kind: str, tmp_path: Path) -> None:
    journal = MemoryJournal() if kind == "memory" else FileJournal(tmp_path / "j")
    sizes = [0, 1, 60, 5000, 70_000, 3]
    written = [(seq, TS + seq, payload(seq, size)) for seq, size in enumerate(sizes, 1)]
    for record in written:
        journal.append(*record)
    assert journal.last_seq == len(sizes)
    records = list(journal.records())
    assert contents(records) == written
    assert records[0].position == FILE_HEADER_SIZE
    assert all(b.position == a.position + 28 + len(a.payload) for a, b in itertools.pairwise(records))
    journal.close()


def test_the_bytes_follow_the_documented_format_and_the_chain_is_their_hash() -> None:
    journal = MemoryJournal()
    written = fill(journal, 5)
    journal.flush()
    data = journal.getvalue()
    assert data == encode(written)
    assert journal.chain_hash == hashlib.blake2b(data, digest_size=16).digest()
    assert scan(data) == (5, journal.chain_hash, len(data), 0, 0)


def test_the_chain_hash_covers_buffered_records_too() -> None:
    journal = MemoryJournal()
    fill(journal, 3)
    assert journal.getvalue() == encode([])  # nothing handed on yet
    assert journal.chain_hash == hashlib.blake2b(encode(fill(MemoryJournal(), 3)), digest_size=16).digest()


def test_an_empty_journal_has_the_hash_of_its_header(tmp_path: Path) -> None:
    journal = FileJournal(tmp_path / "j")
    assert journal.last_seq == 0
    assert journal.chain_hash == hashlib.blake2b(encode([]), digest_size=16).digest()
    assert list(journal.records()) == []
    journal.close()
    assert (tmp_path / "j").read_bytes() == encode([])


def test_both_journals_implement_the_protocol(tmp_path: Path) -> None:
    file_journal = FileJournal(tmp_path / "j")
    assert isinstance(file_journal, Journal) and isinstance(MemoryJournal(), Journal)
    file_journal.close()


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 300), max_size=60),
    flush_every=st.integers(1, 20),
    batch_records=st.integers(1, 10),
    buffer_bytes=st.integers(1, 2000),
    policy=st.sampled_from(FsyncPolicy),
)
def test_memory_and_file_journals_write_identical_bytes(
    tmp_path_factory: pytest.TempPathFactory, sizes, flush_every, batch_records, buffer_bytes, policy
) -> None:
    path = tmp_path_factory.mktemp("same") / "j"
    on_disk = FileJournal(path, policy, batch_records, buffer_bytes)
    in_memory = MemoryJournal(batch_records, buffer_bytes)
    for seq, size in enumerate(sizes, 1):
        for journal in (on_disk, in_memory):
            journal.append(seq, TS + seq, payload(seq, size))
        if seq % flush_every == 0:
            on_disk.flush()
            in_memory.flush()
            assert path.read_bytes() == in_memory.getvalue()
    assert on_disk.chain_hash == in_memory.chain_hash
    on_disk.close()
    in_memory.close()
    assert path.read_bytes() == in_memory.getvalue() == encode((s, TS + s, payload(s, n)) for s, n in enumerate(sizes, 1))


# ------------------------------------------------------------------ reopen and continue


def test_reopen_continues_the_sequence_and_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "j"
    journal = FileJournal(path)
    written = fill(journal, 5)
    chain = journal.chain_hash
    journal.close()

    journal = FileJournal(path)
    assert (journal.last_seq, journal.chain_hash, journal.torn_tail_bytes) == (5, chain, 0)
    written += fill(journal, 5, first=6)
    journal.close()

    journal = FileJournal(path)
    assert contents(journal.records()) == written
    assert path.read_bytes() == encode(written)
    journal.close()


def test_memory_journal_opens_existing_bytes_and_continues() -> None:
    first = MemoryJournal()
    written = fill(first, 4)
    first.close()
    second = MemoryJournal(data=first.getvalue())
    assert second.last_seq == 4 and second.chain_hash == first.chain_hash
    written += fill(second, 2, first=5)
    assert contents(second.records()) == written


def test_a_journal_can_start_after_a_base_seq() -> None:
    base_chain = bytes(range(16))
    journal = MemoryJournal(base_seq=100, base_chain=base_chain)
    with pytest.raises(AssertionError):
        journal.append(1, TS, b"x")
    written = fill(journal, 3, first=101)
    journal.flush()
    assert journal.getvalue() == encode(written, base_seq=100, base_chain=base_chain)
    assert scan(journal.getvalue()).base_seq == 100
    assert contents(journal.records(after_seq=100)) == written
    with pytest.raises(JournalError, match="starts after seq 100"):
        list(journal.records(after_seq=99))


def test_a_second_writer_is_refused_until_the_first_closes(tmp_path: Path) -> None:
    first = FileJournal(tmp_path / "j")
    with pytest.raises(JournalError, match="open for writing"):
        FileJournal(tmp_path / "j")
    first.close()
    FileJournal(tmp_path / "j").close()


def test_a_closed_journal_refuses_work(tmp_path: Path) -> None:
    journal = FileJournal(tmp_path / "j")
    journal.close()
    journal.close()  # twice is fine
    with pytest.raises(JournalError, match="closed"):
        journal.flush()


# ------------------------------------------------------------------ sequence numbers


def test_append_refuses_a_gap_or_a_repeat() -> None:
    journal = MemoryJournal()
    fill(journal, 2)
    for wrong in (4, 2, 0):
        with pytest.raises(AssertionError):
            journal.append(wrong, TS, b"x")
    journal.append(3, TS, b"x")
    assert [r.seq for r in journal.records()] == [1, 2, 3]


def test_a_refused_append_leaves_the_journal_as_it_was() -> None:
    journal = MemoryJournal()
    written = fill(journal, 2)
    with pytest.raises(TypeError):
        journal.append(3, TS, "not bytes")  # type: ignore[arg-type]  # deliberately not bytes: refused
    with pytest.raises(struct.error):
        journal.append(3, -1, b"negative time")
    written += fill(journal, 1, first=3)
    journal.flush()
    assert journal.getvalue() == encode(written)


@pytest.mark.parametrize(
    ("seqs", "reason", "last_good"),
    [
        ([1, 2, 4], "sequence gap: seq 4 after 2", 2),
        ([1, 2, 2], "sequence repeat: seq 2 after 2", 2),
        ([2], "sequence gap: seq 2 after 0", 0),
    ],
)
def test_a_file_with_a_sequence_gap_or_repeat_is_refused(tmp_path: Path, seqs, reason, last_good) -> None:
    data = encode((seq, TS, payload(seq)) for seq in seqs)
    bad_position = FILE_HEADER_SIZE + (len(seqs) - 1) * (28 + 60)
    with pytest.raises(JournalCorrupted) as caught:
        scan(data)
    assert (caught.value.reason, caught.value.position, caught.value.seq) == (reason, bad_position, last_good)
    (tmp_path / "j").write_bytes(data)
    with pytest.raises(JournalCorrupted, match="sequence"):
        FileJournal(tmp_path / "j")
    assert (tmp_path / "j").read_bytes() == data


# ------------------------------------------------------------------ records(after_seq)


def test_records_after_seq_skips_exactly_the_records_up_to_it() -> None:
    journal = MemoryJournal(batch_records=3)
    written = fill(journal, 10)
    for after in range(0, 13):
        assert contents(journal.records(after_seq=after)) == written[after:]


def test_expect_chain_ties_a_snapshot_to_this_history() -> None:
    journal = MemoryJournal()
    chains = {0: journal.chain_hash}
    for seq in range(1, 8):
        fill(journal, 1, first=seq)
        chains[seq] = journal.chain_hash
    for after, chain in chains.items():
        assert [r.seq for r in journal.records(after_seq=after, expect_chain=chain)] == list(range(after + 1, 8))
    with pytest.raises(JournalError, match="chain mismatch at seq 3"):
        list(journal.records(after_seq=3, expect_chain=chains[4]))
    with pytest.raises(JournalError, match="chain mismatch at seq 0"):
        list(journal.records(after_seq=0, expect_chain=bytes(16)))
    with pytest.raises(JournalError, match="ends at seq 7, before seq 9"):
        list(journal.records(after_seq=9, expect_chain=chains[7]))


def test_records_of_another_history_are_refused_by_expect_chain() -> None:
    ours, theirs = MemoryJournal(), MemoryJournal()
    fill(ours, 5)
    for seq in range(1, 6):
        theirs.append(seq, TS + seq, b"something else")
    with pytest.raises(JournalError, match="chain mismatch"):
        list(ours.records(after_seq=5, expect_chain=theirs.chain_hash))


# ------------------------------------------------------------------ torn tail


def write_journal(path: Path, count: int) -> list[tuple[int, int, bytes]]:
    journal = FileJournal(path, FsyncPolicy.NEVER)
    written = fill(journal, count)
    journal.close()
    return written


def test_a_torn_tail_at_every_offset_of_the_last_record_is_cut_reported_and_continued(
    tmp_path: Path, no_fsync: None
) -> None:
    whole = tmp_path / "whole"
    written = write_journal(whole, 4)
    data = whole.read_bytes()
    last = list(scan_records(data))[-1].position
    path = tmp_path / "j"
    for cut in range(last, len(data)):
        path.write_bytes(data[:cut])
        found = scan(path)
        assert (found.last_seq, found.valid_length, found.torn_tail_bytes) == (3, last, cut - last)
        assert found.chain_hash == scan(data[:last]).chain_hash
        assert MemoryJournal(data=data[:cut]).torn_tail_bytes == cut - last

        journal = FileJournal(path)
        assert (journal.torn_tail_bytes, journal.last_seq) == (cut - last, 3)
        assert path.stat().st_size == last, "the torn bytes are cut off the file"
        again = fill(journal, 2, first=4, size=9)
        journal.close()

        journal = FileJournal(path)
        assert journal.torn_tail_bytes == 0
        assert contents(journal.records()) == written[:3] + again
        journal.close()


def test_a_torn_file_header_is_damage_not_a_torn_tail(tmp_path: Path) -> None:
    """The header is written atomically when the file is made, so a short one is damage."""
    data = encode([])
    for cut in range(FILE_HEADER_SIZE):
        with pytest.raises(JournalCorrupted, match="shorter than its 40-byte header") as caught:
            scan(data[:cut])
        assert caught.value.position == 0
    (tmp_path / "j").write_bytes(b"")
    with pytest.raises(JournalCorrupted):
        FileJournal(tmp_path / "j")


def scan_records(data: bytes) -> list[JournalRecord]:
    return list(MemoryJournal(data=data).records())


# ------------------------------------------------------------------ damage


def unit_start(data: bytes, index: int) -> int:
    """Where the damaged unit containing byte `index` begins: the file header or a record."""
    if index < FILE_HEADER_SIZE:
        return 0
    return max(r.position for r in scan_records(data) if r.position <= index)


@pytest.mark.parametrize("one_record_per_write", [True, False])
def test_every_flipped_byte_is_refused_with_its_position(
    tmp_path: Path, no_fsync: None, one_record_per_write: bool
) -> None:
    path = tmp_path / "j"
    journal = FileJournal(path, FsyncPolicy.EVERY_COMMAND if one_record_per_write else FsyncPolicy.NEVER)
    fill(journal, 5, size=25)
    journal.close()
    data = path.read_bytes()
    for index in range(len(data)):
        expected = unit_start(data, index)
        for mask in (0x01, 0x80, 0xFF):
            flipped = bytearray(data)
            flipped[index] ^= mask
            damaged = bytes(flipped)
            with pytest.raises(JournalCorrupted) as caught:
                scan(damaged)
            assert caught.value.position == expected, (index, mask, caught.value)
            with pytest.raises(JournalCorrupted):
                MemoryJournal(data=damaged)
            path.write_bytes(damaged)
            with pytest.raises(JournalCorrupted):
                FileJournal(path)
            assert path.read_bytes() == damaged, "a refused file is left as it was"


def test_damage_under_an_open_journal_is_refused_by_records(tmp_path: Path) -> None:
    path = tmp_path / "j"
    journal = FileJournal(path, FsyncPolicy.NEVER)
    fill(journal, 5, size=25)
    journal.flush()
    data = path.read_bytes()
    fd = os.open(path, os.O_WRONLY)
    try:
        for index in range(len(data)):
            os.pwrite(fd, bytes([data[index] ^ 0x10]), index)
            with pytest.raises(JournalCorrupted) as caught:
                list(journal.records())
            assert caught.value.position == unit_start(data, index)
            os.pwrite(fd, data[index : index + 1], index)
    finally:
        os.close(fd)
    assert len(list(journal.records())) == 5
    journal.close()


def test_the_error_names_what_is_wrong() -> None:
    journal = MemoryJournal()
    fill(journal, 2, size=10)
    journal.flush()
    data = journal.getvalue()
    second = FILE_HEADER_SIZE + 38

    def reason(index: int) -> tuple[str, int]:
        damaged = bytearray(data)
        damaged[index] ^= 0x04
        with pytest.raises(JournalCorrupted) as caught:
            scan(bytes(damaged))
        return caught.value.reason, caught.value.seq

    assert reason(0) == ("bad magic: not a journal file", 0)
    assert reason(9) == ("bad file header checksum", 0)
    assert reason(second) == ("bad record header checksum", 1)  # its length field
    assert reason(second + 24)[0].startswith("bad body checksum")  # its payload
    assert reason(len(data) - 1)[0].startswith("bad body checksum")  # its link


def test_another_file_is_not_a_journal(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_bytes(b"these are not the bytes you are looking for" * 3)
    with pytest.raises(JournalCorrupted, match="bad magic") as caught:
        FileJournal(tmp_path / "notes.txt")
    assert caught.value.position == 0


@settings(max_examples=200, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 200), min_size=1, max_size=30),
    where=st.floats(0, 1, exclude_max=True),
    mask=st.integers(1, 255),
)
def test_any_damaged_byte_in_any_journal_is_refused(sizes, where, mask) -> None:
    journal = MemoryJournal(batch_records=7)
    for seq, size in enumerate(sizes, 1):
        journal.append(seq, TS + seq, payload(seq, size))
    journal.flush()
    data = bytearray(journal.getvalue())
    index = int(where * len(data))
    data[index] ^= mask
    with pytest.raises(JournalCorrupted) as caught:
        scan(bytes(data))
    assert caught.value.position <= index


# ------------------------------------------------------------------ fsync and buffering


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    monkeypatch.setattr(os, "fsync", calls.append)
    return calls


@pytest.mark.parametrize(
    ("policy", "after_appends", "after_flush", "after_close"),
    [(FsyncPolicy.NEVER, 0, 0, 0), (FsyncPolicy.BATCHED, 2, 3, 4), (FsyncPolicy.EVERY_COMMAND, 2500, 2500, 2501)],
)
def test_fsync_policies(tmp_path: Path, fsyncs: list[int], policy, after_appends, after_flush, after_close) -> None:
    journal = FileJournal(tmp_path / "j", policy, batch_records=1000)
    fsyncs.clear()  # creating the file fsyncs it and its directory
    fill(journal, 2500)
    assert len(fsyncs) == after_appends
    journal.flush()
    journal.flush()  # nothing new: no second fsync
    assert len(fsyncs) == after_flush
    fill(journal, 1, first=2501)
    journal.close()
    assert len(fsyncs) == after_close
    assert scan(tmp_path / "j").last_seq == 2501


def test_a_full_buffer_is_handed_to_the_os_without_fsync(tmp_path: Path, fsyncs: list[int]) -> None:
    path = tmp_path / "j"
    journal = FileJournal(path, FsyncPolicy.BATCHED, batch_records=1000, buffer_bytes=1000)
    fsyncs.clear()
    fill(journal, 30)  # 30 x 88 bytes
    assert path.stat().st_size > 2000
    assert fsyncs == []
    fill(journal, 970, first=31)
    assert len(fsyncs) == 1, "the batch still counts appends, not writes"
    journal.close()


def test_a_failed_write_refuses_everything_after_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    journal = FileJournal(tmp_path / "j")
    fill(journal, 3)

    def disk_full(fd: int, data) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", disk_full)
    with pytest.raises(OSError):
        journal.flush()
    monkeypatch.undo()
    with pytest.raises(JournalError, match="restart from the journal"):
        journal.flush()
    with pytest.raises(JournalError):
        journal.close()
    assert scan(tmp_path / "j").last_seq == 0
