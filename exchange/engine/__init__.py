"""The engine: sequencer, journal, snapshots and replay around the deterministic core."""

from exchange.engine.core import CoreState, ExchangeCore, decode_state, encode_state
from exchange.engine.engine import Engine, EventSink, decode_command, encode_command, encode_events, replay
from exchange.engine.journal import FileJournal, FsyncPolicy, Journal, JournalCorrupted, MemoryJournal

__all__ = [
    "CoreState", "Engine", "EventSink", "ExchangeCore", "FileJournal", "FsyncPolicy", "Journal",
    "JournalCorrupted", "MemoryJournal", "decode_command", "decode_state", "encode_command",
    "encode_events", "encode_state", "replay",
]
