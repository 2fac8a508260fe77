"""Logon authentication: API keys derived from one master secret, signed logons, no replays.

Decisions:

* **The server stores no member secret.** A member's API secret is derived:
  ``secret = HMAC-SHA256(master_secret, key_id)``. The server holds the master secret (32
  random bytes, handed in by the composition root) and, per key, only what it needs to
  decide and to audit: the key id, the member, when it was issued, whether it is revoked, and
  the SHA-256 fingerprint of the secret (to tell which secret a member holds without holding
  it). Stealing the credential file gives no way to log on; rotating the master secret
  invalidates every key at once.
* **A key id is 16 hex characters from** ``secrets.token_bytes(8)``; the source is injectable
  so that tests are deterministic. The secret (64 hex characters) is shown once, at issue; the
  HMAC key is the 32 bytes it encodes, not its text.
* **The logon signature** is ``hex(HMAC-SHA256(secret, f"{key_id}\\n{timestamp_ms}\\n{nonce}"))``.
  Key ids and nonces cannot contain a newline (the wire's patterns), so the string to sign is
  unambiguous. The timestamp bounds the replay window (±30 s by default) and the nonce closes
  it: a nonce is remembered per key until its timestamp leaves the window, after which a
  replay fails the clock check anyway. Nonces are only remembered for logons whose signature
  verified, so nobody without the secret can fill that memory, and at most
  ``max_nonces_per_key`` are kept per key (past that, logons are refused until old ones age
  out: forgetting a nonce early would let a replay through).
* **The authenticator's clock never runs backwards**: it uses the latest ``now_ms`` it has
  seen, so a clock stepped back cannot revive a nonce it already forgot.
* **Checks in this order:** unknown key, revoked key, clock skew, signature, nonce. The
  signature comes before the nonce so that an unsigned logon never touches nonce memory.
  Signatures are compared with :func:`hmac.compare_digest`.
* **What the client is told.** :class:`AuthError` carries the exact reason for the server's
  log; :meth:`AuthError.public_problem` says "invalid credentials" for an unknown key, a
  revoked key and a bad signature alike, so a client cannot probe which key ids exist.
  Secrets and signatures appear in no exception message and no repr.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import heapq
import secrets
from dataclasses import dataclass, field
from collections.abc import Callable

import msgspec

from exchange.gateway.member.wire import Logon

KEY_ID_BYTES = 8  # 16 hex characters
MASTER_SECRET_BYTES = 32
DEFAULT_MAX_SKEW_MS = 30_000
DEFAULT_MAX_NONCES_PER_KEY = 1_000

RandomBytes = Callable[[int], bytes]


# -- credentials ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class IssuedCredential:
    """What the operator hands the member once. The repr never shows the secret."""

    key_id: str
    secret_hex: str = field(repr=False)


class CredentialRecord(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What the server keeps per key: no secret, only its fingerprint."""

    key_id: str
    member_id: str
    created_ms: int
    revoked: bool
    fingerprint: str  # hex SHA-256 of the secret's bytes


class CredentialState(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Everything a :class:`CredentialStore` holds, for a file; records in key id order."""

    records: list[CredentialRecord]


def derive_secret(master_secret: bytes, key_id: str) -> bytes:
    """A member's API secret: reproducible from the master secret, never stored."""
    return hmac.new(master_secret, key_id.encode("utf-8"), hashlib.sha256).digest()


def fingerprint(secret: bytes) -> str:
    return hashlib.sha256(secret).hexdigest()


class CredentialStore:
    """API keys in memory (a dict by key id); ``state()``/``restore()`` for persistence."""

    def __init__(self, master_secret: bytes, random_bytes: RandomBytes = secrets.token_bytes) -> None:
        assert len(master_secret) >= MASTER_SECRET_BYTES, "the master secret needs 32 random bytes"
        self._master = master_secret
        self._random_bytes = random_bytes
        self._records: dict[str, CredentialRecord] = {}

    def __repr__(self) -> str:
        return f"CredentialStore({len(self._records)} keys)"

    def issue(self, member_id: str, now_ms: int) -> IssuedCredential:
        """A new key for the member; the secret is in the result and nowhere else."""
        key_id = self._new_key_id()
        secret = derive_secret(self._master, key_id)
        self._records[key_id] = CredentialRecord(key_id, member_id, now_ms, False, fingerprint(secret))
        return IssuedCredential(key_id, secret.hex())

    def _new_key_id(self) -> str:
        while True:
            key_id = self._random_bytes(KEY_ID_BYTES).hex()
            if key_id not in self._records:
                return key_id

    def revoke(self, key_id: str) -> None:
        """Refuse the key from now on; revoking twice is harmless. Unknown keys raise KeyError."""
        record = self._records[key_id]
        self._records[key_id] = msgspec.structs.replace(record, revoked=True)

    def lookup(self, key_id: str) -> CredentialRecord | None:
        return self._records.get(key_id)

    def secret(self, key_id: str) -> bytes:
        """The key's secret, derived on demand (for verifying a logon)."""
        return derive_secret(self._master, key_id)

    def keys_of(self, member_id: str) -> list[CredentialRecord]:
        return [r for _, r in sorted(self._records.items()) if r.member_id == member_id]

    def state(self) -> CredentialState:
        return CredentialState([record for _, record in sorted(self._records.items())])

    def restore(self, state: CredentialState) -> None:
        """Load persisted records into an empty store."""
        assert not self._records, "restore needs an empty store"
        self._records = {record.key_id: record for record in state.records}


# -- logon ---------------------------------------------------------------------------------------


def string_to_sign(key_id: str, timestamp_ms: int, nonce: str) -> bytes:
    return f"{key_id}\n{timestamp_ms}\n{nonce}".encode()


def logon_mac(secret: bytes, key_id: str, timestamp_ms: int, nonce: str) -> bytes:
    return hmac.new(secret, string_to_sign(key_id, timestamp_ms, nonce), hashlib.sha256).digest()


def sign_logon(secret: bytes, key_id: str, timestamp_ms: int, nonce: str) -> str:
    """The logon signature a client sends (hex, lower case)."""
    return logon_mac(secret, key_id, timestamp_ms, nonce).hex()


class AuthFailure(enum.Enum):
    UNKNOWN_KEY = "unknown key id"
    REVOKED_KEY = "revoked key"
    CLOCK_SKEW = "timestamp too far from the server's clock"
    BAD_SIGNATURE = "bad signature"
    NONCE_REUSED = "nonce already used"
    TOO_MANY_LOGONS = "too many logons with this key in the time window"


_PUBLIC_PROBLEMS = {
    AuthFailure.UNKNOWN_KEY: "invalid credentials",
    AuthFailure.REVOKED_KEY: "invalid credentials",
    AuthFailure.BAD_SIGNATURE: "invalid credentials",
}


class AuthError(Exception):
    """A refused logon. The message names the reason, never a secret or a signature."""

    def __init__(self, reason: AuthFailure) -> None:
        super().__init__(reason.value)
        self.reason = reason

    def public_problem(self) -> str:
        """What the client is told: no hint which key ids exist."""
        return _PUBLIC_PROBLEMS.get(self.reason, self.reason.value)


class _Nonces:
    """One key's nonces still inside the replay window: a set, and a heap by timestamp."""

    __slots__ = ("seen", "by_time")

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.by_time: list[tuple[int, str]] = []

    def forget_before(self, oldest_ms: int) -> None:
        while self.by_time and self.by_time[0][0] < oldest_ms:
            _, nonce = heapq.heappop(self.by_time)
            self.seen.discard(nonce)

    def add(self, timestamp_ms: int, nonce: str) -> None:
        self.seen.add(nonce)
        heapq.heappush(self.by_time, (timestamp_ms, nonce))


class Authenticator:
    """Verifies logons against a :class:`CredentialStore` and remembers their nonces."""

    def __init__(
        self,
        store: CredentialStore,
        max_skew_ms: int = DEFAULT_MAX_SKEW_MS,
        max_nonces_per_key: int = DEFAULT_MAX_NONCES_PER_KEY,
    ) -> None:
        self.store = store
        self.max_skew_ms = max_skew_ms
        self.max_nonces_per_key = max_nonces_per_key
        self._nonces: dict[str, _Nonces] = {}
        self._latest_ms = 0

    def verify(self, logon: Logon, now_ms: int) -> str:
        """The member the logon authenticates, or :class:`AuthError`."""
        now_ms = self._latest_ms = max(now_ms, self._latest_ms)
        record = self.store.lookup(logon.key_id)
        if record is None:
            raise AuthError(AuthFailure.UNKNOWN_KEY)
        if record.revoked:
            raise AuthError(AuthFailure.REVOKED_KEY)
        if abs(now_ms - logon.timestamp_ms) > self.max_skew_ms:
            raise AuthError(AuthFailure.CLOCK_SKEW)
        if not self._signature_matches(logon):
            raise AuthError(AuthFailure.BAD_SIGNATURE)
        self._remember_nonce(logon, now_ms)
        return record.member_id

    def _signature_matches(self, logon: Logon) -> bool:
        expected = logon_mac(self.store.secret(logon.key_id), logon.key_id, logon.timestamp_ms, logon.nonce)
        try:
            given = bytes.fromhex(logon.signature)
        except (ValueError, TypeError):
            given = b""
        return hmac.compare_digest(expected, given)

    def _remember_nonce(self, logon: Logon, now_ms: int) -> None:
        nonces = self._nonces.get(logon.key_id)
        if nonces is None:
            nonces = self._nonces[logon.key_id] = _Nonces()
        nonces.forget_before(now_ms - self.max_skew_ms)
        if logon.nonce in nonces.seen:
            raise AuthError(AuthFailure.NONCE_REUSED)
        if len(nonces.seen) >= self.max_nonces_per_key:
            raise AuthError(AuthFailure.TOO_MANY_LOGONS)
        nonces.add(logon.timestamp_ms, logon.nonce)

    def forget_expired(self, now_ms: int) -> None:
        """Drop every key's nonces that left the window (the server may call it now and then)."""
        self._latest_ms = max(now_ms, self._latest_ms)
        for key_id in sorted(self._nonces):
            nonces = self._nonces[key_id]
            nonces.forget_before(self._latest_ms - self.max_skew_ms)
            if not nonces.seen:
                del self._nonces[key_id]

    def remembered_nonces(self) -> int:
        return sum(len(n.seen) for n in self._nonces.values())
