"""Where the book spends its time: cProfile of one throughput pass over a workload.

    python -m bench.profile_book                 # normal shape, 200,000 operations
    python -m bench.profile_book --shape deep --ops 50000 --top 30

cProfile adds a fixed cost to every Python call, so it overstates code made of many small
calls; read it for the split between functions, and confirm any change with ``python -m bench``.
Constructors of msgspec Structs (events, resting orders) are C calls that cProfile does not
list: their cost shows up in the ``tottime`` of the function that calls them.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.book_bench import prefilled, throughput_pass  # noqa: E402
from bench.workload import SHAPES, describe, generate  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_book", description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="normal")
    parser.add_argument("--ops", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=20250602)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--sort", default="tottime", help="a pstats sort key (tottime, cumulative, ncalls)")
    args = parser.parse_args(argv)

    wl = generate(args.shape, args.ops, args.seed)
    print(describe(wl))
    book = prefilled(wl)
    profiler = cProfile.Profile()
    profiler.enable()
    throughput_pass(book, wl.ops)
    profiler.disable()
    pstats.Stats(profiler).strip_dirs().sort_stats(args.sort).print_stats(args.top)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
