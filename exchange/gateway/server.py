"""The aiohttp application: the member WebSocket at ``/ws`` and the operator API, plus the
gateway's files in the data directory and an orderly start and stop.

Files (all mode 0600, written to a temporary name and renamed into place):

* ``gateway-secret``: the credential store's 32-byte master secret (hex), made at first start.
  Every member's API secret derives from it; losing it invalidates every key.
* ``operator-tokens.json``: ``{"admin": ..., "clearing": ..., "regulator": ...}``, 32 random
  bytes each (hex), made at first start unless the operator hands in a file of their own.
* ``credentials.json``: the credential records (key id, member, fingerprint, revoked), no
  secrets; rewritten after every issue and revoke so a restart keeps them.

Stopping (:meth:`GatewayServer.stop`): stop accepting connections, tell every session
(``session_closing``: ``server_shutdown``; their orders stay: no cancel-on-disconnect), let
the hub finish its queue and flush the journal, then close the stores.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
from pathlib import Path
from collections.abc import Callable

import msgspec
from aiohttp import web

from exchange.gateway.hub import Hub
from exchange.gateway.member.auth import MASTER_SECRET_BYTES, CredentialState, CredentialStore
from exchange.gateway.member.session import HARD_FRAME_LIMIT, Session
from exchange.gateway.operator import api as operator_api
from exchange.gateway.operator.roles import OPERATOR_ROLES

log = logging.getLogger("exchange.gateway.server")

SECRET_FILE = "gateway-secret"
TOKENS_FILE = "operator-tokens.json"
CREDENTIALS_FILE = "credentials.json"
MAX_BODY_BYTES = 64 * 1024


# -- the application ---------------------------------------------------------------------------


def build_app(hub: Hub, tokens: dict[str, str]) -> web.Application:
    app = web.Application(middlewares=[operator_api.authorize], client_max_size=MAX_BODY_BYTES)
    app[operator_api.HUB] = hub
    app[operator_api.TOKENS] = dict(tokens)
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


def write_private(path: Path, data: bytes) -> None:
    """Write a file only the owner can read, atomically (temporary name, fsync, rename)."""
    scratch = path.with_name(f".{path.name}.tmp")
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(scratch, 0o600)
    os.replace(scratch, path)


def master_secret(data_dir: Path) -> bytes:
    path = data_dir / SECRET_FILE
    if not path.exists():
        write_private(path, secrets.token_bytes(MASTER_SECRET_BYTES).hex().encode())
    secret = bytes.fromhex(path.read_text().strip())
    assert len(secret) >= MASTER_SECRET_BYTES, f"{path} holds fewer than 32 bytes"
    return secret


def operator_tokens(data_dir: Path, given: Path | None = None) -> tuple[dict[str, str], Path]:
    """The role tokens and the file they are in: ``given``, else made at first start."""
    path = given or data_dir / TOKENS_FILE
    if given is None and not path.exists():
        tokens = {role: secrets.token_hex(32) for role in OPERATOR_ROLES}
        write_private(path, json.dumps(tokens, indent=2).encode())
    tokens = json.loads(path.read_text())
    unknown = sorted(set(tokens) - set(OPERATOR_ROLES))
    if unknown or not all(isinstance(t, str) and len(t) >= 16 for t in tokens.values()):
        raise ValueError(f"{path}: roles are {', '.join(OPERATOR_ROLES)}, each with a token of 16 or more characters")
    return tokens, path


def credential_store(data_dir: Path) -> tuple[CredentialStore, Callable[[], None]]:
    """The store with its persisted records, and the function that saves them."""
    store = CredentialStore(master_secret(data_dir))
    path = data_dir / CREDENTIALS_FILE
    if path.exists():
        store.restore(msgspec.json.decode(path.read_bytes(), type=CredentialState))

    def save() -> None:
        write_private(path, msgspec.json.encode(store.state()))

    return store, save


# -- start and stop ------------------------------------------------------------------------------


class GatewayServer:
    """The hub and the aiohttp site on one host and port (port 0: any free one)."""

    def __init__(self, hub: Hub, tokens: dict[str, str], host: str = "127.0.0.1", port: int = 0) -> None:
        self.hub, self.host, self.port = hub, host, port
        self.app = build_app(hub, tokens)
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
