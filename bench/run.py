"""Run the benchmarks: ``python -m bench`` or ``python bench/run.py`` (from the repository root).

With no arguments every registered benchmark runs at full size (a few minutes). Options:

  --only NAME   run only this benchmark; repeatable; shell wildcards allowed ('book.*')
  --size small  a quick smoke run (20,000 operations, 1 run, smaller books)
  --runs N      override the number of runs per measurement
  --seed N      the workload seed (default 20250602)
  --list        list the benchmarks and exit

Each measurement is printed as one JSON line when it is made; lines starting with '#' are
progress notes; a summary table (with the targets, where there is one) ends the output.
"""

from __future__ import annotations

import argparse
import fnmatch
import gc
import hashlib
import importlib
import os
import platform
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.registry import REGISTRY, SIZES, Context, Measurement  # noqa: E402

# Modules whose import registers benchmarks.
BENCH_MODULES = (
    "bench.book_bench", "bench.peers_bench", "bench.engine_bench", "bench.settle_bench", "bench.gateway_bench",
    "bench.startup_bench", "bench.soak_bench",
)


def load_benchmarks() -> None:
    for name in BENCH_MODULES:
        importlib.import_module(name)


def select(patterns: list[str] | None) -> list[str]:
    if not patterns:
        return list(REGISTRY)
    chosen = [name for name in REGISTRY if any(fnmatch.fnmatchcase(name, p) for p in patterns)]
    unknown = [p for p in patterns if not any(fnmatch.fnmatchcase(name, p) for name in REGISTRY)]
    if unknown:
        raise SystemExit(f"unknown benchmark(s): {', '.join(unknown)}; try --list")
    return chosen


def summary_table(results: list[Measurement]) -> str:
    from bench.book_bench import TARGETS  # the figures the issue asks for

    rows = [("bench", "metric", "value", "unit", "runs", "stat", "target")]
    for m in results:
        value = f"{m.value:,.0f}" if abs(m.value) >= 1000 or float(m.value).is_integer() else f"{m.value:,.2f}"
        target = TARGETS.get((m.bench, m.metric))
        verdict = ""
        if target is not None:
            op, limit = target
            ok = m.value >= limit if op == ">=" else m.value <= limit
            verdict = f"{op} {limit:,} {'ok' if ok else 'MISSED'}"
        rows.append((m.bench, m.metric, value, m.unit, "" if m.runs is None else str(m.runs), m.stat or "", verdict))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    right = {2, 4}
    lines = []
    for k, row in enumerate(rows):
        cells = [cell.rjust(w) if i in right else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def source_digest() -> str:
    """A short hash of the exchange package's source, to tell which code a result belongs to."""
    root = Path(__file__).resolve().parent.parent / "exchange"
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description="Order-book (and engine) benchmarks.")
    parser.add_argument("--only", action="append", metavar="NAME", help="run only NAME (repeatable, wildcards ok)")
    parser.add_argument("--size", choices=SIZES, default="full", help="full (default) or small (smoke run)")
    parser.add_argument("--runs", type=int, help="runs per measurement (default 5 at full size, 1 at small)")
    parser.add_argument("--seed", type=int, default=20250602, help="workload seed")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)

    load_benchmarks()
    if args.list:
        for bench in REGISTRY.values():
            print(f"{bench.name:34} {bench.description}")
        return 0

    names = select(args.only)
    ctx = Context(size=args.size, seed=args.seed, runs_override=args.runs)
    ctx.note(
        f"python {platform.python_version()} ({platform.python_implementation()}), {platform.machine()}, "
        f"{os.cpu_count()} cpus, load average {os.getloadavg()[0]:.2f}, exchange/ source {source_digest()}, "
        f"size={ctx.size}, seed={ctx.seed}"
    )
    ctx.note(f"benchmarks: {', '.join(names)}")
    started = time.perf_counter()
    for name in names:
        bench = REGISTRY[name]
        ctx.note(f"== {name}: {bench.description}")
        t0 = time.perf_counter()
        bench.fn(ctx)
        gc.unfreeze()  # benchmarks may freeze their prebuilt data (bench.book_bench.prefilled)
        ctx.note(f"{name} took {time.perf_counter() - t0:.1f} s (load average {os.getloadavg()[0]:.2f})")
    ctx.note(f"all done in {time.perf_counter() - started:.1f} s")
    print()
    print(summary_table(ctx.results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
