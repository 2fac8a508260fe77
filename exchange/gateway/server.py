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

Stopping (:meth:`GatewayServer.stop`): stop accepting connections, tell every session
(``session_closing``: ``server_shutdown``; their orders stay: no cancel-on-disconnect), let
the hub finish its queue and flush the journal, then close the stores.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from pathlib import Path
from collections.abc import Callable, Mapping

import msgspec
from aiohttp import web

from exchange import files
from exchange.gateway.hub import Hub
from exchange.gateway.member.auth import MASTER_SECRET_BYTES, CredentialState, CredentialStore, NonceLog
from exchange.gateway.member.session import HARD_FRAME_LIMIT, Session
from exchange.gateway.operator import api as operator_api
from exchange.gateway.operator.roles import OperatorTokens

log = logging.getLogger("exchange.gateway.server")

SECRET_FILE = "gateway-secret"
TOKENS_FILE = "operator-tokens.json"
CREDENTIALS_FILE = "credentials.json"
NONCES_FILE = "logon-nonces"
MAX_BODY_BYTES = 64 * 1024


# -- the application ---------------------------------------------------------------------------


def build_app(hub: Hub, tokens: Mapping[str, str] | OperatorTokens,
              save_tokens: Callable[[bytes], None] | None = None) -> web.Application:
    """``save_tokens`` writes the tokens file after a rotation; without it (tokens handed in
    as a mapping, as the benchmarks do) a rotation lives in memory only."""
    app = web.Application(middlewares=[operator_api.authorize], client_max_size=MAX_BODY_BYTES,
                          handler_args={"logger": operator_api.REQUEST_LOG})
    app[operator_api.HUB] = hub
    app[operator_api.TOKENS] = tokens if isinstance(tokens, OperatorTokens) else OperatorTokens.of(tokens)
    app[operator_api.SAVE_TOKENS] = save_tokens or (lambda data: None)
    app.router.add_route("GET", "/ws", websocket)
    operator_api.add_routes(app)
    return app


async def websocket(request: web.Request) -> web.StreamResponse:
    """One member connection; the session checks each message against the role table."""
    hub = request.app[operator_api.HUB]
    ws = web.WebSocketResponse(
        compress=False, max_msg_size=HARD_FRAME_LIMIT, decode_text=False, autoping=True, timeout=2.0,
    )
    await ws.prepare(request)
    await Session(hub, ws, request).run()
    return ws


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
    """The hub and the aiohttp site on one host and port (port 0: any free one)."""

    def __init__(self, hub: Hub, tokens: Mapping[str, str] | OperatorTokens, host: str = "127.0.0.1", port: int = 0,
                 save_tokens: Callable[[bytes], None] | None = None) -> None:
        self.hub, self.host, self.port = hub, host, port
        self.app = build_app(hub, tokens, save_tokens)
        self.runner = web.AppRunner(self.app, handle_signals=False, access_log=None, shutdown_timeout=2.0)

    async def start(self) -> str:
        await self.hub.start()
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.host, self.port)
        await site.start()
        self.port = self.runner.addresses[0][1]
        return self.url

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def stop(self) -> None:
        self.hub.close_all_sessions("server_shutdown")
        await asyncio.sleep(0.05)  # let the writers send session_closing
        await self.hub.stop()
        await self.runner.cleanup()
