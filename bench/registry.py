"""The benchmark registry and how results are reported.

A benchmark is a function ``fn(ctx: Context) -> None`` registered under a name with
``@register("book.normal")``. It measures, and reports each figure with ``ctx.report(...)``,
which prints it at once as one JSON line (the format of docs/testing.md, "Benchmark output")
and keeps it for the summary table printed at the end of the run.

To add benchmarks (for example ``engine.journal`` and ``engine.journal_fsync_batched``), put
them in a module that ``bench/run.py`` imports (``BENCH_MODULES``) and decorate them.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

SIZES = ("full", "small")


@dataclass(frozen=True)
class Measurement:
    bench: str
    metric: str
    value: float
    unit: str
    runs: int | None = None
    stat: str | None = None

    def to_json(self) -> str:
        record: dict = {"bench": self.bench, "metric": self.metric, "value": self.value, "unit": self.unit}
        if self.runs is not None:
            record["runs"] = self.runs
        if self.stat is not None:
            record["stat"] = self.stat
        return json.dumps(record)


@dataclass
class Context:
    """What a benchmark gets: the chosen size, the seed, a cache and the reporter."""

    size: str = "full"
    seed: int = 20250602
    runs_override: int | None = None
    results: list[Measurement] = field(default_factory=list)
    cache: dict = field(default_factory=dict)  # e.g. generated workloads, shared between benches
    out: TextIO = sys.stdout

    @property
    def small(self) -> bool:
        return self.size == "small"

    def runs(self, full: int, small: int = 1) -> int:
        """How many times to repeat a measurement (the median is reported)."""
        if self.runs_override is not None:
            return self.runs_override
        return small if self.small else full

    def report(self, bench: str, metric: str, value: float, unit: str, runs: int | None = None,
               stat: str | None = None) -> Measurement:
        m = Measurement(bench, metric, value, unit, runs, stat)
        self.results.append(m)
        print(m.to_json(), file=self.out, flush=True)
        return m

    def report_median(self, bench: str, metric: str, samples: list[float], unit: str, digits: int = 2) -> Measurement:
        """The median of several runs' figures."""
        value = statistics.median(samples)
        value = round(value) if digits == 0 else round(value, digits)
        return self.report(bench, metric, value, unit, runs=len(samples), stat="median")

    def note(self, text: str) -> None:
        """Human-readable progress and context (lines start with '#')."""
        print(f"# {text}", file=self.out, flush=True)


@dataclass(frozen=True)
class Bench:
    name: str
    fn: Callable[[Context], None]
    description: str


REGISTRY: dict[str, Bench] = {}


def register(name: str, description: str = "") -> Callable[[Callable[[Context], None]], Callable[[Context], None]]:
    """Register a benchmark function under ``name`` (in the order of registration)."""

    def decorate(fn: Callable[[Context], None]) -> Callable[[Context], None]:
        if name in REGISTRY:
            raise ValueError(f"benchmark {name!r} registered twice")
        REGISTRY[name] = Bench(name, fn, description or (fn.__doc__ or "").strip().splitlines()[0])
        return fn

    return decorate
