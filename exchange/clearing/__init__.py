"""Clearing: the start and the end of the trading day against the registry and the ledger."""
