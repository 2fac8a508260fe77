"""Benchmarks of the order book alone (no engine, no journal).

=====================  ==========================================================================
bench                  metrics
=====================  ==========================================================================
book.normal            ops_per_s; latency_p50_us, latency_p99_us, latency_p999_us, latency_max_us,
                       latency_max_stable_us (the slowest operation when each operation counts
                       its fastest run: the book's own worst case without the machine's stalls)
book.deep              the same, on 100,000 resting orders (~500 per level)
book.wide              the same, on ~900 levels a side
book.million           the workload mix on 1,000,000 resting orders: latency_p50_us ..
                       latency_max_us (medians of the runs), latency_worst_us (the largest single
                       operation over all runs), latency_max_stable_us, noise_max_us (the
                       largest gap of an empty timed loop run as long as a pass: the machine's
                       own stalls), gc_full_collect_us (a full gc.collect() with the book
                       alive: the stall of a generation-2 collection), gc_full_collect_frozen_us
                       (the same after gc.freeze(), the engine's policy), rss_bytes_per_order (RSS growth / N while prefilling, in a
                       fresh process), resting_orders
book.bytes_per_order   bytes_per_order: tracemalloc growth while prefilling 100,000 orders / N
book.cancel_depth      cancel_front_p50_us vs cancel_depth100k_p50_us (one level of 100,000+
                       orders), depth_ratio; cancel_book100_p50_us vs cancel_book1m_p50_us
                       (random resting order, book of 100 vs 1,000,000 orders), size_ratio
=====================  ==========================================================================

Throughput and latency come from separate passes over the same operations, each on a freshly
prefilled book: the throughput pass times the whole loop once; the latency pass reads
``perf_counter_ns`` around every operation (which costs ~50-100 ns per read and distorts a
throughput figure). Latency figures include one timer read; the timer's own cost is printed as
a note. Each figure is the median over the runs. The garbage collector is left on, as in
production; ``gc.collect()`` runs before each pass, and the prebuilt workload is frozen out of
the collector's sight (``prefilled``), so that it collects as it would in an engine.

At ``--size small`` the workload is 20,000 operations and one run, and the "million" book holds
100,000 orders (the bench names stay; the ``resting_orders`` metric says what was measured).
"""

from __future__ import annotations

import gc
import os
import random
import statistics
import subprocess
import sys
import time
import tracemalloc
from array import array
from pathlib import Path

import numpy as np

from bench.registry import Context, register
from bench.workload import MID_FEN, SYMBOL, Workload, describe, generate, member_ids, new_book, prefill_commands
from exchange.model.commands import CancelOrder, SubmitOrder
from exchange.model.enums import Side

FULL_OPS = 200_000
SMALL_OPS = 20_000

# The figures the issue asks for on a 2-core machine with CPython 3.11 (shown in the summary).
TARGETS: dict[tuple[str, str], tuple[str, float]] = {
    ("book.normal", "ops_per_s"): (">=", 1_500_000),
    ("book.deep", "ops_per_s"): (">=", 1_000_000),
    ("book.wide", "ops_per_s"): (">=", 1_000_000),
    ("book.million", "latency_max_us"): ("<=", 2_000),
    ("book.million", "latency_worst_us"): ("<=", 2_000),
    ("book.million", "latency_max_stable_us"): ("<=", 2_000),
    # A generation-2 collection stops trading for this long; it is a latency like any other.
    ("book.million", "gc_full_collect_frozen_us"): ("<=", 2_000),
    ("book.bytes_per_order", "bytes_per_order"): ("<=", 300),
    ("engine.journal", "ops_per_s"): (">=", 400_000),
    ("engine.risk", "ops_per_s"): (">=", 300_000),
    ("settle.sqlite", "seconds"): ("<=", 30),
    ("settle.postgres", "seconds"): ("<=", 60),
    ("gateway.8clients", "ops_per_s"): (">=", 50_000),
    ("gateway.8clients", "latency_p99_us"): ("<=", 5_000),
    ("gateway.64clients", "ops_per_s"): (">=", 50_000),
    ("gateway.64clients", "latency_p99_us"): ("<=", 5_000),
}


# -- shared helpers -------------------------------------------------------------------------


def n_ops(ctx: Context) -> int:
    return SMALL_OPS if ctx.small else FULL_OPS


def resting_for(ctx: Context, shape: str) -> int | None:
    """The prefill size; None means the shape's own (only the million book shrinks when small)."""
    return 100_000 if shape == "million" and ctx.small else None


def workload(ctx: Context, shape: str, stp_free: bool = False) -> Workload:
    """Generate (once per run of the suite) the seeded workload of a shape."""
    key = ("workload", shape, stp_free)
    if key not in ctx.cache:
        t0 = time.perf_counter()
        wl = generate(shape, n_ops(ctx), ctx.seed, resting=resting_for(ctx, shape), stp_free=stp_free)
        ctx.note(f"workload {describe(wl)} (generated in {time.perf_counter() - t0:.1f} s)")
        ctx.cache[key] = wl
    return ctx.cache[key]


def prefilled(wl: Workload):
    """A fresh book holding the workload's prefill, with the garbage of earlier runs collected.

    Everything alive before the book is built (the prebuilt workload above all: some 400,000
    GC-tracked commands and tuples) is frozen out of the collector's sight first. Left visible,
    it would make every full collection slower and, by counting as long-lived, put full
    collections off, neither of which a real engine would see. ``bench/run.py`` unfreezes after
    each benchmark.
    """
    gc.collect()
    gc.freeze()
    book = wl.prefilled_book()
    gc.collect()
    return book


def throughput_pass(book, ops) -> int:
    """Run every operation once; return the elapsed nanoseconds for the whole loop."""
    submit = book.submit
    cancel = book.cancel
    clock = time.perf_counter_ns
    t0 = clock()
    for order_id, cmd in ops:
        if order_id:
            submit(order_id, cmd)
        else:
            cancel(cmd)
    return clock() - t0


def latency_pass(book, ops) -> np.ndarray:
    """Run every operation once, timing each one; return the latencies in nanoseconds."""
    submit = book.submit
    cancel = book.cancel
    clock = time.perf_counter_ns
    latencies = array("q", bytes(8 * len(ops)))
    i = 0
    for order_id, cmd in ops:
        if order_id:
            t0 = clock()
            submit(order_id, cmd)
            latencies[i] = clock() - t0
        else:
            t0 = clock()
            cancel(cmd)
            latencies[i] = clock() - t0
        i += 1
    return np.frombuffer(latencies, dtype=np.int64)


def timer_overhead_ns(samples: int = 100_000) -> float:
    """The median cost of one ``perf_counter_ns`` pair around nothing."""
    clock = time.perf_counter_ns
    deltas = array("q", bytes(8 * samples))
    for i in range(samples):
        t0 = clock()
        deltas[i] = clock() - t0
    return float(np.median(np.frombuffer(deltas, dtype=np.int64)))


def latency_stats_us(latencies_ns: np.ndarray) -> dict[str, float]:
    p50, p99, p999 = np.percentile(latencies_ns, [50, 99, 99.9])
    return {
        "latency_p50_us": p50 / 1000,
        "latency_p99_us": p99 / 1000,
        "latency_p999_us": p999 / 1000,
        "latency_max_us": float(latencies_ns.max()) / 1000,
    }


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        resident_pages = int(f.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


# -- throughput and latency per shape ---------------------------------------------------------


def shape_bench(ctx: Context, shape: str) -> None:
    bench = f"book.{shape}"
    wl = workload(ctx, shape)
    ops = wl.ops
    runs = ctx.runs(5)
    if "timer_overhead_ns" not in ctx.cache:
        ctx.cache["timer_overhead_ns"] = timer_overhead_ns()
        ctx.note(f"perf_counter_ns pair costs {ctx.cache['timer_overhead_ns']:.0f} ns (included in latencies)")
    throughput: list[float] = []
    latency: dict[str, list[float]] = {}
    fastest: np.ndarray | None = None  # per operation, the fastest of the runs
    for _ in range(runs):
        book = prefilled(wl)
        elapsed_ns = throughput_pass(book, ops)
        throughput.append(len(ops) * 1e9 / elapsed_ns)
        del book
        book = prefilled(wl)
        latencies = latency_pass(book, ops)
        del book
        for metric, value in latency_stats_us(latencies).items():
            latency.setdefault(metric, []).append(value)
        fastest = latencies if fastest is None else np.minimum(fastest, latencies)
    ctx.note(f"{bench} ops/s per run: {', '.join(f'{x:,.0f}' for x in throughput)}")
    ctx.note(f"{bench} max latency per run (us): {', '.join(f'{x:,.0f}' for x in latency['latency_max_us'])}")
    ctx.report_median(bench, "ops_per_s", throughput, "ops/s", digits=0)
    for metric, values in latency.items():
        ctx.report_median(bench, metric, values, "us")
    assert fastest is not None  # ctx.runs() is at least 1
    report_stable_max(ctx, bench, fastest, runs, ops)


def report_stable_max(ctx: Context, bench: str, fastest: np.ndarray, runs: int, ops) -> None:
    """The slowest operation once each operation is credited with its fastest run.

    The operations are the same in every run, so what the book itself costs recurs at the same
    operation, while a stall of the machine (preemption by another process, an interrupt)
    lands on a random one. With 3+ runs this filters the machine's stalls out of the max.
    """
    i = int(fastest.argmax())
    order_id, cmd = ops[i]
    what = type(cmd).__name__ if not order_id else f"{cmd.order_type.name} {cmd.tif.name} {cmd.side.name} {cmd.qty_t} t"
    ctx.note(f"{bench} slowest operation in every run: #{i} ({what}), {fastest[i] / 1000:,.1f} us at best")
    ctx.report(bench, "latency_max_stable_us", round(float(fastest[i]) / 1000, 2), "us", runs=runs, stat="max of per-op min")


@register("book.normal", "workload mix on a normal book (a few thousand resting orders)")
def book_normal(ctx: Context) -> None:
    shape_bench(ctx, "normal")


@register("book.deep", "workload mix on a deep book (100,000 resting, hundreds per level)")
def book_deep(ctx: Context) -> None:
    shape_bench(ctx, "deep")


@register("book.wide", "workload mix on a wide book (about 900 levels a side)")
def book_wide(ctx: Context) -> None:
    shape_bench(ctx, "wide")


# -- 1,000,000 resting orders ------------------------------------------------------------------


@register("book.million", "latency of the workload mix with 1,000,000 resting orders")
def book_million(ctx: Context) -> None:
    bench = "book.million"
    wl = workload(ctx, "million")
    runs = ctx.runs(3)
    latency: dict[str, list[float]] = {}
    noise: list[float] = []
    fastest: np.ndarray | None = None
    for _ in range(runs):
        book = prefilled(wl)
        started = time.perf_counter_ns()
        latencies = latency_pass(book, wl.ops)
        elapsed_ns = time.perf_counter_ns() - started
        del book
        for metric, value in latency_stats_us(latencies).items():
            latency.setdefault(metric, []).append(value)
        fastest = latencies if fastest is None else np.minimum(fastest, latencies)
        noise.append(noise_max_us(elapsed_ns))
    book = prefilled(wl)  # what a full collection costs with this book alive (and nothing else)
    full_gc = time_full_collections()
    gc.freeze()  # the engine's policy (exchange/engine/engine.py): the book frozen out of sight
    frozen_gc = time_full_collections()
    gc.unfreeze()
    del book
    worst = max(latency["latency_max_us"])
    ctx.note(f"{bench} max latency per run (us): {', '.join(f'{x:,.0f}' for x in latency['latency_max_us'])}")
    ctx.note(f"{bench} max gap of an empty timed loop run as long as each pass (us): "
             f"{', '.join(f'{x:,.0f}' for x in noise)} (the machine, not the book)")
    ctx.report(bench, "resting_orders", wl.resting, "orders")
    for metric, values in latency.items():
        ctx.report_median(bench, metric, values, "us")
    ctx.report(bench, "latency_worst_us", round(worst, 2), "us", runs=runs, stat="max")
    assert fastest is not None  # ctx.runs() is at least 1
    report_stable_max(ctx, bench, fastest, runs, wl.ops)
    ctx.report_median(bench, "noise_max_us", noise, "us")
    ctx.note(f"{bench} a full gc.collect() with the book alive takes {statistics.median(full_gc):,.0f} us: the stall "
             f"of every generation-2 collection while trading (none happened inside the measured passes)")
    ctx.report_median(bench, "gc_full_collect_us", full_gc, "us")
    ctx.note(f"{bench} the same collection after gc.freeze(), as the engine runs, takes {statistics.median(frozen_gc):,.0f} us")
    ctx.report_median(bench, "gc_full_collect_frozen_us", frozen_gc, "us")
    ctx.report(bench, "rss_bytes_per_order", round(rss_bytes_per_order(wl.resting, ctx.seed)), "bytes", runs=1, stat="single")


def time_full_collections(runs: int = 3) -> list[float]:
    """Microseconds of each of ``runs`` full gc.collect() calls."""
    samples = []
    for _ in range(runs):
        started = time.perf_counter_ns()
        gc.collect()
        samples.append((time.perf_counter_ns() - started) / 1000)
    return samples


def noise_max_us(duration_ns: int) -> float:
    """The largest gap seen by a loop that times nothing for ``duration_ns``: the stalls the
    machine itself adds (preemption, interrupts) over as long as a measured pass."""
    clock = time.perf_counter_ns
    worst = 0
    end = clock() + duration_ns
    t1 = clock()
    while t1 < end:
        t0 = clock()
        t1 = clock()
        if t1 - t0 > worst:
            worst = t1 - t0
    return worst / 1000


_RSS_PROBE = """
import gc, sys
from bench.book_bench import rss_bytes
from bench.workload import new_book, prefill_commands
resting, seed = int(sys.argv[1]), int(sys.argv[2])
book = new_book()
gc.collect()
before = rss_bytes()
submit = book.submit
for order_id, cmd in prefill_commands("million", resting, seed):
    submit(order_id, cmd)
gc.collect()
print((rss_bytes() - before) / resting)
"""


def rss_bytes_per_order(resting: int, seed: int) -> float:
    """RSS growth per order while prefilling the million book, in a fresh process (in this one,
    memory freed by earlier benchmarks would be reused and hide the growth)."""
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])))
    out = subprocess.run(
        [sys.executable, "-c", _RSS_PROBE, str(resting), str(seed)],
        cwd=root, env=env, check=True, capture_output=True, text=True,
    ).stdout
    return float(out.strip())


# -- memory -----------------------------------------------------------------------------------


@register("book.bytes_per_order", "memory per resting order (tracemalloc while prefilling)")
def book_bytes_per_order(ctx: Context) -> None:
    """Python memory the book holds per resting order: orders, queues, levels, index, ints."""
    bench = "book.bytes_per_order"
    n = 20_000 if ctx.small else 100_000
    gc.collect()
    book = new_book()
    submit = book.submit
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for order_id, cmd in prefill_commands("deep", n, ctx.seed):
        submit(order_id, cmd)
    del order_id, cmd
    gc.collect()
    grown = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert book.open_order_count() == n
    ctx.note(f"{n:,} resting orders (deep shape, {len(book.depth()[0])} bid levels) hold {grown:,} bytes")
    ctx.report(bench, "bytes_per_order", round(grown / n), "bytes", runs=1, stat="single")


# -- a cancel costs the same at any depth -------------------------------------------------------


def _time_one(fn, arg) -> int:
    clock = time.perf_counter_ns
    t0 = clock()
    fn(arg)
    return clock() - t0


@register("book.cancel_depth", "cancel at the front vs at position 100,000 of a level; book of 100 vs 1,000,000")
def book_cancel_depth(ctx: Context) -> None:
    bench = "book.cancel_depth"
    samples = 500 if ctx.small else 2_000
    members = member_ids("M", 500)
    depth = 100_000

    # One bid level of depth + 2 * samples orders. Round j cancels the order with exactly
    # `depth` live orders ahead of it (id depth + 1 + 2j) and the first live order (id j + 1).
    gc.collect()
    book = new_book()
    price = MID_FEN - 1_000
    for order_id in range(1, depth + 2 * samples + 2):
        book.submit(order_id, SubmitOrder(members[order_id % 500], SYMBOL, Side.BUY, 10, price))
    cancel = book.cancel
    at_depth, at_front = [], []
    for j in range(samples):
        deep_id, front_id = depth + 1 + 2 * j, j + 1
        deep_cmd = CancelOrder(members[deep_id % 500], SYMBOL, deep_id)
        front_cmd = CancelOrder(members[front_id % 500], SYMBOL, front_id)
        if j % 2:  # alternate which goes first, so that neither gets a systematic advantage
            at_front.append(_time_one(cancel, front_cmd))
            at_depth.append(_time_one(cancel, deep_cmd))
        else:
            at_depth.append(_time_one(cancel, deep_cmd))
            at_front.append(_time_one(cancel, front_cmd))
    assert book.open_order_count() == depth + 1
    del book, cancel
    front_us = float(np.median(at_front)) / 1000
    deep_us = float(np.median(at_depth)) / 1000
    ctx.report(bench, "cancel_front_p50_us", round(front_us, 3), "us", runs=samples, stat="median")
    ctx.report(bench, f"cancel_depth{depth // 1000}k_p50_us", round(deep_us, 3), "us", runs=samples, stat="median")
    ctx.report(bench, "depth_ratio", round(deep_us / front_us, 2), "x")

    # Books of 100 and of 1,000,000 orders (100,000 when small). Each sample cancels a random
    # resting order; an untimed replacement keeps the size constant. Blocks of 100 alternate.
    big = 100_000 if ctx.small else 1_000_000
    label = f"{big // 1_000_000}m" if big >= 1_000_000 else f"{big // 1000}k"
    gc.collect()
    timings: dict[int, list[int]] = {100: [], big: []}
    books = {}
    for size, shape in ((100, "normal"), (big, "million")):
        book = new_book()
        resting: dict[int, SubmitOrder] = {}
        for order_id, cmd in prefill_commands(shape, size, ctx.seed):
            book.submit(order_id, cmd)
            resting[order_id] = cmd
        books[size] = (book, list(resting), resting, [size + 1])
    gc.collect()
    rng = random.Random(f"{ctx.seed}/cancel_depth")
    for _ in range(samples // 100):
        for size, (book, ids, resting, next_id) in books.items():
            cancel, submit = book.cancel, book.submit
            for _ in range(100):
                k = rng.randrange(len(ids))
                cmd = resting.pop(ids[k])
                timings[size].append(_time_one(cancel, CancelOrder(cmd.member_id, SYMBOL, ids[k])))
                ids[k] = next_id[0]
                next_id[0] += 1
                submit(ids[k], cmd)  # the same order again (new id, back of its level): untimed
                resting[ids[k]] = cmd
    for size, (book, *_rest) in books.items():
        assert book.open_order_count() == size
    small_us = float(np.median(timings[100])) / 1000
    big_us = float(np.median(timings[big])) / 1000
    ctx.report(bench, "cancel_book100_p50_us", round(small_us, 3), "us", runs=len(timings[100]), stat="median")
    ctx.report(bench, f"cancel_book{label}_p50_us", round(big_us, 3), "us", runs=len(timings[big]), stat="median")
    ctx.report(bench, "size_ratio", round(big_us / small_us, 2), "x")
    del books
