"""The engine: sequencer, journal, snapshots and replay around the deterministic core."""

from exchange.engine.core import CoreState, ExchangeCore, decode_state, encode_state
from exchange.engine.engine import (
    Clock, Engine, ProjectionAhead, decode_command, encode_command, encode_events, replay, replay_applied,
)
from exchange.engine.stream import (
    Applied, Projection, ProjectionFailed, ProjectionGroup, ProjectionWorker, SnapshottedProjection,
)
from exchange.engine.journal import FileJournal, FsyncPolicy, Journal, JournalCorrupted, MemoryJournal

__all__ = [
    "Applied", "Clock", "CoreState", "Engine", "Projection", "ProjectionAhead", "ProjectionFailed",
    "ProjectionGroup", "ProjectionWorker", "SnapshottedProjection", "replay_applied", "ExchangeCore", "FileJournal", "FsyncPolicy", "Journal",
    "JournalCorrupted", "MemoryJournal", "decode_command", "decode_state", "encode_command",
    "encode_events", "encode_state", "replay",
]
