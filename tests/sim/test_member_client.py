"""A served member sends the shared strategies' intents as wire messages."""

from __future__ import annotations

from typing import Any

from exchange.gateway.member.wire import AmendRequest, CancelRequest, MassCancelRequest, NewOrder
from exchange.model import OrderType, Side, TimeInForce
from exchange.sim.member_client import SentOrder, SimMember
from exchange.progress import Progress
from exchange.sim.strategies import AmendIntent, CancelIntent, MassCancelIntent, MemberIntent, NewOrderIntent, OperatorTurn


def member() -> SimMember:
    client = SimMember("M0001", "trader", 7, ["CEA-2025"], 4, Progress(0, False))
    client.begin_day("2026-11-23", {"CEA-2025": (5_820, 5_238, 6_402)})
    return client


def request(client: SimMember, intent: MemberIntent) -> tuple[Any, str]:
    """The wire message of an intent that is the member's own (not an operator's turn)."""
    sent = client.request_for(intent)
    assert sent is not None, intent
    return sent


def test_intents_become_wire_messages() -> None:
    client = member()
    order, kind = request(client, NewOrderIntent("CEA-2025", Side.BUY, 100, 5_810, OrderType.LIMIT, TimeInForce.GTC))
    assert kind == "order" and order == NewOrder("o1", "CEA-2025", "buy", 100, "58.10", "limit", "gtc")
    market, _ = request(client, NewOrderIntent("CEA-2025", Side.SELL, 10, None, OrderType.MARKET, TimeInForce.FOK))
    assert (market.order_type, market.tif) == ("market", "fok")
    assert client.request_for(OperatorTurn("M0001", "CEA-2025")) is None
    assert client.request_for(MassCancelIntent(None)) == (MassCancelRequest(None), "mass_cancel")


def test_a_zero_quantity_goes_out_as_a_cancel_not_its_own() -> None:
    cancel, kind = request(member(), NewOrderIntent("CEA-2025", Side.BUY, 0, 5_820, deliberately_bad=True))
    assert kind == "cancel" and isinstance(cancel, CancelRequest) and isinstance(cancel.order_id, int) and cancel.order_id >= 1


def test_cancels_and_amends_name_an_open_order() -> None:
    client = member()
    open_order = SentOrder("o9", "CEA-2025", "buy", "day", 5_800, 100)
    open_order.order_id, open_order.qty_t = 42, 100
    cancel, _ = request(client, CancelIntent("CEA-2025", open_order))
    assert cancel.client_order_id == "o9" or cancel.order_id == 42
    amend, kind = request(client, AmendIntent("CEA-2025", open_order, 50, 5_805))
    assert kind == "amend" and isinstance(amend, AmendRequest) and (amend.qty, amend.price) == (50, "58.05")


def test_a_member_never_sends_a_turn_that_is_the_operators() -> None:
    client = member()
    kinds = {client.next_request()[1] for _ in range(2_000)}
    assert kinds <= {"order", "cancel", "amend", "mass_cancel"} and "order" in kinds
