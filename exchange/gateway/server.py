"""The aiohttp application: the member WebSocket at ``/ws`` and the operator API, plus the
gateway's files in the data directory and an orderly start and stop.

Files (all mode 0600, replaced atomically and durably by :func:`exchange.files.write_atomic`:
a temporary name, fsync, rename, fsync of the directory, so an acknowledged issue or
revocation cannot revert after a power loss):

* ``gateway-secret``: the credential store's 32-byte master secret (hex), made at first start.
  Every member's API secret derives from it; losing it invalidates every key.
* ``operator-tokens.json``: ``{"admin": ..., "clearing": ..., "regulator": ...}``, 32 random
  bytes each (hex), made at first start unless the operator hands in a file of their own;
  rewritten by a rotation (``POST /admin/tokens/{role}/rotate``), when a role's entry may
  become a list of tokens with expiries (:class:`~exchange.gateway.operator.roles.OperatorTokens`).
* ``credentials.json``: the credential records (key id, member, fingerprint, revoked), no
  secrets; rewritten after every issue and revoke so a restart keeps them.
* ``logon-nonces``: the nonces of accepted logons still inside the replay window, one line
  each, appended and fsynced before the logon is answered, so a logon captured before a
  restart is refused after it (:class:`exchange.gateway.member.auth.NonceLog`).

Connections (:mod:`exchange.gateway.connections`): the listening socket hands every accepted
connection to a :class:`~exchange.gateway.connections.Guard`, which enforces the connection
caps and the header timeout before aiohttp parses a byte, and does the TLS handshake when
the server has a certificate (``https`` and ``wss``). Here, in front of the handlers: a
request body must be complete within ``body_timeout_ms`` of its head (else 408 and the
connection is closed; :func:`read_body_in_time`), a kept-alive connection idle for
``idle_timeout_ms`` is closed (aiohttp's ``keepalive_timeout``), and a WebSocket that has not
logged on within ``logon_timeout_ms`` of its upgrade is told ``session_closing``
(``logon_timeout``) and closed. While serving, the event loop's descriptor-shortage errors
are one log line per interval (:func:`~exchange.gateway.connections.quiet_loop_errors`).

Stopping (:meth:`GatewayServer.stop`): stop accepting connections, tell every session
(``session_closing``: ``server_shutdown``; their orders stay: no cancel-on-disconnect), let
the hub finish its queue and flush the journal, then close the stores.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import ssl
from pathlib import Path
from collections.abc import Awaitable, Callable, Mapping

import msgspec
from aiohttp import web

from exchange import files
from exchange.gateway.connections import ConnectionGate, ConnectionLimits, Guard, RepeatedLog, quiet_loop_errors
from exchange.gateway.hub import Hub
from exchange.gateway.member.auth import MASTER_SECRET_BYTES, CredentialState, CredentialStore, NonceLog
from exchange.gateway.member.session import HARD_FRAME_LIMIT, Session
from exchange.gateway.operator import api as operator_api
from exchange.gateway.operator.roles import ANONYMOUS, OperatorTokens

log = logging.getLogger("exchange.gateway.server")

SECRET_FILE = "gateway-secret"
TOKENS_FILE = "operator-tokens.json"
CREDENTIALS_FILE = "credentials.json"
NONCES_FILE = "logon-nonces"
MAX_BODY_BYTES = 64 * 1024
LIMITS = web.AppKey("limits", ConnectionLimits)


# -- the application ---------------------------------------------------------------------------


def build_app(hub: Hub, tokens: Mapping[str, str] | OperatorTokens,
              save_tokens: Callable[[bytes], None] | None = None, audit_path: Path | None = None,
              limits: ConnectionLimits | None = None) -> web.Application:
    """``save_tokens`` writes the tokens file after a rotation; without it (tokens handed in
    as a mapping, as the benchmarks do) a rotation lives in memory only. ``audit_path``: the
    operators' audit log (``operator-audit.jsonl``; None: kept in memory only)."""
    limits = limits or ConnectionLimits.of()
    app = web.Application(middlewares=[read_body_in_time, operator_api.authorize], client_max_size=MAX_BODY_BYTES,
                          handler_args={"logger": operator_api.REQUEST_LOG,
                                        "keepalive_timeout": limits.idle_timeout_ms / 1000,
                                        # after an answer given before the body was read (401,
                                        # 408, 413), aiohttp reads on and discards it this long
                                        "lingering_time": limits.body_timeout_ms / 1000})
    app[LIMITS] = limits
    app[operator_api.HUB] = hub
    app[operator_api.TOKENS] = tokens if isinstance(tokens, OperatorTokens) else OperatorTokens.of(tokens)
    app[operator_api.SAVE_TOKENS] = save_tokens or (lambda data: None)
    app.router.add_route("GET", "/ws", websocket)
    operator_api.add_routes(app, audit_path)
    return app


async def websocket(request: web.Request) -> web.StreamResponse:
    """One member connection; the session checks each message against the role table."""
    hub = request.app[operator_api.HUB]
    ws = web.WebSocketResponse(
        compress=False, max_msg_size=HARD_FRAME_LIMIT, decode_text=False, autoping=True, timeout=2.0,
    )
    await ws.prepare(request)
    session = Session(hub, ws, request)
    timeout_s = request.app[LIMITS].logon_timeout_ms / 1000
    timer = asyncio.get_running_loop().call_later(timeout_s, _logon_overdue, session)
    try:
        await session.run()
    finally:
        timer.cancel()
    return ws


def _logon_overdue(session: Session) -> None:
    if session.role == ANONYMOUS and session.closing is None:
        session.close("logon_timeout")


@web.middleware
async def read_body_in_time(request: web.Request,
                            handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """Read a request's body (up to ``MAX_BODY_BYTES``) before anything else, within the body
    timeout: a client that stalls mid-body gets 408, nothing runs, and its connection is
    closed. Outermost, so that no later read (a handler's, the audit log's, even for a call
    refused 401) can wait on the client: aiohttp keeps the body read here for them. A body
    over the limit is left to :func:`~exchange.gateway.operator.api.authorize` to answer (its
    JSON 413): the stream then raises that error again at once for whoever reads it."""
    if request.can_read_body:
        timeout_s = request.app[LIMITS].body_timeout_ms / 1000
        try:
            await asyncio.wait_for(request.read(), timeout_s)
        except TimeoutError:
            response = operator_api.error_response(408, f"the request body did not arrive within {timeout_s:g} s")
            response.force_close()
            return response
        except web.HTTPException as error:  # 413
            request.content.set_exception(error)
    return await handler(request)


# -- files -------------------------------------------------------------------------------------


def master_secret(data_dir: Path) -> bytes:
    path = data_dir / SECRET_FILE
    if not path.exists():
        files.write_atomic(path, secrets.token_bytes(MASTER_SECRET_BYTES).hex().encode())
    secret = bytes.fromhex(path.read_text().strip())
    assert len(secret) >= MASTER_SECRET_BYTES, f"{path} holds fewer than 32 bytes"
    return secret


def operator_token_store(data_dir: Path, given: Path | None = None) -> tuple[OperatorTokens, Path]:
    """The role tokens (with their expiries) and the file they are in: ``given``, else made at
    first start. The file's format is :class:`exchange.gateway.operator.roles.OperatorTokens`'s."""
    path = given or data_dir / TOKENS_FILE
    if given is None and not path.exists():
        files.write_atomic(path, OperatorTokens.generate().encode())
    try:
        return OperatorTokens.decode(path.read_bytes()), path
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


def operator_tokens(data_dir: Path, given: Path | None = None) -> tuple[dict[str, str], Path]:
    """Each role's newest token and the file they are in (see :func:`operator_token_store`)."""
    tokens, path = operator_token_store(data_dir, given)
    return tokens.newest(), path


def tokens_writer(path: Path) -> Callable[[bytes], None]:
    """What saves the tokens file after a rotation."""
    return lambda data: files.write_atomic(path, data)


def credential_store(data_dir: Path) -> tuple[CredentialStore, Callable[[], None]]:
    """The store with its persisted records and its logon nonce log, and the function that
    saves the records."""
    store = CredentialStore(master_secret(data_dir), nonce_log=NonceLog(data_dir / NONCES_FILE))
    path = data_dir / CREDENTIALS_FILE
    if path.exists():
        store.restore(msgspec.json.decode(path.read_bytes(), type=CredentialState))

    def save() -> None:
        files.write_atomic(path, msgspec.json.encode(store.state()))

    return store, save


# -- start and stop ------------------------------------------------------------------------------


class GatewayServer:
    """The hub and the listening socket on one host and port (port 0: any free one), each
    connection through the gate (:mod:`exchange.gateway.connections`); HTTPS and WSS given
    ``tls``."""

    def __init__(self, hub: Hub, tokens: Mapping[str, str] | OperatorTokens, host: str = "127.0.0.1", port: int = 0,
                 save_tokens: Callable[[bytes], None] | None = None, audit_path: Path | None = None,
                 limits: ConnectionLimits | None = None, tls: ssl.SSLContext | None = None) -> None:
        self.hub, self.host, self.port, self.tls = hub, host, port, tls
        self.limits = limits or ConnectionLimits.of()
        self.app = build_app(hub, tokens, save_tokens, audit_path, self.limits)
        self.runner = web.AppRunner(self.app, handle_signals=False, access_log=None, shutdown_timeout=2.0)
        self.gate: ConnectionGate | None = None
        self._listener: asyncio.Server | None = None
        self._loop_errors: tuple[asyncio.AbstractEventLoop, object] | None = None

    async def start(self) -> str:
        """Start the hub and listen. The stores are open by now, so the connection cap leaves
        them their descriptors (:meth:`ConnectionLimits.total_cap`)."""
        self.gate = ConnectionGate(self.limits, self.limits.total_cap(), RepeatedLog(log))
        await self.hub.start()
        await self.runner.setup()
        loop = asyncio.get_running_loop()
        self._loop_errors = (loop, loop.get_exception_handler())
        loop.set_exception_handler(quiet_loop_errors(RepeatedLog(log)))
        gate, inner, tls = self.gate, self.runner.server, self.tls
        assert inner is not None  # set up above
        self._listener = await loop.create_server(lambda: Guard(gate, inner, tls), self.host, self.port, backlog=512)
        self.port = self._listener.sockets[0].getsockname()[1]
        log.info("serving %s: at most %d connections (%d per address)", self.url, gate.total_cap,
                 self.limits.max_connections_per_address)
        return self.url

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()
        self.hub.close_all_sessions("server_shutdown")
        await asyncio.sleep(0.05)  # let the writers send session_closing
        await self.hub.stop()
        await self.runner.cleanup()
        if self._loop_errors is not None:
            loop, handler = self._loop_errors
            loop.set_exception_handler(handler)  # type: ignore[arg-type]
