"""Frame budgets: how much one session, and one member, may send before the engine sees it.

The engine's risk gate keeps the order rate of record (``[risk.limits]`` ``orders_per_second``
and ``order_burst``: a token bucket on the engine's clock, reject 214, journalled and
replayed). That rule is deterministic but it runs after the journal: a member sending 10,000
frames a second got every one of them journalled and tracked. The budgets here sit in front
of it, in the gateway, on the wall clock, and refuse a frame *before* anything is queued for
the engine (error 13, ``THROTTLED``; nothing journalled, nothing tracked, the client order id
stays free).

Decisions:

* **Two token buckets per frame**: the session's own and its member's (shared by all the
  member's sessions, kept by the hub, so neither more connections nor reconnecting buys more).
  A frame passes only when both have a token, and then takes one from each; a refused frame
  takes none (a client that pauses gets its budget back at the full rate).
* **Every frame after logon counts**, whatever it says (orders, cancels, status queries,
  heartbeats): the cost to protect is the frame's. Frames refused as malformed count against
  the error budget instead (20 a minute per member, :class:`~exchange.gateway.member.wire.
  ErrorBudget`), which is far stricter.
* **Defaults are derived from the market's order rate** and kept above it on purpose, so the
  engine's reject 214 stays the rule of record for orders: a session may send 2 x
  ``orders_per_second`` frames a second (an order and a cancel for each order the rule
  allows) with bursts of 2 x ``order_burst``; a member, over all its sessions, twice that.
  The gateway does not follow per-member limits set intraday (``SetRiskLimits``): those stay
  the engine's. So a flooding member reaches the journal with at most its frame budget a
  second (by default 200 frames, of which at most 50 orders/s are accepted and the rest are
  journalled as reject 214), never with its whole flood.
* **A refused session pauses.** After an over-budget frame the session stops reading for the
  time the budget needs to refill one frame (:meth:`FrameBudget.wait_s`, at most a second):
  the client's further frames wait in its socket (TCP pushes back), so a flood costs the
  server a bounded number of frames a second, answered or taken, whatever the client sends.
* **Integers**: the buckets count nano-frames on a monotonic nanosecond clock (the hub's,
  which tests may freeze), as the risk gate's bucket counts nano-orders.
"""

from __future__ import annotations

from dataclasses import dataclass

from exchange.config import Config

NANO = 1_000_000_000  # nano-frames per frame: refills stay integers
MAX_PAUSE_S = 1.0


@dataclass(frozen=True)
class BudgetLimits:
    """The gateway's flood limits in force (see :class:`exchange.config.GatewayConfig`)."""

    session_per_second: int
    session_burst: int
    member_per_second: int
    member_burst: int
    member_max_pending: int

    @classmethod
    def of(cls, config: Config) -> BudgetLimits:
        """The configured limits; a field left out is derived from ``[risk.limits]``."""
        given, limits = config.gateway, config.risk.limits
        return cls(
            given.session_frames_per_second or 2 * limits.orders_per_second,
            given.session_frame_burst or 2 * limits.order_burst,
            given.member_frames_per_second or 4 * limits.orders_per_second,
            given.member_frame_burst or 4 * limits.order_burst,
            given.member_max_pending or 4 * limits.order_burst,
        )


class TokenBucket:
    """``per_second`` frames a second, up to ``burst`` at once; starts full."""

    __slots__ = ("per_second", "capacity", "tokens", "last_ns")

    def __init__(self, per_second: int, burst: int) -> None:
        assert per_second >= 1 and burst >= 1, (per_second, burst)
        self.per_second = per_second
        self.capacity = burst * NANO
        self.tokens = self.capacity
        self.last_ns: int | None = None

    def has_token(self, now_ns: int) -> bool:
        """Refill up to ``now_ns``; whether one frame may go."""
        if self.last_ns is not None and now_ns > self.last_ns:
            # nano-frames: per_second frames a second is per_second nano-frames a nanosecond
            self.tokens = min(self.capacity, self.tokens + (now_ns - self.last_ns) * self.per_second)
        if self.last_ns is None or now_ns > self.last_ns:
            self.last_ns = now_ns
        return self.tokens >= NANO

    def take(self) -> None:
        self.tokens -= NANO

    def wait_ns(self) -> int:
        """How long until one frame may go (0: now), as of the last refill."""
        missing = NANO - self.tokens
        return 0 if missing <= 0 else -(-missing // self.per_second)


class FrameBudget:
    """One session's budget: its own bucket and its member's."""

    def __init__(self, session: TokenBucket, member: TokenBucket) -> None:
        self.session = session
        self.member = member

    def spend(self, now_ns: int) -> str | None:
        """Take one frame from both buckets; else the name of the empty one (``"session"``
        or ``"member"``), and nothing is taken."""
        if not self.session.has_token(now_ns):
            return "session"
        if not self.member.has_token(now_ns):
            return "member"
        self.session.take()
        self.member.take()
        return None

    def wait_s(self) -> float:
        """How long the session should stop reading after a refused frame."""
        return min(MAX_PAUSE_S, max(self.session.wait_ns(), self.member.wait_ns()) / NANO)
