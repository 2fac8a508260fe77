"""The member side of the gateway: the WebSocket protocol (``wire``), logon authentication
(``auth``), one connection (``session``), the order tracker (``orders``) and the public feed
(``market_data``). ``docs/protocol.md`` is the protocol as members read it."""
