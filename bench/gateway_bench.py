"""The served exchange under load over loopback: orders/s and order -> acknowledgement latency.

gateway.8clients    8 members, one WebSocket session each
gateway.64clients   64 members, one WebSocket session each

Each run starts ``exchange serve`` in its own process on a fresh data directory (SQLite
stores, the journal with the default ``batched`` fsync policy: an fsync at every group commit
of the hub), sets the market up through the operator HTTP API, connects the clients (aiohttp,
one asyncio loop in this process) and measures, on the same server:

* ``ops_per_s``: the sustained rate, closed loop: each client keeps a window of requests
  outstanding (512 in all: 64 per client with 8 clients, 8 with 64) and sends the next
  request whenever one is answered. Requests (the ``load`` mix, ``exchange.sim.strategies.
  load_turn``, the same as before the shared strategies): about 80 % new day limit orders on
  one instrument, buys and sells, 1-10 t, uniform within +-5 ticks of 58.20 (about half cross
  and trade), and 20 % cancels of the client's oldest resting order; new orders and cancels
  count as operations. ``server_cpu_percent`` is the server
  process's CPU time over the same window (100 = one core; the journal fsync runs on the
  server's event loop thread).
* ``latency_p50_us``, ``latency_p99_us``, ``latency_max_us``: open loop, paced at 20,000
  requests/s in total (the same mix), from just before a ``new_order`` frame is written
  until its first ``execution_report`` arrives. When the closed loop sustained less than
  20,000/s the paced rate is 90 % of what it sustained (a note says so): a paced load at
  100 % of capacity has no steady state.
* ``server_peak_rss_mb``: the server's ``VmHWM`` at the end of the run.

A third phase, open loop at 5,000 requests/s (at most half the sustained rate), goes into the
notes only: the latency away from saturation.

``python -m bench.gateway_bench --mix members [--size small]`` sends the simulated members' mix
instead (``exchange.sim.strategies.member_turn``, as ``exchange simulate``: makers, takers and
traders around a drifting fair value, 10-5,000 t, IOC/FOK/market orders, day and GTC orders,
cancels and amends, mass cancels riding along uncounted, a few deliberately bad orders):
another load per request (other sizes, order types, matching and rejects), so its figures are
reported as ``gateway.<n>clients.members`` and do not compare with the default mix's.

The clients do not subscribe to market data: this is order entry. ``--size small``: one run,
0.5 s warm-up and 2 s measured per phase; full size: three runs of 1 s + 5 s per phase,
medians of the runs reported.

``python -m bench.gateway_bench --profile [--clients 8]`` runs once with the server under
cProfile and prints where its time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pstats
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.gateway_load import (  # noqa: E402
    DEFAULT_MIX,
    MIXES,
    ServedProcess,
    drive,
    percentile,
    set_up,
)
from bench.registry import Context, register  # noqa: E402

PACED_RATE = 20_000  # requests/s, the latency target is at this rate
LIGHT_RATE = 5_000  # requests/s, a light load for a note: latency away from saturation
TOTAL_WINDOW = 512  # requests outstanding over all clients in the closed loop
MIX = DEFAULT_MIX  # the request mix (bench.gateway_load.MIXES); ``main(--mix)`` sets it

MIX_NOTES = {
    "load": "the load mix (exchange.sim.strategies.load_turn, as before the shared strategies): about 80 % new "
            "day limit orders, 1-10 t, uniform within +-5 ticks of 58.20 (about half trade), 20 % cancels of the "
            "client's oldest resting order",
    "members": "the simulated members' mix (exchange.sim.strategies.member_turn: makers, takers, traders; "
               "10-5,000 t, IOC/FOK/market, day and GTC, about 84 % new orders, the rest cancels, amends, mass "
               "cancels; another load per request: not comparable with the load mix)",
}


def phase_times(ctx: Context) -> tuple[float, float]:
    return (0.5, 2.0) if ctx.small else (1.0, 5.0)


def one_run(clients: int, seed: int, warmup_s: float, measure_s: float, profile_to: Path | None = None,
            mix: str | None = None):
    """(sustained, paced, light, peak RSS MB, window) of one fresh server."""
    window = max(1, TOTAL_WINDOW // clients)
    members = [f"L{clients}x{i:03d}" for i in range(clients)]
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as scratch:
        server = ServedProcess(Path(scratch) / "data", members, profile_to=profile_to).start()
        try:
            market = asyncio.run(set_up(server))
            sustained, paced, light = asyncio.run(
                drive(server, market, seed, window, warmup_s, measure_s, PACED_RATE, LIGHT_RATE, mix=mix or MIX))
            rss = server.peak_rss_mb()
        finally:
            code = server.stop()
        if code not in (0, None):
            raise RuntimeError(f"the server exited with {code}: {server.stderr_tail()}")
    return sustained, paced, light, rss, window


def latency_figures(phase) -> tuple[float, float, float]:
    values = sorted(phase.latencies_ns)
    return percentile(values, 0.50) / 1e3, percentile(values, 0.99) / 1e3, values[-1] / 1e3 if values else float("nan")


def gateway_bench(ctx: Context, bench: str, clients: int) -> None:
    mix = MIX
    if mix != DEFAULT_MIX:  # another mix's figures must not pass for the default's
        bench = f"{bench}.{mix}"
    warmup_s, measure_s = phase_times(ctx)
    samples: dict[str, list[float]] = {k: [] for k in (
        "ops_per_s", "latency_p50_us", "latency_p99_us", "latency_max_us", "server_cpu_percent", "server_peak_rss_mb")}
    below_target = []
    ctx.note(
        f"{bench}: per run a fresh `python -m exchange.serve` process on 127.0.0.1 (data directory on "
        f"{filesystem(tempfile.gettempdir())}: SQLite stores, journal fsync 'batched' = the default: one fsync per group "
        f"commit, on the server's event loop), {clients} members set up through the operator API, one aiohttp "
        f"WebSocket session each, all in this process (one asyncio loop); phases of {warmup_s:g} s warm-up + "
        f"{measure_s:g} s measured: closed loop ({TOTAL_WINDOW} outstanding in all), open loop at {PACED_RATE:,}/s, "
        f"open loop at {LIGHT_RATE:,}/s (note only); requests: {MIX_NOTES[mix]}; no market-data subscriptions"
    )
    for run in range(ctx.runs(3)):
        sustained, paced, light, rss, window = one_run(clients, ctx.seed + run, warmup_s, measure_s, mix=mix)
        p50, p99, worst = latency_figures(paced)
        closed = sorted(sustained.latencies_ns)
        ctx.note(
            f"{bench} run {run + 1}: closed loop ({window} outstanding per client): {sustained.ops_per_s:,.0f} requests/s "
            f"answered ({sustained.acked / sustained.seconds:,.0f} new orders/s acknowledged, "
            f"{sustained.trades / sustained.seconds:,.0f} trade reports/s), server CPU {sustained.server_cpu_percent:.0f} % "
            f"({per_request_us(sustained):.0f} us a request), "
            f"client CPU {sustained.client_cpu_percent:.0f} %, ack latency under that load "
            f"p50 {percentile(closed, 0.5) / 1e3:,.0f} us p99 {percentile(closed, 0.99) / 1e3:,.0f} us"
        )
        ctx.note(
            f"{bench} run {run + 1}: open loop offered {paced.offered_per_s:,.0f}/s, answered {paced.ops_per_s:,.0f}/s, "
            f"pacer at most {paced.behind_ms:.1f} ms behind schedule, server CPU {paced.server_cpu_percent:.0f} % "
            f"({per_request_us(paced):.0f} us a request), "
            f"client CPU {paced.client_cpu_percent:.0f} %; {len(paced.latencies_ns):,} acks timed: "
            f"p50 {p50:,.0f} us, p99 {p99:,.0f} us, max {worst:,.0f} us; "
            f"resting orders at the end {paced.resting:,}, unanswered {sustained.unanswered + paced.unanswered}, "
            f"rejects {merge(sustained.rejects, paced.rejects) or 'none'}, errors {merge(sustained.errors, paced.errors) or 'none'}"
        )
        l50, l99, lmax = latency_figures(light)
        ctx.note(
            f"{bench} run {run + 1}: light open loop at {light.offered_per_s:,.0f}/s: server CPU "
            f"{light.server_cpu_percent:.0f} %, p50 {l50:,.0f} us, p99 {l99:,.0f} us, max {lmax:,.0f} us; "
            f"peak RSS {rss:.1f} MB"
        )
        if sustained.server_cpu_percent < 90:
            ctx.note(
                f"{bench} run {run + 1}: the server used only {sustained.server_cpu_percent:.0f} % of a core at full load: "
                f"it was waiting (fsync, or another process had the core: load average {os.getloadavg()[0]:.2f}); "
                f"this run's figures are the machine's as much as the server's"
            )
        if paced.offered_per_s < PACED_RATE:
            below_target.append(paced.offered_per_s)
        for name, value in (("ops_per_s", sustained.ops_per_s), ("latency_p50_us", p50), ("latency_p99_us", p99),
                            ("latency_max_us", worst), ("server_cpu_percent", sustained.server_cpu_percent),
                            ("server_peak_rss_mb", rss)):
            samples[name].append(value)
    if below_target:
        ctx.note(
            f"{bench}: the server sustained less than {PACED_RATE:,} requests/s, so the latencies are at 90 % of what "
            f"it sustained ({', '.join(f'{r:,.0f}' for r in below_target)}/s), not at {PACED_RATE:,}/s"
        )
    ctx.report_median(bench, "ops_per_s", samples["ops_per_s"], "ops/s", digits=0)
    for name in ("latency_p50_us", "latency_p99_us", "latency_max_us"):
        ctx.report_median(bench, name, samples[name], "us", digits=0)
    ctx.report_median(bench, "server_cpu_percent", samples["server_cpu_percent"], "%", digits=0)
    ctx.report_median(bench, "server_peak_rss_mb", samples["server_peak_rss_mb"], "MB", digits=1)


def per_request_us(phase) -> float:
    """Server CPU time per answered request (what a loaded machine does not change much)."""
    return phase.server_cpu_s / phase.answered * 1e6 if phase.answered else float("nan")


def filesystem(path: str) -> str:
    """The file system type a path is on (from /proc/mounts), e.g. 'ext4' or 'tmpfs'."""
    best, kind = "", "?"
    try:
        with open("/proc/mounts") as f:
            for line in f:
                fields = line.split()
                mount = fields[1]
                if (path == mount or path.startswith(mount.rstrip("/") + "/")) and len(mount) > len(best):
                    best, kind = mount, fields[2]
    except OSError:
        pass
    return f"{path} ({kind})"


def merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for key, value in b.items():
        out[key] = out.get(key, 0) + value
    return out


def gateway_8clients(ctx: Context) -> None:
    gateway_bench(ctx, "gateway.8clients", 8)


def gateway_64clients(ctx: Context) -> None:
    gateway_bench(ctx, "gateway.64clients", 64)


if __name__ != "__main__":  # `python -m bench.gateway_bench` registers them as bench.gateway_bench
    register("gateway.8clients", "the served exchange: 8 WebSocket members, orders/s and ack latency")(gateway_8clients)
    register("gateway.64clients", "the served exchange: 64 WebSocket members, orders/s and ack latency")(gateway_64clients)


# -- profiling the server ---------------------------------------------------------------------------


def profile(clients: int, out: Path, top: int) -> None:
    sustained, paced, light, rss, window = one_run(clients, 20250602, 1.0, 5.0, profile_to=out)
    print(f"# {MIX} mix: closed loop {sustained.ops_per_s:,.0f} requests/s (server CPU {sustained.server_cpu_percent:.0f} %); "
          f"open loop at {paced.offered_per_s:,.0f}/s: p50 {latency_figures(paced)[0]:,.0f} us, "
          f"p99 {latency_figures(paced)[1]:,.0f} us; peak RSS {rss:.0f} MB; profile in {out}")
    stats = pstats.Stats(str(out))
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    print("# own time by file (C functions by name; the aiohttp frame reader is C, inside 'asyncio')")
    # pstats keeps its table in the undocumented attribute ``stats`` (absent from typeshed):
    # (file, line, function) -> (primitive calls, calls, own time, cumulative time, callers).
    table: dict[tuple[str, int, str], tuple[int, int, float, float, dict]] = vars(stats)["stats"]
    areas: dict[str, float] = {}
    for (filename, _, function), (_, _, own, _, _) in table.items():
        if filename == "~":
            area = function
        elif "/asyncio/" in filename:
            area = "asyncio"
        elif "site-packages/" in filename:
            area = filename.split("site-packages/", 1)[1]
        else:
            area = filename.split(str(Path(__file__).resolve().parent.parent) + "/", 1)[-1]
        areas[area] = areas.get(area, 0.0) + own
    total = sum(areas.values())
    for area, seconds in sorted(areas.items(), key=lambda item: -item[1])[:top]:
        print(f"{seconds:8.3f} s {100 * seconds / total:5.1f} %  {area}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gateway_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", action="store_true", help="one run with the server under cProfile")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "gateway-server.prof"),
                        help="where the profile goes (default: the temporary directory)")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--mix", choices=MIXES, default=DEFAULT_MIX,
                        help="the requests: load (default: the mix of the baseline, comparable with it) or members "
                             "(the simulated members' strategies, reported as gateway.<n>clients.members)")
    args, rest = parser.parse_known_args(argv)
    global MIX
    MIX = args.mix
    if args.profile:
        profile(args.clients, Path(args.out).resolve(), args.top)
        return 0
    from bench.run import main as run_main

    only = [] if "--only" in rest or any(a.startswith("--only=") for a in rest) else ["--only", "gateway.*"]
    return run_main([*only, *rest])


if __name__ == "__main__":
    from bench.gateway_bench import main as _main  # the module under its own name (registers once)

    raise SystemExit(_main())
