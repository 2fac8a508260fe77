"""The engine with its journal: commands/s through ``Engine.execute`` on the standard workload.

engine.journal                 file journal, no fsync (the OS writes when it likes)
engine.journal_fsync_batched   file journal, fsync every 1,000 commands and at the end
engine.replay                  recovery speed: the same journal replayed into a fresh core

Each run builds the engine on a fresh journal in a temporary directory, executes the
normal shape's prefill (not measured), then times the 200,000 workload commands and a final
flush. The workload's order ids become the engine's (an order's id is the sequence number of
the command that submitted it), remapped once before timing. ``book.normal`` in the same run
is the baseline: the difference is what sequencing and journalling cost.
"""

from __future__ import annotations

import gc
import tempfile
import time
from pathlib import Path

from bench.book_bench import workload
from bench.registry import Context, register
from bench.workload import INSTRUMENT, TRADING_DAY, prefill_commands
from exchange.engine import Engine, ExchangeCore, FileJournal, FsyncPolicy
from exchange.engine.engine import replay
from exchange.model import CancelOrder, SelfTradePolicy, StartDay, SubmitOrder

FSYNC_BATCH = 1_000


def engine_commands(ctx: Context) -> tuple[list, list]:
    """(prefill, measured) command lists with order ids remapped to engine sequence numbers."""
    key = ("engine-commands",)
    if key in ctx.cache:
        return ctx.cache[key]
    wl = workload(ctx, "normal")
    seq = 1  # StartDay is sequence number 1
    engine_id: dict[int, int] = {}
    prefill: list = [StartDay(TRADING_DAY)]
    for order_id, command in prefill_commands("normal", wl.resting, wl.seed, wl.stp_free):
        seq += 1
        engine_id[order_id] = seq
        prefill.append(command)
    measured: list = []
    for order_id, command in wl.ops:
        seq += 1
        if isinstance(command, SubmitOrder):
            engine_id[order_id] = seq
            measured.append(command)
        else:
            measured.append(CancelOrder(command.member_id, command.instrument, engine_id[command.order_id]))
    ctx.cache[key] = prefill, measured
    return prefill, measured


def run_engine(directory: Path, prefill: list, measured: list, fsync: FsyncPolicy) -> float:
    """Commands per second of one run."""
    core = ExchangeCore([INSTRUMENT], SelfTradePolicy.CANCEL_NEWEST)
    journal = FileJournal(directory / "commands.journal", fsync=fsync, batch_records=FSYNC_BATCH)
    engine = Engine(core, journal, clock=time.time_ns)
    execute = engine.execute
    for command in prefill:
        execute(command)
    engine.flush()
    gc.collect()
    gc.freeze()
    started = time.perf_counter_ns()
    for command in measured:
        execute(command)
    engine.flush()
    elapsed = time.perf_counter_ns() - started
    engine.close()
    gc.unfreeze()
    return len(measured) / elapsed * 1e9


def journal_bench(ctx: Context, bench: str, fsync: FsyncPolicy) -> None:
    prefill, measured = engine_commands(ctx)
    samples = []
    for _ in range(ctx.runs(5)):
        with tempfile.TemporaryDirectory(prefix="bench-engine-") as scratch:
            samples.append(run_engine(Path(scratch), prefill, measured, fsync))
    ctx.note(f"{bench} commands/s per run: {', '.join(f'{x:,.0f}' for x in samples)}")
    ctx.report_median(bench, "ops_per_s", samples, "ops/s", digits=0)


@register("engine.journal", "Engine.execute with a file journal, no fsync")
def engine_journal(ctx: Context) -> None:
    journal_bench(ctx, "engine.journal", FsyncPolicy.NEVER)


@register("engine.journal_fsync_batched", "Engine.execute with a file journal, fsync every 1,000 commands")
def engine_journal_fsync_batched(ctx: Context) -> None:
    journal_bench(ctx, "engine.journal_fsync_batched", FsyncPolicy.BATCHED)


@register("engine.replay", "recovery: replaying a journal into a fresh core")
def engine_replay(ctx: Context) -> None:
    prefill, measured = engine_commands(ctx)
    samples = []
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as scratch:
        run_engine(Path(scratch), prefill, measured, FsyncPolicy.NEVER)
        path = Path(scratch) / "commands.journal"
        for _ in range(ctx.runs(3)):
            core = ExchangeCore([INSTRUMENT], SelfTradePolicy.CANCEL_NEWEST)
            journal = FileJournal(path)
            started = time.perf_counter_ns()
            count = sum(1 for _ in replay(core, journal.records()))
            samples.append(count / (time.perf_counter_ns() - started) * 1e9)
            journal.close()
    ctx.report_median("engine.replay", "ops_per_s", samples, "ops/s", digits=0)
