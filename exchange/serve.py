"""``exchange serve``: the engine and the gateway in one process (a composition root).

:func:`compose` wires one served exchange: it builds the gateway's views (the order tracker,
market data, alerts and metrics: snapshotted projections of the engine's stream), opens the
exchange from the data directory with them (the journal and snapshots, SQLite stores in the
same directory unless ``--clearing-db`` names a database URL), which recovers the engine and
the views from the newest snapshot and the journal's tail; then it adapts the exchange to the
gateway's service port (:class:`exchange.service.ExchangeService`) and builds the hub and
the aiohttp server on it: members on ``/ws``, operators on the HTTP API. ``exchange serve``
prints the URL and where the operator tokens are.

After a restart (a crash or not: start-up and recovery are the same path) the hub arms a
grace timer for every member whose journalled session guard would cancel its orders (see
:mod:`exchange.gateway.hub`); ``--cancel-on-disconnect-grace-s`` sets how long a member with
cancel-on-disconnect has to log back on (30 s by default).

SIGINT or SIGTERM stop it gracefully: no new connections, every session told
(``session_closing``: ``server_shutdown``), the command queue drained, the journal flushed and
the stores closed. A SIGKILL loses nothing acknowledged: an acknowledgement leaves only after
its command's journal flush, and the next start replays the journal.

The trading day runs itself (``docs/trading-day.md``): unless ``[calendar] automatic = false``,
a :class:`~exchange.gateway.calendar_driver.CalendarDriver` opens the day, moves the phases, ends and
settles the day at the calendar's times, through the hub as the operator API does (which the
operators may still use: the driver goes by the engine's state). ``--time-scale N`` runs the
calendar N times faster (from ``--calendar-start``, else now) for demos and tests.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import signal
import ssl
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Callable

from exchange.app import Exchange, keep_files_private, warn_about_shared_paths
from exchange.gateway.calendar_driver import CalendarClock, CalendarDriver, calendar_clock, calendar_ns, parse_calendar_start
from exchange.cli_errors import explain
from exchange.config import Config, ConfigError, load_config
from exchange.engine import ProjectionAhead
from exchange.engine.journal import JournalError
from exchange.gateway.connections import ConnectionLimits, TlsError, tls_context
from exchange.gateway.hub import DEFAULT_CANCEL_ON_DISCONNECT_GRACE_S, Hub
from exchange.gateway.operator.audit import AUDIT_FILE
from exchange.gateway.server import GatewayServer, credential_store, operator_token_store, tokens_writer
from exchange.gateway.views import GatewayViews
from exchange.service import ExchangeService
from registry_adapter.port import Registry


@dataclass
class ServedExchange:
    """One served exchange's parts, as :func:`compose` wired them."""

    exchange: Exchange
    service: ExchangeService
    views: GatewayViews
    hub: Hub
    server: GatewayServer
    tokens: dict[str, str]
    tokens_path: Path
    driver: CalendarDriver | None = None  # runs the day by the calendar (None: the operators do)

    async def start(self) -> str:
        """Start the hub and the site, then the calendar driver; the URL."""
        url = await self.server.start()
        if self.driver is not None:
            self.driver.start()
        return url

    async def stop(self) -> None:
        """Stop the driver; tell the sessions, drain the queue, commit, stop the site (the
        exchange stays open)."""
        if self.driver is not None:
            await self.driver.stop()
        await self.server.stop()

    def close(self) -> None:
        """Close the exchange (journal, stores, the registry it opened)."""
        self.exchange.close()


def compose(
    config: Config, data_dir: Path, clock: Callable[[], int] = time.time_ns, *,
    clearing_url: str | None = None, registry: Registry | None = None,
    operator_tokens_file: Path | None = None, host: str = "127.0.0.1", port: int = 0,
    tls: ssl.SSLContext | None = None, calendar: CalendarClock | None = None, **hub_options: Any,
) -> ServedExchange:
    """Open the exchange over ``data_dir`` with the gateway's views and wire the gateway to
    it (not started: ``await served.start()``). ``hub_options`` go to :class:`Hub`
    (``max_connections_per_member``, ``max_outbound``, ``max_errors_per_minute``,
    ``cancel_on_disconnect_grace_s``). ``tls``: serve HTTPS and WSS (see :func:`tls_context`);
    the connection caps and timeouts come from ``config.gateway``. ``calendar``: run the day by
    ``config.calendar`` on this clock (None: the operators run it)."""
    views = GatewayViews.build(sorted(item.symbol for item in config.listed_instruments()))
    exchange = Exchange.open(config, data_dir, clock, clearing_url=clearing_url, registry=registry, views=views.projections())
    try:
        credentials, save = credential_store(data_dir)
        token_store, tokens_path = operator_token_store(data_dir, operator_tokens_file)
        tokens = token_store.newest()  # as started; a rotation changes the store, not this
        service = ExchangeService(exchange)
        hub = Hub(service, config, credentials, views, on_credentials_changed=save, **hub_options)
        server = GatewayServer(hub, token_store, host, port, save_tokens=tokens_writer(tokens_path),
                               audit_path=data_dir / AUDIT_FILE, limits=ConnectionLimits.of(config.gateway), tls=tls)
    except BaseException:
        exchange.close()
        raise
    driver = CalendarDriver(hub, config.calendar.schedule(), calendar) if calendar is not None else None
    return ServedExchange(exchange, service, views, hub, server, tokens, tokens_path, driver)


def add_serve_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("serve", help="run the exchange: engine, member WebSocket and operator API")
    parser.add_argument("--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port (printed)")
    parser.add_argument("--data-dir", default="exchange-data", help="journal, snapshots, stores and gateway files")
    parser.add_argument("--config", help="TOML configuration file (defaults: the market rules)")
    parser.add_argument("--clearing-db", help="database URL of the trades and cash ledger (default: SQLite in the data directory)")
    parser.add_argument("--operator-tokens", help="a JSON file of role tokens (default: made in the data directory)")
    parser.add_argument("--max-connections-per-member", type=int, default=4, help="WebSocket sessions a member may hold at once (default 4)")
    parser.add_argument("--max-outbound", type=int, default=10_000, help="messages queued per connection before it is cut")
    parser.add_argument(
        "--cancel-on-disconnect-grace-s", type=_non_negative_seconds, default=DEFAULT_CANCEL_ON_DISCONNECT_GRACE_S,
        help="after a restart, how long a member with cancel-on-disconnect has to log back on before its orders "
             f"are cancelled (default {DEFAULT_CANCEL_ON_DISCONNECT_GRACE_S:g})")
    parser.add_argument("--tls-cert", metavar="FILE",
                        help="PEM certificate (chain): serve HTTPS and WSS, TLS 1.2 at least (with --tls-key; "
                             "default: plain HTTP, for loopback and tests)")
    parser.add_argument("--tls-key", metavar="FILE", help="PEM private key of --tls-cert")
    parser.add_argument("--time-scale", type=_time_scale, default=1.0,
                        help="run the calendar N times faster than the wall clock (demos and tests; default 1)")
    parser.add_argument("--calendar-start", type=_calendar_start, metavar="YYYY-MM-DDTHH:MM",
                        help="the calendar's time at start-up, in exchange time (with --time-scale; default: now)")
    parser.set_defaults(run=serve)
    return parser


def _non_negative_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 <= seconds <= 86_400:
        raise argparse.ArgumentTypeError(f"seconds must be from 0 to 86400: {text!r}")
    return seconds


def _time_scale(text: str) -> float:
    try:
        scale = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < scale <= 1_000_000:
        raise argparse.ArgumentTypeError(f"the time scale must be above 0 and at most 1000000: {text!r}")
    return scale


def _calendar_start(text: str) -> object:
    try:
        return parse_calendar_start(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _calendar_clock(args: argparse.Namespace, config: Config, data_dir: Path) -> CalendarClock | None:
    """The calendar driver's clock, or None when the operators run the day (``[calendar]
    automatic = false``)."""
    if not config.calendar.automatic:
        return None
    start = getattr(args, "calendar_start", None)
    start_ns = None if start is None else calendar_ns(start, config.calendar.utc_offset_hours)
    return calendar_clock(data_dir, getattr(args, "time_scale", 1.0), start_ns)


def serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    keep_files_private()  # files at rest are the service account's (exchange.app)
    warn_about_shared_paths(Path(args.data_dir))
    try:
        return asyncio.run(run(args))
    except (ConfigError, ProjectionAhead, JournalError, OSError) as error:
        # Expected failures (a locked data directory, a port in use, a bad configuration):
        # one line naming what to do (exchange.cli_errors); anything else is a bug and traced.
        said = explain(error, "serve", args.data_dir)
        if said is None:
            raise
        if isinstance(error, OSError) and error.errno == errno.EADDRINUSE:
            said = (f"error: {args.host}:{args.port} is already in use (another `exchange serve`, or another "
                    "program, listens there): stop it, or choose another --port (0 picks a free one)")
        print(said, file=sys.stderr)
        return 2


async def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    data_dir = Path(args.data_dir)
    try:
        tls = _tls(args)
    except TlsError as error:  # before anything is opened: one line, exit 2
        print(f"error: {error}", file=sys.stderr)
        return 2
    served = compose(
        config, data_dir, time.time_ns, clearing_url=args.clearing_db,
        operator_tokens_file=Path(args.operator_tokens) if args.operator_tokens else None,
        host=args.host, port=args.port, tls=tls,
        max_connections_per_member=args.max_connections_per_member, max_outbound=args.max_outbound,
        cancel_on_disconnect_grace_s=args.cancel_on_disconnect_grace_s,
        calendar=_calendar_clock(args, config, data_dir),
    )
    try:
        url = await served.start()
        restored = served.views.restored_seq
        print(f"exchange serving on {url} (members: {url.replace('http', 'ws', 1)}/ws); "
              f"state at seq {served.service.last_seq} (gateway views from "
              f"{f'the snapshot at seq {restored}' if restored else 'the whole journal'}); "
              f"operator tokens in {served.tokens_path}", flush=True)
        await wait_for_signal(served.hub)
        print("shutting down: telling clients, draining the queue, flushing the journal", flush=True)
        await served.stop()
    finally:
        served.close()
    return 0 if served.hub.fatal is None else 1


def _tls(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The TLS context of ``--tls-cert`` and ``--tls-key`` (both or neither); None: plain HTTP."""
    cert, key = getattr(args, "tls_cert", None), getattr(args, "tls_key", None)
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise TlsError("--tls-cert and --tls-key go together: give both, or neither for plain HTTP")
    return tls_context(cert, key)


async def wait_for_signal(hub: Hub) -> None:
    """Until SIGINT or SIGTERM, or the hub stopped on a broken invariant."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    waits = [asyncio.create_task(stop.wait()), asyncio.create_task(hub.failed.wait())]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for task in waits:
        task.cancel()


def main(argv: list[str] | None = None) -> int:
    """``exchange serve ...`` on its own (``serve`` as the first argument is optional)."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] != ["serve"]:
        arguments.insert(0, "serve")
    parser = argparse.ArgumentParser(prog="exchange")
    add_serve_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(arguments)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
