"""The composition root: one exchange process's parts wired together.

:class:`Exchange` holds the engine (core, journal, snapshots) and the clearing side: the
trade store, the cash ledger, the registry port and settlement. Every command goes through
:meth:`Exchange.execute`, which journals and applies it and returns its stream record. The
clearing side's SQL projections (the trade store and the cash ledger's mirror of members'
money) follow the stream in one worker thread, off the caller's path; they see a record only
once the journal has made it durable (:meth:`Exchange.flush`). Other projections, such as the
gateway's views, are handed in by whoever composes the exchange (``views``). Recovery replays
the journal from the lowest position any projection needs, so a restart after a crash
finishes what the dead process had journalled but not yet stored.

The clearing house's day: :meth:`start_day` opens the trading day and loads each member's
settled holdings from the registry; :meth:`end_day` closes it (the core reports each
member's closing position) and writes the day's record; :meth:`settle` settles it.

On disk (``Exchange.open``), under the data directory: ``commands.journal`` and
``snapshots/`` (the engine), ``clearing.db`` (trades, closing positions, settlement
progress and the cash ledger: SQLite unless a database URL is given), ``registry.db`` (the
reference registry, unless a registry is handed in) and ``statements/``.

Files at rest are the service account's alone (issue 10, finding 4). The commands that run
the exchange (``exchange simulate``, ``settle`` and ``serve``) call :func:`keep_files_private`
first: umask 077, so everything the process creates (the journal, the SQLite databases and
their side files, snapshots, statements) is 0600 in 0700 directories; the data directory is
created 0700. A data directory that already exists keeps its mode, but ``exchange serve``
prints one warning line at start-up for it and for each file or directory in it that
group or others may read, write or enter (:func:`warn_about_shared_paths`). A warning, not
a refusal: a directory shared on purpose (a backup group, say) is the operator's call, and
the secrets themselves (gateway secret, tokens, credentials) are written 0600 regardless.
"""

from __future__ import annotations

import os
import stat
import sys
import time
from pathlib import Path
from collections.abc import Iterable, Sequence
from typing import TextIO

from exchange import files

from exchange.clearing.funds import FundsMirror
from exchange.clearing.ledger import CashLedger
from exchange.clearing.settlement import Settlement, SettlementReport
from exchange.clearing.start_of_day import load_holdings_commands
from exchange.clearing.trades import TradeStore
from exchange.config import Config
from exchange.engine import (
    Applied, Clock, Engine, ExchangeCore, FileJournal, FsyncPolicy, Projection, ProjectionGroup, ProjectionWorker,
)
from exchange.model import EndDay, StartDay
from exchange.model.commands import Command
from exchange.model.events import Event
from registry_adapter.port import Registry
from registry_adapter.sql import SqlRegistry


class Clearing:
    """The clearing side: trade store, cash ledger, registry and settlement."""

    def __init__(self, store: TradeStore, ledger: CashLedger, registry: Registry, statements_dir: Path | None) -> None:
        self.store, self.ledger, self.registry = store, ledger, registry
        self.owned: list[SqlRegistry] = []  # what close() must close besides the store (a registry it opened)
        self.settlement = Settlement(store, ledger, registry, statements_dir)
        self.funds = FundsMirror(ledger)

    @classmethod
    def open(cls, url: str, registry: Registry, statements_dir: Path | None) -> Clearing:
        store = TradeStore(url)
        ledger = CashLedger(store.engine)
        clearing = cls(store, ledger, registry, statements_dir)
        store.create_schema()
        ledger.create_schema()
        clearing.funds.create_schema()
        clearing.settlement.create_schema()
        return clearing

    def projection(self) -> ProjectionGroup:
        """The clearing stores as one projection of the stream (they share one database)."""
        return ProjectionGroup("clearing", [self.store, self.funds])

    def close(self) -> None:
        self.store.engine.dispose()
        for resource in self.owned:
            resource.close()


class Exchange:
    def __init__(self, engine: Engine, clearing: Clearing | None = None, workers: list[ProjectionWorker] | None = None) -> None:
        self.engine = engine
        self.clearing = clearing
        self.workers = workers or []

    @classmethod
    def open(
        cls, config: Config, data_dir: Path, clock: Clock, *, clearing_url: str | None = None, registry: Registry | None = None,
        views: Sequence[Projection] = (),
    ) -> Exchange:
        """Recover the exchange from ``data_dir`` (start-up and crash recovery are one path)."""
        files.make_private_dir(data_dir)
        owned: list[SqlRegistry] = []
        if registry is None:
            registry = SqlRegistry(f"sqlite:///{data_dir / 'registry.db'}")
            registry.create_schema()
            owned.append(registry)
        clearing = Clearing.open(clearing_url or f"sqlite:///{data_dir / 'clearing.db'}", registry, data_dir / "statements")
        clearing.owned = owned
        worker = ProjectionWorker(clearing.projection(), time.monotonic_ns)
        try:
            engine = open_engine(config, data_dir, clock, projections=[worker, *views])
        except BaseException:
            worker.close()
            clearing.close()
            raise
        return cls(engine, clearing, [worker])

    @property
    def core(self) -> ExchangeCore:
        return self.engine.core

    @property
    def registry(self) -> Registry | None:
        return self.clearing.registry if self.clearing else None

    def execute(self, command: Command) -> Applied:
        return self.engine.execute(command)

    def start_day(self, trading_day: str, registry: Registry | None = None) -> list[Applied]:
        """Open ``trading_day`` and load every member's settled holdings from the registry,
        so the day trades on what the registry holds after the last settlement."""
        records = [self.execute(StartDay(trading_day))]
        source = registry or self.registry
        if source is not None and self.core.trading_day == trading_day:
            members = list(self.core.risk.accounts)
            for command in load_holdings_commands(source, members, self.core.books):
                records.append(self.execute(command))
        return records

    def end_day(self) -> Applied:
        applied = self.execute(EndDay())
        self.flush()
        return applied

    def settle(self, trading_day: str) -> SettlementReport:
        assert self.clearing is not None, "settlement needs the clearing side"
        self.sync_stores()
        return self.clearing.settlement.settle(trading_day)

    def flush(self) -> list[Applied]:
        """Make the journal durable and hand what it now covers to the projections."""
        return self.engine.flush()

    def sync_stores(self) -> None:
        """Flush, and wait until every store has written everything (before reading them)."""
        self.engine.flush_projections()

    def close(self) -> None:
        self.engine.close()
        for worker in self.workers:
            worker.close()
        if self.clearing is not None:
            self.clearing.close()


def events_of(records: Iterable[Applied]) -> list[Event]:
    """The events of several records, in order."""
    return [event for applied in records for event in applied.events]


def build_core(config: Config) -> ExchangeCore:
    return ExchangeCore(config.listed_instruments(), config.market.stp, config.risk.policy(), config.calendar.schedule())


def open_engine(config: Config, data_dir: Path, clock: Clock, projections: Sequence[Projection] = ()) -> Engine:
    """Recover the engine from the data directory's snapshots and journal (start-up path)."""
    files.make_private_dir(data_dir)
    journal = FileJournal(
        data_dir / "commands.journal",
        fsync=FsyncPolicy[config.engine.fsync.upper()],
        batch_records=config.engine.fsync_batch_records,
    )
    if journal.torn_tail_bytes:
        print(f"journal: cut a torn last record of {journal.torn_tail_bytes} bytes", file=sys.stderr)
    return Engine.recover(
        build_core(config), journal, clock, data_dir / "snapshots", projections=projections,
        snapshot_every=config.engine.snapshot_every_commands,
        snapshots_kept=config.engine.snapshots_kept,
        gc_freeze_every=config.engine.gc_freeze_every_commands or None,
    )


# -- files at rest -------------------------------------------------------------------------------

PRIVATE_UMASK = 0o077
SHARED_WARNINGS_SHOWN = 10  # past that, one line counts the rest


def keep_files_private() -> int:
    """From now on this process creates files and directories for its owner only; the
    previous umask (for a caller in a longer-lived process to put back)."""
    return os.umask(PRIVATE_UMASK)


def shared_paths(data_dir: Path) -> list[tuple[Path, int]]:
    """The data directory and each file or directory in it that group or others may use, with
    its permission bits; symbolic links are not followed (their targets are not ours)."""
    if not data_dir.is_dir():
        return []
    found = []
    for root, directories, names in os.walk(data_dir):
        directories.sort()
        for path in [Path(root), *(Path(root, name) for name in sorted(names))]:
            mode = path.lstat().st_mode
            if not stat.S_ISLNK(mode) and mode & 0o077:
                found.append((path, stat.S_IMODE(mode)))
    return found


def warn_about_shared_paths(data_dir: Path, out: TextIO | None = None) -> int:
    """One warning line per shared path (at most :data:`SHARED_WARNINGS_SHOWN`, then a count);
    how many were found."""
    out = out or sys.stderr
    found = shared_paths(data_dir)
    for path, mode in found[:SHARED_WARNINGS_SHOWN]:
        kind, fix = ("directory", "700") if path.is_dir() else ("file", "600")
        print(f"warning: {kind} {path} is open to group or others (mode {mode:04o}); "
              f"the data directory should be private to the service account (chmod {fix} {path})", file=out)
    if len(found) > SHARED_WARNINGS_SHOWN:
        print(f"warning: and {len(found) - SHARED_WARNINGS_SHOWN} more paths under {data_dir} open to group or others",
              file=out)
    return len(found)
