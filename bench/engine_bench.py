"""The engine with its journal: commands/s through ``Engine.execute`` on the standard workload.

engine.journal                 sequencing, file journal (no fsync) and the book; the risk gate
                               replaced by a pass-through, so this is the trading core's cost
engine.journal_fsync_batched   the same, fsync every 1,000 commands and at the end
engine.risk                    the real engine: risk checks and account booking in the path,
                               every member funded; also the risk cost per command (the
                               difference with engine.journal measured in the same run)
engine.replay                  recovery speed: the same journal replayed into a fresh core

Members are registered, funded and given holdings before anything is timed; their risk
limits are set wide open (rate, open orders, position) so that the workload, which sends
orders far faster than any member may, measures the checks rather than refusals.

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
from exchange.model import (
    CancelOrder,
    Deposit,
    LoadHolding,
    MemberKind,
    RegisterMember,
    SelfTradePolicy,
    SetTradingPhase,
    StartDay,
    SubmitOrder,
    TradingPhase,
)
from exchange.risk import RiskGate, RiskLimits, RiskPolicy

FSYNC_BATCH = 1_000
OPEN_LIMITS = RiskLimits(max_order_value_fen=10**15, orders_per_second=10**9, order_burst=10**9, max_open_orders=10**9)
POLICY = RiskPolicy(position_limit_t=10**12, limits=OPEN_LIMITS)


class PassThroughGate(RiskGate):
    """Approves everything and books nothing: the engine without risk, for comparison."""

    def check_submit(self, ts_ns, cmd, book):
        return None

    def check_amend(self, ts_ns, cmd, before, book):
        return None

    def apply(self, events, amended=None):
        return []


def engine_commands(ctx: Context) -> tuple[list, list]:
    """(prefill, measured) command lists with order ids remapped to engine sequence numbers."""
    key = ("engine-commands",)
    if key in ctx.cache:
        return ctx.cache[key]
    wl = workload(ctx, "normal")
    prefill_orders = list(prefill_commands("normal", wl.resting, wl.seed, wl.stp_free))
    members = sorted({c.member_id for _, c in prefill_orders} | {c.member_id for _, c in wl.ops})
    prefill: list = []
    for member in members:
        prefill += [RegisterMember(member, MemberKind.VOLUNTARY), Deposit(member, 10**14)]
    prefill.append(StartDay(TRADING_DAY))
    prefill += [LoadHolding(member, INSTRUMENT.symbol, 10**9) for member in members]
    prefill.append(SetTradingPhase(TradingPhase.CONTINUOUS))
    seq = len(prefill)  # an order's id is the sequence number of its command
    engine_id: dict[int, int] = {}
    for order_id, command in prefill_orders:
        seq += 1
        engine_id[order_id] = seq
        prefill.append(command)
    measured: list = []
    for order_id, op in wl.ops:
        seq += 1
        if isinstance(op, SubmitOrder):
            engine_id[order_id] = seq
            measured.append(op)
        else:
            measured.append(CancelOrder(op.member_id, op.instrument, engine_id[op.order_id]))
    ctx.cache[key] = prefill, measured
    return prefill, measured


def run_engine(directory: Path, prefill: list, measured: list, fsync: FsyncPolicy, risk: bool = False) -> float:
    """Commands per second of one run."""
    core = ExchangeCore([INSTRUMENT], SelfTradePolicy.CANCEL_NEWEST, POLICY)
    if not risk:
        core.risk = PassThroughGate(POLICY)
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


def journal_bench(ctx: Context, bench: str, fsync: FsyncPolicy, risk: bool = False) -> list[float]:
    prefill, measured = engine_commands(ctx)
    samples = []
    for _ in range(ctx.runs(5)):
        with tempfile.TemporaryDirectory(prefix="bench-engine-") as scratch:
            samples.append(run_engine(Path(scratch), prefill, measured, fsync, risk))
    ctx.note(f"{bench} commands/s per run: {', '.join(f'{x:,.0f}' for x in samples)}")
    ctx.report_median(bench, "ops_per_s", samples, "ops/s", digits=0)
    return samples


@register("engine.journal", "Engine.execute with a file journal, no fsync")
def engine_journal(ctx: Context) -> None:
    journal_bench(ctx, "engine.journal", FsyncPolicy.NEVER)


@register("engine.journal_fsync_batched", "Engine.execute with a file journal, fsync every 1,000 commands")
def engine_journal_fsync_batched(ctx: Context) -> None:
    journal_bench(ctx, "engine.journal_fsync_batched", FsyncPolicy.BATCHED)


@register("engine.risk", "Engine.execute with the risk gate in the path, every member funded")
def engine_risk(ctx: Context) -> None:
    with_risk = sorted(journal_bench(ctx, "engine.risk", FsyncPolicy.NEVER, risk=True))
    without = sorted(journal_bench(ctx, "engine.risk.baseline", FsyncPolicy.NEVER, risk=False))
    middle = len(with_risk) // 2
    cost_ns = 1e9 / with_risk[middle] - 1e9 / without[middle]
    ctx.report("engine.risk", "risk_cost_ns_per_command", round(cost_ns), "ns", runs=len(with_risk), stat="median")


@register("engine.replay", "recovery: replaying a journal into a fresh core")
def engine_replay(ctx: Context) -> None:
    prefill, measured = engine_commands(ctx)
    samples = []
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as scratch:
        run_engine(Path(scratch), prefill, measured, FsyncPolicy.NEVER, risk=True)
        path = Path(scratch) / "commands.journal"
        for _ in range(ctx.runs(3)):
            core = ExchangeCore([INSTRUMENT], SelfTradePolicy.CANCEL_NEWEST, POLICY)
            journal = FileJournal(path)
            started = time.perf_counter_ns()
            count = sum(1 for _ in replay(core, journal.records()))
            samples.append(count / (time.perf_counter_ns() - started) * 1e9)
            journal.close()
    ctx.report_median("engine.replay", "ops_per_s", samples, "ops/s", digits=0)
