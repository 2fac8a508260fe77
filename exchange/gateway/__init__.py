"""The member gateway: the protocol's pure layer, without I/O.

``wire`` (messages, decoding, encoding, conversions to engine commands), ``auth`` (API keys
and signed logons), ``orders`` (execution reports and L2 depth from engine events) and
``market_data`` (the public feed). The aiohttp server that does the I/O wires these to the
engine; ``docs/protocol.md`` is the protocol as members read it.
"""

from exchange.gateway.auth import (
    AuthError,
    AuthFailure,
    Authenticator,
    CredentialRecord,
    CredentialState,
    CredentialStore,
    IssuedCredential,
    sign_logon,
)
from exchange.gateway.market_data import MarketData
from exchange.gateway.orders import Depth, LevelChanges, OrderTracker, TrackedOrder, execution_report
from exchange.gateway.wire import (
    ErrorBudget,
    ErrorCode,
    InboundMessage,
    OutboundMessage,
    WireError,
    decode_inbound,
    decode_outbound,
    encode,
    format_price,
    parse_price,
)

__all__ = [
    "AuthError", "AuthFailure", "Authenticator", "CredentialRecord", "CredentialState",
    "CredentialStore", "Depth", "ErrorBudget", "ErrorCode", "InboundMessage", "IssuedCredential",
    "LevelChanges", "MarketData", "OrderTracker", "OutboundMessage", "TrackedOrder", "WireError",
    "decode_inbound", "decode_outbound", "encode", "execution_report", "format_price",
    "parse_price", "sign_logon",
]
