"""The gateway: the exchange's aiohttp shell, behind a small service port.

* ``port`` - the Protocol the gateway asks of the running exchange (``ExchangePort``) and
  the structs its reads return; the composition root adapts the exchange to it.
* ``views`` - the gateway's projections of the engine's stream, built together.
* ``hub`` - the one queue into the exchange: group commit, routing, sessions, timers.
* ``server`` - the aiohttp application, the gateway's files, start and stop.
* ``member/`` - the member WebSocket: wire protocol, logon auth, sessions, order tracker,
  market data (``docs/protocol.md``).
* ``operator/`` - the operator HTTP API, its OpenAPI document, the role table, metrics and
  the regulator's alerts (``docs/operator-api.md``).

The package imports nothing itself, so importing one module never drags in the others.
"""
