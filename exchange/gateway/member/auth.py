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
* **Nonces survive a restart** (issue 10, finding 3: a logon frame replayed after a SIGKILL and
  restart was accepted). Of the two cures, a persisted nonce window and a server-issued
  challenge, the window is chosen: the wire and every client stay as they are. A
  :class:`NonceLog` handed in with the credential store (``exchange serve`` keeps it in
  ``DATA_DIR/logon-nonces``) gets one line per accepted logon, ``now_ms key_id timestamp_ms
  nonce``, appended and fsynced *before* the logon is answered (one short write and one fsync
  per logon; only logons whose signature verified reach it, so nobody without a secret can
  make the server write). At start the authenticator reloads the lines, takes the latest
  ``now_ms`` as its clock (so the rule above holds across restarts too), forgets what left
  the window and rewrites the file with the rest (atomically, :mod:`exchange.files`); it
  rewrites it so again every ``compact_every`` logons. A logon whose line cannot be written
  is refused (``the server could not record the logon``): without the line a replay after a
  restart would pass.
* **A damaged nonce file.** A last line without its newline is a write the crash cut short,
  so its logon was never answered: it is dropped. Any other line that does not parse means
  the server no longer knows which nonces were used: the file is moved aside
  (``logon-nonces.damaged-<ms>``, for the operator) and, for one window, every logon signed
  at or before the damaged file's last write plus the allowed skew is refused (``timestamp
  before the server's record of used nonces``); members sign a fresh logon once that time
  has passed. The exchange keeps starting; no captured logon works twice.
* **Checks in this order:** unknown key, revoked key, clock skew, signature, the damage
  fence, nonce, then the nonce's line on disk. The signature comes before the nonce so that
  an unsigned logon never touches nonce memory (or the disk).
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
import logging
import re
import secrets
from dataclasses import dataclass, field
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple

import msgspec

from exchange import files
from exchange.gateway.member.wire import Logon

log = logging.getLogger("exchange.gateway.member.auth")

KEY_ID_BYTES = 8  # 16 hex characters
MASTER_SECRET_BYTES = 32
DEFAULT_MAX_SKEW_MS = 30_000
DEFAULT_MAX_NONCES_PER_KEY = 1_000
DEFAULT_COMPACT_EVERY = 10_000  # logons between rewrites of the nonce file

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

    def __init__(
        self, master_secret: bytes, random_bytes: RandomBytes = secrets.token_bytes, nonce_log: NonceLog | None = None,
    ) -> None:
        assert len(master_secret) >= MASTER_SECRET_BYTES, "the master secret needs 32 random bytes"
        self._master = master_secret
        self._random_bytes = random_bytes
        self._records: dict[str, CredentialRecord] = {}
        # The keys' used nonces on disk, if any: the store travels as one object to whoever
        # builds the authenticator (the hub), which remembers through it.
        self.nonce_log = nonce_log

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
    BEFORE_NONCE_RECORD = "timestamp before the server's record of used nonces: sign a new logon after the replay window"
    NOT_RECORDED = "the server could not record the logon: try again"


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


class UsedNonce(NamedTuple):
    """One accepted logon's line in the nonce file."""

    now_ms: int  # the server's clock when it accepted the logon
    key_id: str
    timestamp_ms: int
    nonce: str

    def line(self) -> bytes:
        return f"{self.now_ms} {self.key_id} {self.timestamp_ms} {self.nonce}\n".encode()


_NONCE_LINE = re.compile(rb"(\d{1,19}) ([A-Za-z0-9_-]{1,64}) (\d{1,19}) ([A-Za-z0-9_-]{16,64})")


class NonceLog:
    """The nonces of accepted logons in an append-only file (see the module's docstring)."""

    def __init__(self, path: str | Path, compact_every: int = DEFAULT_COMPACT_EVERY) -> None:
        assert compact_every >= 1, compact_every
        self.path = Path(path)
        self.compact_every = compact_every
        self.appended = 0  # lines written since the file was last rewritten

    def __repr__(self) -> str:
        return f"NonceLog({self.path})"

    def recover(self) -> tuple[list[UsedNonce], int]:
        """The lines on disk, and when a damaged file was last written (ms; 0: none was)."""
        used: list[UsedNonce] = []
        damaged: list[int] = []  # line numbers
        if self.path.exists():
            whole, _, _cut = self.path.read_bytes().rpartition(b"\n")  # a cut last line was never answered
            for number, line in enumerate(whole.split(b"\n") if whole else [], start=1):
                match = _NONCE_LINE.fullmatch(line)
                if match is None:
                    damaged.append(number)
                else:
                    used.append(UsedNonce(int(match[1]), match[2].decode(), int(match[3]), match[4].decode()))
        if damaged:
            self._set_aside(damaged)
        return used, self._damaged_last_written_ms()

    def _set_aside(self, line_numbers: list[int]) -> None:
        """Keep the damaged file for the operator; its last write time is the fence's start."""
        written_ms = self.path.stat().st_mtime_ns // 1_000_000
        aside = self.path.with_name(f"{self.path.name}.damaged-{written_ms}")
        files.replace_durably(self.path, aside)
        log.warning("%s: %d damaged line(s), the first is line %d; moved to %s; logons signed up to one "
                    "replay window after its last write are refused", self.path, len(line_numbers), line_numbers[0], aside.name)

    def _damaged_last_written_ms(self) -> int:
        moved = self.path.parent.glob(f"{self.path.name}.damaged-*")
        return max((path.stat().st_mtime_ns // 1_000_000 for path in moved), default=0)

    def record(self, used: UsedNonce) -> None:
        """Append one line and make it durable (raises OSError if it could not)."""
        files.append_durably(self.path, used.line())
        self.appended += 1

    def compact(self, live: Iterable[UsedNonce]) -> None:
        """Rewrite the file with only ``live``, atomically."""
        files.write_atomic(self.path, b"".join(used.line() for used in live))
        self.appended = 0


class Authenticator:
    """Verifies logons against a :class:`CredentialStore` and remembers their nonces, in
    memory and, if the store has a :class:`NonceLog`, on disk."""

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
        self._fence_ms = -1  # logons signed at or before it are refused (a damaged nonce file)
        self._log = store.nonce_log
        if self._log is not None:
            self._recover(self._log)

    def _recover(self, nonce_log: NonceLog) -> None:
        used, damaged_ms = nonce_log.recover()
        if damaged_ms:
            self._fence_ms = damaged_ms + self.max_skew_ms
        for entry in used:
            self._latest_ms = max(self._latest_ms, entry.now_ms)
            self._nonces_of(entry.key_id).add(entry.timestamp_ms, entry.nonce)
        self.forget_expired(self._latest_ms)
        nonce_log.compact(self._live())

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
        if logon.timestamp_ms <= self._fence_ms:
            raise AuthError(AuthFailure.BEFORE_NONCE_RECORD)
        self._remember_nonce(logon, now_ms)
        self._record_nonce(logon, now_ms)
        return record.member_id

    def _signature_matches(self, logon: Logon) -> bool:
        expected = logon_mac(self.store.secret(logon.key_id), logon.key_id, logon.timestamp_ms, logon.nonce)
        try:
            given = bytes.fromhex(logon.signature)
        except (ValueError, TypeError):
            given = b""
        return hmac.compare_digest(expected, given)

    def _nonces_of(self, key_id: str) -> _Nonces:
        nonces = self._nonces.get(key_id)
        if nonces is None:
            nonces = self._nonces[key_id] = _Nonces()
        return nonces

    def _remember_nonce(self, logon: Logon, now_ms: int) -> None:
        nonces = self._nonces_of(logon.key_id)
        nonces.forget_before(now_ms - self.max_skew_ms)
        if logon.nonce in nonces.seen:
            raise AuthError(AuthFailure.NONCE_REUSED)
        if len(nonces.seen) >= self.max_nonces_per_key:
            raise AuthError(AuthFailure.TOO_MANY_LOGONS)
        nonces.add(logon.timestamp_ms, logon.nonce)

    def _record_nonce(self, logon: Logon, now_ms: int) -> None:
        """The nonce's line on disk before the logon is answered; a full file is rewritten."""
        if self._log is None:
            return
        try:
            self._log.record(UsedNonce(now_ms, logon.key_id, logon.timestamp_ms, logon.nonce))
        except OSError as error:  # the nonce stays in memory: the same frame is still refused here
            log.error("cannot record a logon nonce in %s: %s", self._log.path, error)
            raise AuthError(AuthFailure.NOT_RECORDED) from None
        if self._log.appended >= self._log.compact_every:
            self.forget_expired(now_ms)
            try:
                self._log.compact(self._live())
            except OSError as error:  # the line is durable; a longer file is only untidy
                log.warning("cannot rewrite %s: %s", self._log.path, error)

    def _live(self) -> list[UsedNonce]:
        """Every remembered nonce, as lines stamped with the latest clock (key, then time order)."""
        return [
            UsedNonce(self._latest_ms, key_id, timestamp_ms, nonce)
            for key_id in sorted(self._nonces)
            for timestamp_ms, nonce in sorted(self._nonces[key_id].by_time)
        ]

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
