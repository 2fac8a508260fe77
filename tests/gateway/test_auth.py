"""Logon authentication: derived secrets, signed logons, skew, nonces, revocation, and no
secret or signature in any message or repr."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import msgspec
import pytest

from exchange.gateway.member import auth
from exchange.gateway.member.auth import (
    AuthError,
    AuthFailure,
    Authenticator,
    CredentialState,
    CredentialStore,
    sign_logon,
    string_to_sign,
)
from exchange.gateway.member.wire import Logon, decode_inbound, encode

ROOT = Path(__file__).resolve().parents[2]
MASTER = bytes(range(32))
NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z

# The worked example of docs/protocol.md.
EXAMPLE_KEY_ID = "0123456789abcdef"
EXAMPLE_SECRET = "75de808a0aacf75b83f1158ec2a4d3c2d60bd190f438a9a580d2bb27c32005d7"
EXAMPLE_NONCE = "n0nce-2026-01-01-0001"
EXAMPLE_SIGNATURE = "359bfdd5aa0ea289d480ee85c792fa991bcdfff1d26a195e147daea19675d11b"


class Counter:
    """A deterministic source of key ids: 0000000000000001, 0000000000000002, ..."""

    def __init__(self, start: int = 0) -> None:
        self.n = start

    def __call__(self, size: int) -> bytes:
        self.n += 1
        return self.n.to_bytes(size, "big")


def example_store() -> CredentialStore:
    return CredentialStore(MASTER, random_bytes=lambda n: bytes.fromhex(EXAMPLE_KEY_ID)[:n])


def setup(**options) -> tuple[CredentialStore, Authenticator, str, bytes]:
    store = CredentialStore(MASTER, random_bytes=Counter())
    issued = store.issue("M0001", NOW)
    return store, Authenticator(store, **options), issued.key_id, bytes.fromhex(issued.secret_hex)


def logon(key_id: str, secret: bytes, timestamp_ms: int = NOW, nonce: str = "nonce-0000000000001") -> Logon:
    return Logon(key_id, timestamp_ms, nonce, sign_logon(secret, key_id, timestamp_ms, nonce))


def refused(authenticator: Authenticator, message: Logon, now_ms: int = NOW) -> AuthFailure:
    with pytest.raises(AuthError) as caught:
        authenticator.verify(message, now_ms)
    return caught.value.reason


def test_the_worked_example_in_the_protocol_document() -> None:
    store = example_store()
    issued = store.issue("M0001", NOW)
    assert (issued.key_id, issued.secret_hex) == (EXAMPLE_KEY_ID, EXAMPLE_SECRET)
    assert string_to_sign(EXAMPLE_KEY_ID, NOW, EXAMPLE_NONCE) == b"0123456789abcdef\n1767225600000\nn0nce-2026-01-01-0001"
    assert sign_logon(bytes.fromhex(EXAMPLE_SECRET), EXAMPLE_KEY_ID, NOW, EXAMPLE_NONCE) == EXAMPLE_SIGNATURE
    doc = (ROOT / "docs" / "protocol.md").read_text()
    for value in (EXAMPLE_KEY_ID, EXAMPLE_SECRET, EXAMPLE_NONCE, EXAMPLE_SIGNATURE, str(NOW)):
        assert value in doc
    message = decode_inbound(encode(Logon(EXAMPLE_KEY_ID, NOW, EXAMPLE_NONCE, EXAMPLE_SIGNATURE)))
    assert isinstance(message, Logon)
    assert Authenticator(store).verify(message, NOW + 1_000) == "M0001"


def test_a_good_signature_logs_on() -> None:
    _, authenticator, key_id, secret = setup()
    assert authenticator.verify(logon(key_id, secret), NOW) == "M0001"


def test_upper_case_hex_signatures_are_the_same_signature() -> None:
    _, authenticator, key_id, secret = setup()
    good = logon(key_id, secret)
    assert authenticator.verify(msgspec.structs.replace(good, signature=good.signature.upper()), NOW) == "M0001"


def test_a_bad_signature_is_refused() -> None:
    _, authenticator, key_id, secret = setup()
    good = logon(key_id, secret)
    flipped = ("0" if good.signature[0] != "0" else "1") + good.signature[1:]
    assert refused(authenticator, msgspec.structs.replace(good, signature=flipped)) is AuthFailure.BAD_SIGNATURE
    other_secret = logon(key_id, hashlib.sha256(b"guess").digest())
    assert refused(authenticator, other_secret) is AuthFailure.BAD_SIGNATURE
    resigned_time = msgspec.structs.replace(good, timestamp_ms=NOW + 1)  # the timestamp is signed
    assert refused(authenticator, resigned_time) is AuthFailure.BAD_SIGNATURE
    assert refused(authenticator, msgspec.structs.replace(good, signature="zz" * 32)) is AuthFailure.BAD_SIGNATURE


def test_another_keys_signature_does_not_log_on_as_this_key() -> None:
    store, authenticator, key_id, secret = setup()
    other = store.issue("M0002", NOW)
    forged = logon(key_id, bytes.fromhex(other.secret_hex))
    assert refused(authenticator, forged) is AuthFailure.BAD_SIGNATURE


def test_clock_skew_beyond_the_window_is_refused_on_both_sides() -> None:
    _, authenticator, key_id, secret = setup()
    assert authenticator.verify(logon(key_id, secret, NOW - 30_000, "nonce-at-the-edge-1"), NOW) == "M0001"
    assert authenticator.verify(logon(key_id, secret, NOW + 30_000, "nonce-at-the-edge-2"), NOW) == "M0001"
    assert refused(authenticator, logon(key_id, secret, NOW - 30_001, "nonce-too-old-0001")) is AuthFailure.CLOCK_SKEW
    assert refused(authenticator, logon(key_id, secret, NOW + 30_001, "nonce-too-new-0001")) is AuthFailure.CLOCK_SKEW


def test_the_skew_window_is_configurable() -> None:
    _, authenticator, key_id, secret = setup(max_skew_ms=5_000)
    assert refused(authenticator, logon(key_id, secret, NOW - 5_001)) is AuthFailure.CLOCK_SKEW


def test_a_reused_nonce_is_refused_while_its_timestamp_is_in_the_window() -> None:
    _, authenticator, key_id, secret = setup()
    first = logon(key_id, secret, NOW, "nonce-used-once-001")
    authenticator.verify(first, NOW)
    assert refused(authenticator, first, NOW + 10_000) is AuthFailure.NONCE_REUSED  # a replay
    same_nonce_new_time = logon(key_id, secret, NOW + 5_000, "nonce-used-once-001")
    assert refused(authenticator, same_nonce_new_time, NOW + 5_000) is AuthFailure.NONCE_REUSED
    assert refused(authenticator, first, NOW + 30_001) is AuthFailure.CLOCK_SKEW  # later: too old anyway


def test_nonces_are_per_key() -> None:
    store, authenticator, key_id, secret = setup()
    other = store.issue("M0002", NOW)
    authenticator.verify(logon(key_id, secret, NOW, "shared-nonce-00001"), NOW)
    assert authenticator.verify(logon(other.key_id, bytes.fromhex(other.secret_hex), NOW, "shared-nonce-00001"), NOW) == "M0002"


def test_nonce_memory_is_bounded_and_ages_out() -> None:
    _, authenticator, key_id, secret = setup(max_nonces_per_key=3)
    for n in range(3):
        authenticator.verify(logon(key_id, secret, NOW, f"nonce-bounded-{n:04d}"), NOW)
    assert refused(authenticator, logon(key_id, secret, NOW, "nonce-bounded-0003")) is AuthFailure.TOO_MANY_LOGONS
    later = NOW + 30_001  # the first three left the window
    assert authenticator.verify(logon(key_id, secret, later, "nonce-bounded-0004"), later) == "M0001"
    assert authenticator.remembered_nonces() == 1
    authenticator.forget_expired(later + 60_000)
    assert authenticator.remembered_nonces() == 0


def test_refused_logons_leave_no_nonce_behind() -> None:
    _, authenticator, key_id, secret = setup()
    bad = msgspec.structs.replace(logon(key_id, secret), signature="0" * 64)
    refused(authenticator, bad)
    assert authenticator.remembered_nonces() == 0
    assert authenticator.verify(logon(key_id, secret), NOW) == "M0001"  # the same nonce, now signed


def test_a_clock_stepped_back_cannot_revive_a_forgotten_nonce() -> None:
    _, authenticator, key_id, secret = setup()
    first = logon(key_id, secret, NOW, "nonce-clock-back-01")
    authenticator.verify(first, NOW)
    authenticator.forget_expired(NOW + 40_000)  # the nonce is forgotten
    assert refused(authenticator, first, NOW + 1_000) is AuthFailure.CLOCK_SKEW  # the clock went back


def test_revoked_and_unknown_keys_are_refused() -> None:
    store, authenticator, key_id, secret = setup()
    assert refused(authenticator, logon("ffffffffffffffff", secret)) is AuthFailure.UNKNOWN_KEY
    store.revoke(key_id)
    store.revoke(key_id)  # twice is harmless
    revoked = store.lookup(key_id)
    assert revoked is not None and revoked.revoked
    assert refused(authenticator, logon(key_id, secret)) is AuthFailure.REVOKED_KEY
    with pytest.raises(KeyError):
        store.revoke("0000000000000000")


def test_the_client_is_not_told_which_key_ids_exist() -> None:
    problems = {reason: AuthError(reason).public_problem() for reason in AuthFailure}
    assert problems[AuthFailure.UNKNOWN_KEY] == problems[AuthFailure.REVOKED_KEY] == problems[AuthFailure.BAD_SIGNATURE]
    assert problems[AuthFailure.CLOCK_SKEW] != problems[AuthFailure.UNKNOWN_KEY]


def test_signatures_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    _, authenticator, key_id, secret = setup()
    calls = []
    compare_digest = hmac.compare_digest

    def spy(a, b):
        calls.append((type(a), type(b)))
        return compare_digest(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    authenticator.verify(logon(key_id, secret), NOW)
    assert calls == [(bytes, bytes)]


def test_secrets_and_signatures_never_show_in_reprs_or_errors() -> None:
    store = CredentialStore(MASTER, random_bytes=Counter())
    issued = store.issue("M0001", NOW)
    secret = issued.secret_hex
    assert secret not in repr(issued) and secret not in str(issued) and issued.key_id in repr(issued)
    assert secret not in repr(store) and MASTER.hex() not in repr(store)
    good = logon(issued.key_id, bytes.fromhex(secret))
    assert good.signature not in repr(good) and good.signature not in str(good)
    authenticator = Authenticator(store)
    for message in (msgspec.structs.replace(good, signature="a" * 64), good, good):
        try:
            authenticator.verify(message, NOW)
        except AuthError as error:
            text = f"{error!s} {error!r} {error.public_problem()}"
            assert secret not in text and message.signature not in text and good.signature not in text


def test_the_server_stores_no_secret_only_its_fingerprint() -> None:
    store = CredentialStore(MASTER, random_bytes=Counter())
    issued = store.issue("M0001", NOW)
    saved = msgspec.json.encode(store.state())
    assert issued.secret_hex.encode() not in saved
    record = store.lookup(issued.key_id)
    assert record is not None
    assert record.fingerprint == hashlib.sha256(bytes.fromhex(issued.secret_hex)).hexdigest()
    assert (record.member_id, record.created_ms, record.revoked) == ("M0001", NOW, False)


def test_state_round_trips_and_secrets_follow_from_the_master_secret() -> None:
    store = CredentialStore(MASTER, random_bytes=Counter())
    first = store.issue("M0001", NOW)
    second = store.issue("M0002", NOW + 1)
    store.revoke(second.key_id)
    saved = msgspec.json.encode(store.state())
    restored = CredentialStore(MASTER)
    restored.restore(msgspec.json.decode(saved, type=CredentialState))
    assert restored.state() == store.state()
    authenticator = Authenticator(restored)
    assert authenticator.verify(logon(first.key_id, bytes.fromhex(first.secret_hex)), NOW) == "M0001"
    assert refused(authenticator, logon(second.key_id, bytes.fromhex(second.secret_hex))) is AuthFailure.REVOKED_KEY
    other_master = Authenticator(CredentialStore(bytes(32)))
    other_master.store.restore(msgspec.json.decode(saved, type=CredentialState))
    assert refused(other_master, logon(first.key_id, bytes.fromhex(first.secret_hex))) is AuthFailure.BAD_SIGNATURE


def test_key_ids_are_unique_and_random_by_default() -> None:
    repeating = CredentialStore(MASTER, random_bytes=Counter())
    fixed = iter([b"\x00" * 8, b"\x00" * 8, b"\x01" * 8])
    store = CredentialStore(MASTER, random_bytes=lambda n: next(fixed))
    assert [store.issue("M", NOW).key_id for _ in range(2)] == ["0000000000000000", "0101010101010101"]
    assert repeating.issue("M", NOW).key_id == "0000000000000001"
    real = CredentialStore(MASTER)
    ids = {real.issue("M", NOW).key_id for _ in range(50)}
    assert len(ids) == 50 and all(len(i) == 16 for i in ids)
    assert [r.key_id for r in real.keys_of("M")] == sorted(ids)


def test_a_short_master_secret_is_refused() -> None:
    with pytest.raises(AssertionError):
        CredentialStore(b"short")
