"""Simulated members in one place: one set of strategies, three ways to run them.

* :mod:`exchange.sim.strategies`: what a member (and the operator) does next, pure and seeded;
* :mod:`exchange.sim.members`: the seeded cast (styles, kinds, allocations, holdings);
* :mod:`exchange.sim.in_process`: the reproducible session on an :class:`~exchange.app.Exchange`;
* the served run over real WebSockets: :mod:`exchange.sim.served` (the command and the run),
  :mod:`exchange.sim.served_exchange` (starting the served exchange, in one function),
  :mod:`exchange.sim.member_client` (a member's WebSocket session), :mod:`exchange.sim.operator`
  (the operator's day over HTTP), :mod:`exchange.sim.checks` (the result and its checks),
  :mod:`exchange.sim.report` (the printed summary); the progress bar is :mod:`exchange.progress`;
* ``bench/gateway_load.py`` drives the same strategies as a load generator.

Nothing is imported here, so the in-process session does not load aiohttp.
"""
