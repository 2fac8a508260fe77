"""The port to the allowance registry (登记簿) and its implementations.

It speaks for an outside system, so it imports nothing from ``exchange``. The port (a
``typing.Protocol`` with its typed errors) and the reference SQL registry arrive with the
clearing work; until then the trading core does not touch the registry.
"""
