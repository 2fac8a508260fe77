"""gateway.startup: the served exchange's start-up time against the length of the journal.

Issue 9 ("Must show"): with the gateway's views in the engine's snapshots, starting the
served exchange restores them from the newest snapshot and replays only the journal's tail,
so start-up should no longer grow with the journal. Measured here:

gateway.startup              a 1,000,000-command journal with a snapshot 1,000 commands
                             before its end (50,000 at --size small)
gateway.startup.short        a 10,000-command journal, snapshot 1,000 before its end: should
                             be close to gateway.startup
gateway.startup.history      a journal as long as gateway.startup's whose last 10,000 commands
                             are a second trading day: the live state (today's orders, which
                             the order tracker keeps for order status) is gateway.startup.short's,
                             the history 1,000,000 commands. Start-up should match .short: what
                             still grows is the day's state, not the journal
gateway.startup.no_snapshot  the long journal with its snapshot hidden: replay from seq 1
gateway.startup.baseline     the code before the redesign (``EXCHANGE_BENCH_BASE``, default
gateway.startup.baseline.short   /work/base) on data it built itself from the same commands:
                             its hub replayed the whole journal through a scratch core at
                             start, snapshot or not

The journal is the engine benchmark's trading mix (``bench.workload.generate``, the normal
shape, the same seed): 500 members registered and funded, start of day, holdings loaded,
continuous trading, the 4,000-order prefill, then passive orders, cancels and marketable
orders (trades) up to the length. It is written through the exchange itself (``compose``,
so with the gateway's views and the clearing stores, as ``exchange serve`` runs; fsync off),
in a child process, once per invocation (``ctx.cache``), in a temporary directory removed at
exit.

One measurement is one fresh child process (cwd = the code's tree, so ``import exchange``
is that tree's): it imports everything, then times ``compose(config, data_dir)`` (recovery:
snapshot, journal tail, views) plus ``await served.start()`` (hub and listening site), the
moment the first logon could arrive; then it checks an HTTP request is answered, stops and
closes (not timed). Interpreter start and imports are not counted. ``compose_seconds`` /
``start_seconds`` split the figure; ``journal_scan_seconds`` is what opening a FileJournal
(it verifies the whole file) and ``records(after_seq=snapshot)`` (which verifies its way to
the snapshot's position) cost on the long journal, the part that still grows with its length.
The page cache is warm (the data was just written).

Run it as ``python -m bench --only 'gateway.startup*'`` (``--size small``: seconds).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.registry import Context, register

HERE = Path(__file__).resolve()
MAIN_ROOT = HERE.parent.parent
BASE_ROOT = Path(os.environ.get("EXCHANGE_BENCH_BASE", "/work/base"))
TAIL = 1_000  # commands after the snapshot
SHORT = 10_000
LONG = {"full": 1_000_000, "small": 50_000}


# ---------------------------------------------------------------------------- the parent


def _child(tree: Path, *args: object, timeout: float = 1800) -> dict:
    """Run this file in a fresh interpreter whose ``exchange`` (and ``bench``) is ``tree``'s;
    its last stdout line (JSON)."""
    code = f"import runpy; runpy.run_path({str(HERE)!r}, run_name='__startup_child__')"
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")  # never write into a read-only tree
    proc = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], cwd=tree, env=env, capture_output=True, text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"child {args[0]} in {tree} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _scratch(ctx: Context) -> Path:
    key = ("startup-scratch",)
    if key not in ctx.cache:  # removed at exit (TemporaryDirectory's finalizer)
        ctx.cache[key] = tempfile.TemporaryDirectory(prefix="bench-startup-")
    return Path(ctx.cache[key].name)


def _data_dir(ctx: Context, tree: Path, label: str, commands: int, last_day: int = 0) -> tuple[Path, dict]:
    """A data directory holding ``commands`` journalled commands and a snapshot ``TAIL``
    before the end, built by ``tree``'s code (once per invocation); with ``last_day``, the last
    so many commands are a second trading day."""
    key = ("startup-data", str(tree), commands, last_day, ctx.seed)
    if key not in ctx.cache:
        path = _scratch(ctx) / f"{label}-{commands}-{last_day}"
        info = _child(tree, "build", path, commands, commands - TAIL, ctx.seed, commands - last_day if last_day else 0)
        ctx.note(
            f"built {label} data ({tree}): {info['commands']:,} commands, snapshot at seq {info['snapshot_seq']:,} "
            f"({info['snapshot_bytes'] / 1e6:.1f} MB), journal {info['journal_bytes'] / 1e6:.1f} MB, "
            f"~{info['fills']:,} fills (model), {info['resting_at_end']:,} resting at the end; "
            f"in {info['seconds']:.1f} s"
        )
        ctx.cache[key] = path, info
    return ctx.cache[key]


def _starts(ctx: Context, tree: Path, path: Path, runs: int, label: str, expect_seq: int,
            expect_restored: int | None) -> list[dict]:
    samples = []
    for _ in range(runs):
        sample = _child(tree, "start", path)
        if sample["last_seq"] != expect_seq:
            raise RuntimeError(f"{label}: started at seq {sample['last_seq']}, the journal holds {expect_seq}")
        samples.append(sample)
    restored = samples[0].get("restored_seq")
    if expect_restored is not None and restored != expect_restored:
        ctx.note(f"WARNING {label}: gateway views restored at seq {restored}, expected {expect_restored}")
    ctx.note(
        f"{label}: seconds per run {', '.join(format(s['seconds'], '.3f') for s in samples)} "
        f"(compose {statistics.median(s['open_seconds'] for s in samples):.3f} s + start "
        f"{statistics.median(s['start_seconds'] for s in samples):.3f} s; "
        f"{'views from the snapshot at seq ' + format(restored, ',') if restored else 'views replayed from seq 1' if restored == 0 else 'baseline: hub replays the journal'}; "
        f"HTTP {samples[0]['http_status']})"
    )
    return samples


def _report(ctx: Context, bench: str, samples: list[dict], split: bool = True) -> float:
    m = ctx.report_median(bench, "seconds", [s["seconds"] for s in samples], "s", digits=3)
    if split:
        ctx.report_median(bench, "compose_seconds", [s["open_seconds"] for s in samples], "s", digits=3)
        ctx.report_median(bench, "start_seconds", [s["start_seconds"] for s in samples], "s", digits=3)
    return m.value


@register("gateway.startup", "served exchange start-up: 1M-command journal + snapshot vs 10k, no snapshot, baseline")
def gateway_startup(ctx: Context) -> None:
    long_n = LONG[ctx.size]
    runs, slow_runs = ctx.runs(5), ctx.runs(3)

    long_dir, long_info = _data_dir(ctx, MAIN_ROOT, "main", long_n)
    short_dir, _ = _data_dir(ctx, MAIN_ROOT, "main", SHORT)

    long_s = _report(ctx, "gateway.startup", _starts(
        ctx, MAIN_ROOT, long_dir, runs, f"{long_n:,} commands + snapshot", long_n, long_n - TAIL))
    ctx.report("gateway.startup", "journal_commands", long_n, "commands")
    scans = [_child(MAIN_ROOT, "scan", long_dir) for _ in range(runs)]
    ctx.report_median("gateway.startup", "journal_scan_seconds", [s["open_seconds"] + s["records_seconds"] for s in scans], "s", digits=3)
    ctx.note(
        f"journal scan of {long_n:,} commands: open (verify the file) {statistics.median(s['open_seconds'] for s in scans):.3f} s, "
        f"records(after_seq={long_n - TAIL:,}) {statistics.median(s['records_seconds'] for s in scans):.3f} s "
        f"({scans[0]['tail']:,} records after the snapshot)"
    )

    short_s = _report(ctx, "gateway.startup.short", _starts(
        ctx, MAIN_ROOT, short_dir, runs, f"{SHORT:,} commands + snapshot", SHORT, SHORT - TAIL))
    ctx.report("gateway.startup.short", "journal_commands", SHORT, "commands")
    ctx.report("gateway.startup", "long_over_short", round(long_s / short_s, 2), "ratio", runs=runs, stat="median")

    history_dir, _ = _data_dir(ctx, MAIN_ROOT, "main", long_n, last_day=SHORT)
    history_s = _report(ctx, "gateway.startup.history", _starts(
        ctx, MAIN_ROOT, history_dir, runs, f"{long_n:,} commands, the last {SHORT:,} a new day, + snapshot", long_n, long_n - TAIL))
    ctx.report("gateway.startup.history", "history_over_short", round(history_s / short_s, 2), "ratio", runs=runs, stat="median")

    snapshots, hidden = long_dir / "snapshots", long_dir / "snapshots.hidden"
    snapshots.rename(hidden)
    try:
        _report(ctx, "gateway.startup.no_snapshot", _starts(
            ctx, MAIN_ROOT, long_dir, slow_runs, f"{long_n:,} commands, no snapshot", long_n, 0))
    finally:
        hidden.rename(snapshots)

    if not (BASE_ROOT / "exchange" / "serve.py").exists():
        ctx.note(f"baseline skipped: no checkout at {BASE_ROOT} (EXCHANGE_BENCH_BASE)")
        return
    try:
        base_long, _ = _data_dir(ctx, BASE_ROOT, "base", long_n)
        base_short, _ = _data_dir(ctx, BASE_ROOT, "base", SHORT)
        _report(ctx, "gateway.startup.baseline", _starts(
            ctx, BASE_ROOT, base_long, slow_runs, f"baseline, {long_n:,} commands + snapshot", long_n, None))
        _report(ctx, "gateway.startup.baseline.short", _starts(
            ctx, BASE_ROOT, base_short, runs, f"baseline, {SHORT:,} commands + snapshot", SHORT, None))
    except (RuntimeError, subprocess.TimeoutExpired) as error:
        ctx.note(f"baseline skipped: {error}")


# ---------------------------------------------------------------------------- the child
# Everything below runs in a child process and imports ``exchange`` from its tree: the
# current one or the baseline's (which has no ``compose`` and no snapshotted views).


def _config():
    from exchange.config import Config, EngineConfig, InstrumentConfig, LimitsConfig, RiskConfig

    return Config(
        engine=EngineConfig(fsync="never", snapshot_every_commands=2**62),  # the one snapshot is taken by hand
        risk=RiskConfig(position_limit_t=10**12, limits=LimitsConfig(
            max_order_value_fen=10**15, orders_per_second=10**9, order_burst=10**9, max_open_orders=10**9)),
        instruments=[  # the defaults, with CEA-2025 as the workload's (bench.workload.INSTRUMENT)
            InstrumentConfig("CEA-2024", "allowance", "56.40", vintage=2024),
            InstrumentConfig("CEA-2025", "allowance", "1000.00", vintage=2025, tick="0.01", lot_t=1, band_bps=5_000),
            InstrumentConfig("CCER", "ccer", "62.50"),
        ],
    )


def _has_compose() -> bool:
    import exchange.serve

    return hasattr(exchange.serve, "compose")


def _build(data_dir: Path, commands: int, snapshot_at: int, seed: int, second_day_at: int = 0) -> dict:
    from bench.workload import INSTRUMENT, MEMBERS, SHAPES, TRADING_DAY, generate, member_ids
    from exchange.model import (
        CancelOrder, Deposit, EndDay, LoadHolding, MemberKind, RegisterMember, SetTradingPhase, StartDay, SubmitOrder,
        TradingPhase,
    )

    started = time.perf_counter()
    config = _config()
    members = member_ids("M", MEMBERS)
    head: list = []
    for member in members:
        head += [RegisterMember(member, MemberKind.VOLUNTARY), Deposit(member, 10**14)]
    head.append(StartDay(TRADING_DAY))
    head += [LoadHolding(member, INSTRUMENT.symbol, 10**9) for member in members]
    head.append(SetTradingPhase(TradingPhase.CONTINUOUS))
    resting = SHAPES["normal"].resting
    next_day: list = [EndDay(), StartDay(_day_after(TRADING_DAY)), SetTradingPhase(TradingPhase.CONTINUOUS)]
    n_ops = commands - len(head) - resting - (len(next_day) if second_day_at else 0)
    assert n_ops > 0 and len(head) < snapshot_at < commands and second_day_at < snapshot_at
    wl = generate("normal", n_ops, seed)

    if _has_compose():
        from exchange.serve import compose

        served = compose(config, data_dir)
        exchange, close = served.exchange, served.close
    else:  # the baseline: the exchange, and the gateway's files as its ``exchange serve`` makes them
        from exchange.app import Exchange
        from exchange.gateway.server import credential_store, operator_tokens

        exchange = Exchange.open(config, data_dir, time.time_ns)
        credential_store(data_dir)
        operator_tokens(data_dir)
        close = exchange.close
    engine, execute = exchange.engine, exchange.execute
    snapshot_path = None
    for command in head:
        execute(command)
    engine_id: dict[int, int] = {}  # the workload's order ids -> the engine's (the submit's seq)
    for source in (wl.iter_prefill(), wl.ops):
        for order_id, command in source:
            if type(command) is CancelOrder:
                command = CancelOrder(command.member_id, command.instrument, engine_id[command.order_id])
            execute(command)
            if type(command) is SubmitOrder:
                engine_id[order_id] = engine.last_seq
            if engine.last_seq == snapshot_at:
                snapshot_path = engine.snapshot()
            if second_day_at and engine.last_seq == second_day_at:
                for day_command in next_day:  # a new day: yesterday's day orders expire
                    execute(day_command)
    last_seq = engine.last_seq
    close()
    assert last_seq == commands and snapshot_path is not None
    return {
        "commands": last_seq, "snapshot_seq": snapshot_at, "snapshot_bytes": Path(snapshot_path).stat().st_size,
        "journal_bytes": sum(p.stat().st_size for p in data_dir.glob("commands.journal*")), "fills": wl.stats["fills"],
        "resting_at_end": wl.stats["resting_at_end"], "seconds": time.perf_counter() - started,
    }


def _day_after(day: str) -> str:
    import datetime

    return (datetime.date.fromisoformat(day) + datetime.timedelta(days=1)).isoformat()


def _start(data_dir: Path) -> dict:
    import asyncio
    import gc

    import aiohttp

    config = _config()
    if _has_compose():
        from exchange.serve import compose
    else:
        from exchange.app import Exchange
        from exchange.gateway.hub import Hub
        from exchange.gateway.server import GatewayServer, credential_store, operator_tokens

    async def run() -> dict:
        gc.collect()
        t0 = time.perf_counter()
        if _has_compose():
            served = compose(config, data_dir)
            t1 = time.perf_counter()
            url = await served.start()
            t2 = time.perf_counter()
            info = {"last_seq": served.service.last_seq, "restored_seq": served.views.restored_seq}
            stop, close = served.stop, served.close
        else:  # the baseline's ``exchange serve``, as its exchange/serve.py wires it
            exchange = Exchange.open(config, data_dir, time.time_ns)
            credentials, save = credential_store(data_dir)
            tokens, _ = operator_tokens(data_dir)
            # The baseline's Hub took the Exchange itself; mypy checks this against the current tree's Hub.
            hub = Hub(exchange, config, credentials, on_credentials_changed=save)  # type: ignore[call-arg, arg-type]  # baseline API
            server = GatewayServer(hub, tokens)
            t1 = time.perf_counter()
            url = await server.start()
            t2 = time.perf_counter()
            info = {"last_seq": exchange.engine.last_seq}
            stop, close = server.stop, exchange.close
        try:
            async with aiohttp.ClientSession() as session, session.get(f"{url}/") as response:
                info["http_status"] = response.status  # it is serving (any answer will do)
        finally:
            await stop()
            close()
        return {"seconds": t2 - t0, "open_seconds": t1 - t0, "start_seconds": t2 - t1, **info}

    return asyncio.run(run())


def _scan(data_dir: Path) -> dict:
    """What the journal costs at start-up: opening it (verifies the file) and reading the tail
    after the newest snapshot (verifies the way there, checks the chain value)."""
    from exchange.engine import FileJournal, FsyncPolicy
    from exchange.engine.snapshot import Snapshot, list_snapshots

    snap = [found for _, found in list_snapshots(data_dir / "snapshots") if isinstance(found, Snapshot)][-1]
    t0 = time.perf_counter()
    journal = FileJournal(data_dir / "commands.journal", fsync=FsyncPolicy.NEVER)
    t1 = time.perf_counter()
    tail = sum(1 for _ in journal.records(after_seq=snap.seq, expect_chain=snap.chain_hash))
    t2 = time.perf_counter()
    journal.close()
    return {"open_seconds": t1 - t0, "records_seconds": t2 - t1, "tail": tail}


def _child_main(argv: list[str]) -> None:
    mode, data_dir = argv[0], Path(argv[1])
    if mode == "build":
        result = _build(data_dir, int(argv[2]), int(argv[3]), int(argv[4]), int(argv[5]) if len(argv) > 5 else 0)
    elif mode == "start":
        result = _start(data_dir)
    elif mode == "scan":
        result = _scan(data_dir)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    print(json.dumps(result), flush=True)


if __name__ == "__startup_child__":
    _child_main(sys.argv[1:])
