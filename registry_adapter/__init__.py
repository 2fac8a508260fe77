"""The port to the allowance registry (登记簿) and its implementations.

It speaks for an outside system, so it imports nothing from ``exchange``: the port (a
``typing.Protocol`` with its typed errors), an in-memory fake, the reference SQL registry
with the measures' rules, its operator commands and a set-up for demonstrations.
"""
