"""Connections before aiohttp sees them: caps at accept, the header timeout, TLS, quiet logs.

Issue 10, finding 1: a client that never logs on could hold descriptors until the server
could no longer open its own files. The defence sits in front of aiohttp, at the protocol a
listening socket hands each accepted connection to (:class:`Guard`), so a refusal costs one
``accept`` and one ``close`` and nothing is parsed.

Decisions:

* **Two caps, counted at accept** (:class:`ConnectionGate`): connections in total and per
  source address (IPv4 or IPv6, as the socket reports it). Over the per-address cap the new
  connection is closed at once. Over the total cap the gate first **evicts the oldest
  connection that has not yet sent a complete request head** (a silent or half-sent
  connection has cost its client one connect, and is cheap to drop); only when every
  connection is past its head is the new one refused. So a table full of idle attackers
  cannot keep an honest client out: a fresh connection sends its head within a round trip
  and is the youngest, not the oldest. Refused and evicted connections are closed without
  an answer (an HTTP answer would mean reading the request first). aiohttp's protocol, and
  the task it starts, is made only when a connection's first bytes arrive, so a thousand
  silent connections cost a thousand small objects and timers, not a thousand tasks.
* **The total cap protects the stores' descriptors.** At start the cap is the smaller of
  ``[gateway] max_connections`` and ``RLIMIT_NOFILE`` minus the descriptors already open
  (the journal and the stores are opened before the gateway serves) minus
  ``[gateway] descriptor_reserve``. Connections can therefore never take the descriptors a
  store, a snapshot or an atomic file write needs, and a limit too small to leave any room
  is a configuration error at start, not a failure under load.
* **The header timeout is the gate's; the others are aiohttp's or the server's.** A
  connection's first request head (the TLS handshake included) must be complete within
  ``header_timeout_ms`` of the accept, else it is closed: this covers silent connections and
  slowloris clients alike. Each connection's timer is drawn between 3/4 and all of the
  timeout, so a burst of connections does not end (and come back) as one burst. (In the soak,
  1,000 idle and 100 slowloris clients cut by the 10 s default and reconnecting at once put
  170-660 ms into the honest members' p99 on a loaded 2-core machine, against 35-45 ms
  without them; the spread did not remove it, and whether the cost is the server's or the
  attackers' process on the same cores is not yet known: ``bench/soak_bench.py`` holds its
  attackers with a long header timeout meanwhile.) The gate spots the end of the head (a blank line) in the bytes it
  passes on and stops looking after the first one. Between requests on a kept-alive
  connection aiohttp's ``keepalive_timeout`` (``idle_timeout_ms``) applies; request bodies
  and WebSocket logons have their own timers in :mod:`exchange.gateway.server`.
* **TLS after the gate.** With a certificate the gate upgrades an admitted connection itself
  (``loop.start_tls``), so connections still in their handshake are counted and capped like
  any other, and the header timer bounds the handshake too.
* **Repeated errors are one line per interval** (:class:`RepeatedLog`): refusals, evictions
  and timeouts are counted and logged at most once every ``LOG_INTERVAL_S`` per kind, with
  how many were folded into the line. The event loop's "out of system resource" errors at
  ``accept`` (EMFILE, ENFILE: asyncio pauses accepting for a second and retries) go through
  :func:`quiet_loop_errors`, one line per interval without a traceback, so a descriptor
  shortage can neither fill the disk with log nor end the process.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import random
import resource
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from exchange.config import ConfigError, GatewayConfig

log = logging.getLogger("exchange.gateway.connections")

LOG_INTERVAL_S = 10.0
_SHORTAGE_ERRNOS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
_HEAD_ENDS = (b"\r\n\r\n", b"\n\n")


@dataclass(frozen=True)
class ConnectionLimits:
    """The ``[gateway]`` connection settings (see :class:`exchange.config.GatewayConfig`)."""

    max_connections: int
    max_connections_per_address: int
    descriptor_reserve: int
    header_timeout_ms: int
    body_timeout_ms: int
    idle_timeout_ms: int
    logon_timeout_ms: int

    @classmethod
    def of(cls, config: GatewayConfig | None = None) -> ConnectionLimits:
        """The configured settings (the defaults without a configuration)."""
        config = config if config is not None else GatewayConfig()
        return cls(config.max_connections, config.max_connections_per_address, config.descriptor_reserve,
                   config.header_timeout_ms, config.body_timeout_ms, config.idle_timeout_ms,
                   config.logon_timeout_ms)

    def total_cap(self, descriptors_in_use: int | None = None) -> int:
        """``max_connections``, lowered to what the descriptor limit leaves after the
        descriptors already open and the reserve."""
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return self.max_connections
        in_use = open_descriptors() if descriptors_in_use is None else descriptors_in_use
        room = soft - in_use - self.descriptor_reserve
        if room < 1:
            raise ConfigError(
                f"[gateway] descriptor_reserve: the descriptor limit (RLIMIT_NOFILE {soft}) leaves no room for "
                f"connections after {in_use} open descriptors and a reserve of {self.descriptor_reserve}")
        return min(self.max_connections, room)


def open_descriptors() -> int:
    """How many descriptors this process has open (0 where the system cannot say)."""
    try:
        return len(os.listdir("/dev/fd")) - 1  # not the one the listing itself used
    except OSError:
        return 0


class RepeatedLog:
    """At most one line per kind of event per interval; the next line says how many were
    folded into silence since the last one."""

    def __init__(self, logger: logging.Logger, interval_s: float = LOG_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger, self.interval_s, self.clock = logger, interval_s, clock
        self._quiet_until: dict[str, float] = {}
        self._folded: dict[str, int] = {}

    def warning(self, kind: str, message: str, *args: object) -> None:
        now = self.clock()
        if now < self._quiet_until.get(kind, float("-inf")):
            self._folded[kind] = self._folded.get(kind, 0) + 1
            return
        folded = self._folded.pop(kind, 0)
        if folded:
            message += f" (and {folded} more since the last such line)"
        self.logger.warning(message, *args)
        self._quiet_until[kind] = now + self.interval_s


def quiet_loop_errors(repeated: RepeatedLog) -> Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None]:
    """An event loop exception handler: a descriptor or memory shortage is one line per
    interval without a traceback; anything else goes to the loop's default handler."""

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        if isinstance(error, OSError) and error.errno in _SHORTAGE_ERRNOS:
            repeated.warning("shortage", "%s: %s", context.get("message", "out of system resource"), error)
        else:
            loop.default_exception_handler(context)

    return handle


@dataclass
class GateCounts:
    """What the gate did since the server started (tests and the log read these)."""

    admitted: int = 0
    refused_total: int = 0
    refused_address: int = 0
    evicted: int = 0
    header_timeouts: int = 0
    tls_failures: int = 0


class ConnectionGate:
    """Counts open connections, in total and per source address, and admits or refuses each
    new one (see the module's decisions)."""

    def __init__(self, limits: ConnectionLimits, total_cap: int, repeated: RepeatedLog | None = None) -> None:
        self.limits, self.total_cap = limits, total_cap
        self.repeated = repeated or RepeatedLog(log)
        self.per_address: dict[str, int] = {}
        self.open = 0
        self._before_head: dict[Guard, None] = {}  # oldest first: the eviction order
        self.counts = GateCounts()

    def admit(self, guard: Guard, address: str) -> bool:
        if self.per_address.get(address, 0) >= self.limits.max_connections_per_address:
            self.counts.refused_address += 1
            self.repeated.warning("address", "refused a connection from %s: %d connections from it already",
                                  address, self.limits.max_connections_per_address)
            return False
        if self.open >= self.total_cap and not self._evict_oldest():
            self.counts.refused_total += 1
            self.repeated.warning("total", "refused a connection from %s: %d connections open (the cap)",
                                  address, self.total_cap)
            return False
        self.open += 1
        self.per_address[address] = self.per_address.get(address, 0) + 1
        self._before_head[guard] = None
        self.counts.admitted += 1
        return True

    def _evict_oldest(self) -> bool:
        oldest = next(iter(self._before_head), None)
        if oldest is None:
            return False
        self.counts.evicted += 1
        self.repeated.warning("evicted", "closed the oldest connection without a request (%s): the cap is reached",
                              oldest.address)
        oldest.drop()
        return True

    def header_delay_s(self) -> float:
        """Between 3/4 and all of the header timeout: connections made in one burst (a
        thousand idle clients) must not all end, and reconnect, in the same instant."""
        return self.limits.header_timeout_ms / 1000 * (1 - random.random() / 4)

    def head_seen(self, guard: Guard) -> None:
        self._before_head.pop(guard, None)

    def release(self, guard: Guard) -> None:
        self._before_head.pop(guard, None)
        self.open -= 1
        left = self.per_address[guard.address] - 1
        if left:
            self.per_address[guard.address] = left
        else:
            del self.per_address[guard.address]

    def header_timed_out(self, guard: Guard) -> None:
        self.counts.header_timeouts += 1
        self.repeated.warning("header", "closed a connection from %s: no complete request head within %d ms",
                              guard.address, self.limits.header_timeout_ms)


class Guard(asyncio.Protocol):
    """One accepted connection: admitted by the gate or closed; then (after the TLS handshake,
    if any) handed to aiohttp's protocol at its first bytes, whose events it passes on."""

    def __init__(self, gate: ConnectionGate, make_inner: Callable[[], asyncio.Protocol],
                 tls: ssl.SSLContext | None) -> None:
        self.gate, self.make_inner, self.tls = gate, make_inner, tls
        self.address = ""
        self.inner: asyncio.Protocol | None = None
        self.socket_transport: asyncio.Transport | None = None
        self._transport: asyncio.Transport | None = None  # what aiohttp will write to (TLS's, if any)
        self._admitted = False  # counted by the gate, until released
        self._head_seen = False
        self._tail = b""  # the last bytes seen, for a blank line split across reads
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.socket_transport = transport
        peer = transport.get_extra_info("peername")
        self.address = str(peer[0]) if peer else ""
        if not self.gate.admit(self, self.address):
            transport.abort()
            return
        self._admitted = True
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.gate.header_delay_s(), self._header_timeout)
        if self.tls is None:
            self._transport = transport
        else:
            transport.pause_reading()  # the ClientHello waits for start_tls, not for us
            loop.create_task(self._start_tls(transport))

    async def _start_tls(self, transport: asyncio.Transport) -> None:
        assert self.tls is not None
        try:
            secured = await asyncio.get_running_loop().start_tls(
                transport, self, self.tls, server_side=True,
                ssl_handshake_timeout=self.gate.limits.header_timeout_ms / 1000)
        except (OSError, asyncio.CancelledError):  # SSLError, a reset, the handshake timeout
            self.gate.counts.tls_failures += 1
            transport.abort()
            self._release()
            return
        if secured is None or not self._admitted:  # dropped during the handshake
            transport.abort()
            return
        self._transport = secured

    def data_received(self, data: bytes) -> None:
        if not self._head_seen:
            self._look_for_head(data)
        if self.inner is None and self._transport is not None:
            # aiohttp's protocol (and its task) only once a client says something: a silent
            # connection costs this object and a timer, however many there are
            self.inner = self.make_inner()
            self.inner.connection_made(self._transport)
        if self.inner is not None:
            self.inner.data_received(data)

    def _look_for_head(self, data: bytes) -> None:
        seen = self._tail + data
        if any(end in seen for end in _HEAD_ENDS):
            self._head_seen = True
            self._cancel_timer()
            self.gate.head_seen(self)
        self._tail = seen[-3:]

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._release()
        self._transport = None
        inner, self.inner = self.inner, None
        if inner is not None:
            inner.connection_lost(exc)

    # -- ending it ----------------------------------------------------------------------------

    def _header_timeout(self) -> None:
        self._timer = None
        if not self._head_seen and self._admitted:
            self.gate.header_timed_out(self)
            self.drop()

    def drop(self) -> None:
        """Close at once, without an answer; the gate forgets it now."""
        self._release()
        if self.socket_transport is not None:
            self.socket_transport.abort()

    def _release(self) -> None:
        self._cancel_timer()
        if self._admitted:
            self._admitted = False
            self.gate.release(self)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class TlsError(ValueError):
    """The certificate or key cannot serve: said in one line, naming the file or the problem."""


def tls_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """A server context for ``--tls-cert`` and ``--tls-key``: TLS 1.2 at least. A file that is
    missing, unreadable, not PEM, or a key that does not match the certificate is a
    :class:`TlsError` naming the problem."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    for path in (cert_file, key_file):
        try:
            with open(path, "rb"):
                pass
        except OSError as error:
            raise TlsError(f"cannot read {path}: {error.strerror}") from None
    try:
        context.load_cert_chain(cert_file, key_file)
    except ssl.SSLError as error:
        raise TlsError(f"--tls-cert {cert_file} with --tls-key {key_file}: {_tls_problem(error)}") from None
    return context


def _tls_problem(error: ssl.SSLError) -> str:
    reason = f"{error.reason} {error}".lower()
    if "key values mismatch" in reason or "key_values_mismatch" in reason:
        return "the key does not match the certificate"
    if "pem" in reason or "no start line" in reason or "no_start_line" in reason:
        return "not a PEM certificate and key (is one of them damaged, or the two swapped?)"
    return error.reason or str(error)
