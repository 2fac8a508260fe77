"""The trading venue of a city carbon market.

The core (``model``, ``book``, ``engine``) is deterministic and does no I/O; see
``../shared/docs/architecture.md`` for the shape of the house.
"""
