"""The cash ledger's limits.

    Amounts are ``int`` fen, 0 < amount <= ``MAX_AMOUNT_FEN`` (the largest notional, 1e17);
    every counter stays <= ``MAX_BALANCE_FEN`` (2**62, so even the sum of two fits a BIGINT);
    ids are at most 128 characters, account ids 64 (member ids 32), memos 256; codes are
    1..65535 (``TransferCode`` names the ones the exchange uses); a batch holds at most
    ``MAX_BATCH_OPERATIONS`` operations.
"""

from __future__ import annotations

from exchange.model.units import MAX_NOTIONAL_FEN

MAX_AMOUNT_FEN = MAX_NOTIONAL_FEN
MAX_BALANCE_FEN = 2**62
MAX_BATCH_OPERATIONS = 2_000_000
MAX_TRANSFER_ID_CHARS = 128
MAX_ACCOUNT_ID_CHARS = 64
MAX_MEMBER_ID_CHARS = 32
MAX_MEMO_CHARS = 256
MAX_CODE = 65_535
APPLY_ATTEMPTS = 3
PG_CHUNK_ROWS = 100_000  # bounds the size of one array parameter
