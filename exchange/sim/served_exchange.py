"""Starting the served exchange for a simulated run, as ``exchange serve`` composes it.

The one place the served run touches the gateway's composition (:func:`exchange.serve.compose`:
the exchange with the gateway's views, the service port, the hub and the server): that API is
being reworked, so everything that depends on it is this one function, and the rest of the run
sees only a URL, the operator's role tokens and whether the hub stopped.
"""

from __future__ import annotations

import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from collections.abc import AsyncIterator, Callable

from exchange.config import Config
from exchange.serve import compose


@dataclass(frozen=True)
class ServedExchange:
    url: str  # http://127.0.0.1:PORT; members connect to URL/ws
    tokens: dict[str, str]  # role -> bearer token (admin, clearing, regulator)
    fatal: Callable[[], BaseException | None]  # what stopped the hub, if anything did


@asynccontextmanager
async def served_exchange(config: Config, data_dir: Path, clearing_url: str | None) -> AsyncIterator[ServedExchange]:
    """The exchange opened over ``data_dir`` (its registry already seeded), served on
    127.0.0.1 at a free port for the body of the ``async with``; closed after it."""
    served = compose(config, data_dir, time.time_ns, clearing_url=clearing_url)
    try:
        url = await served.start()
        try:
            yield ServedExchange(url, served.tokens, lambda: served.hub.fatal)
        finally:
            await served.stop()
    finally:
        served.close()
