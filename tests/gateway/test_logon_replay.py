"""A captured logon never works twice, not even across a crash (issue 10, finding 3).

The nonces of accepted logons are appended to ``DATA_DIR/logon-nonces`` and fsynced before the
logon is answered; a restart reloads them. The end-to-end test is a real ``exchange serve``
process killed with SIGKILL; the rest drive :class:`NonceLog` and :class:`Authenticator`
directly, with clocks given as numbers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest

from exchange.gateway.member import auth
from exchange.gateway.member.auth import AuthError, AuthFailure, Authenticator, CredentialStore, NonceLog, sign_logon
from exchange.gateway.member.wire import Logon
from exchange.gateway.server import NONCES_FILE
from tests.gateway.conftest import Member, call, logon_frame, start_serve_process

ROOT = Path(__file__).resolve().parents[2]
MASTER = bytes(range(32))
NOW = 1_767_225_600_000
SKEW = auth.DEFAULT_MAX_SKEW_MS


# -- a real served exchange, SIGKILLed --------------------------------------------------------------


async def start_serve(data_dir: Path) -> tuple[subprocess.Popen, str]:
    return await start_serve_process(data_dir)


def sigkill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(10)


@pytest.mark.asyncio
async def test_a_logon_captured_before_a_sigkill_is_refused_after_the_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    process, url = await start_serve(data_dir)
    try:
        admin = json.loads((data_dir / "operator-tokens.json").read_text())["admin"]
        async with aiohttp.ClientSession() as http:
            await call(http, url, admin, "POST", "/members", {"member_id": "R1", "kind": "voluntary"})
            issued = await call(http, url, admin, "POST", "/members/R1/credentials")
            key_id, secret = issued["key_id"], bytes.fromhex(issued["secret"])
            # Signed ahead of the clock (within the allowed skew), so the frame is still inside
            # its window however long the restart takes: what refuses it must be the nonce.
            captured = logon_frame(key_id, secret, timestamp_ms=time.time_ns() // 1_000_000 + SKEW * 2 // 3,
                                   cancel_on_disconnect=False)
            member = await Member.connect(http, url + "/ws")
            await member.send(captured)
            assert (await member.expect("logon_ack", "error"))["type"] == "logon_ack"
        sigkill(process)

        process, url = await start_serve(data_dir)
        async with aiohttp.ClientSession() as http:
            replay = await Member.connect(http, url + "/ws")
            await replay.send(captured)
            refused = await replay.expect("logon_ack", "error")
            assert (refused["type"], refused.get("code"), refused.get("problem")) == ("error", 12, "nonce already used")
            assert (await replay.expect("session_closing"))["reason"] == "logon_refused"
            fresh = await Member.connect(http, url + "/ws")
            assert (await fresh.logon(key_id, secret, cancel_on_disconnect=False))["type"] == "logon_ack"
    finally:
        if process.poll() is None:
            sigkill(process)


# -- the nonce log and the authenticator over it --------------------------------------------------


def store_with_log(path: Path, **options) -> tuple[CredentialStore, str, bytes]:
    store = CredentialStore(MASTER, random_bytes=lambda n: bytes(range(1, n + 1)), nonce_log=NonceLog(path, **options))
    issued = store.issue("M0001", NOW)
    return store, issued.key_id, bytes.fromhex(issued.secret_hex)


def logon(key_id: str, secret: bytes, timestamp_ms: int = NOW, nonce: str = "nonce-0000000000001") -> Logon:
    return Logon(key_id, timestamp_ms, nonce, sign_logon(secret, key_id, timestamp_ms, nonce))


def refused(authenticator: Authenticator, message: Logon, now_ms: int) -> AuthFailure:
    with pytest.raises(AuthError) as caught:
        authenticator.verify(message, now_ms)
    return caught.value.reason


def restarted(store: CredentialStore) -> Authenticator:
    """A new process's authenticator: the same records, a fresh memory, the same file."""
    assert store.nonce_log is not None
    again = CredentialStore(MASTER, nonce_log=NonceLog(store.nonce_log.path))
    again.restore(store.state())
    return Authenticator(again)


def test_the_nonce_is_on_disk_before_the_logon_is_answered_and_a_restart_refuses_it(tmp_path: Path) -> None:
    path = tmp_path / NONCES_FILE
    store, key_id, secret = store_with_log(path)
    assert Authenticator(store).verify(logon(key_id, secret), NOW) == "M0001"
    assert path.read_text() == f"{NOW} {key_id} {NOW} nonce-0000000000001\n"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert refused(restarted(store), logon(key_id, secret), NOW + 1_000) is AuthFailure.NONCE_REUSED
    assert restarted(store).verify(logon(key_id, secret, nonce="nonce-0000000000002"), NOW + 1_000) == "M0001"


def test_a_restart_forgets_what_left_the_window_and_rewrites_the_file(tmp_path: Path) -> None:
    path = tmp_path / NONCES_FILE
    store, key_id, secret = store_with_log(path)
    authenticator = Authenticator(store)
    authenticator.verify(logon(key_id, secret, NOW, "nonce-old-000000001"), NOW)
    authenticator.verify(logon(key_id, secret, NOW + 40_000, "nonce-new-000000001"), NOW + 40_000)
    assert len(path.read_text().splitlines()) == 2
    after = restarted(store)
    assert after.remembered_nonces() == 1
    assert path.read_text() == f"{NOW + 40_000} {key_id} {NOW + 40_000} nonce-new-000000001\n"


def test_the_clock_does_not_run_backwards_across_a_restart(tmp_path: Path) -> None:
    """A clock stepped back after the restart cannot revive a nonce the file no longer holds."""
    path = tmp_path / NONCES_FILE
    store, key_id, secret = store_with_log(path)
    authenticator = Authenticator(store)
    authenticator.verify(logon(key_id, secret, NOW, "nonce-old-000000001"), NOW)
    authenticator.verify(logon(key_id, secret, NOW + 40_000, "nonce-new-000000001"), NOW + 40_000)
    after = restarted(store)  # the first nonce is gone from the file
    assert refused(after, logon(key_id, secret, NOW, "nonce-old-000000001"), NOW) is AuthFailure.CLOCK_SKEW


def test_the_file_is_rewritten_every_so_many_logons(tmp_path: Path) -> None:
    path = tmp_path / NONCES_FILE
    store, key_id, secret = store_with_log(path, compact_every=3)
    authenticator = Authenticator(store)
    for i in range(7):
        now = NOW + i * 20_000
        authenticator.verify(logon(key_id, secret, now, f"nonce-{i:014d}"), now)
    # Rewritten at the 3rd and 6th logon with what was still in the window, then one appended.
    assert [line.split()[3] for line in path.read_text().splitlines()] == [f"nonce-{i:014d}" for i in (4, 5, 6)]
    assert refused(restarted(store), logon(key_id, secret, NOW + 120_000, "nonce-00000000000006"), NOW + 120_000) \
        is AuthFailure.NONCE_REUSED


def test_a_cut_last_line_is_dropped_quietly(tmp_path: Path) -> None:
    path = tmp_path / NONCES_FILE
    store, key_id, secret = store_with_log(path)
    Authenticator(store).verify(logon(key_id, secret), NOW)
    with path.open("ab") as file:
        file.write(b"1767225601000 0102030405060708 17672")  # a write the crash cut short: never answered
    after = restarted(store)
    assert after.remembered_nonces() == 1 and not list(tmp_path.glob("*.damaged-*"))
    assert path.read_text().endswith("nonce-0000000000001\n")


def test_a_damaged_file_is_set_aside_and_logons_signed_before_it_ended_are_refused(tmp_path: Path) -> None:
    path = tmp_path / NONCES_FILE
    store, key_id, secret = store_with_log(path)
    Authenticator(store).verify(logon(key_id, secret), NOW)
    with path.open("ab") as file:
        file.write(b"\x00\x17garbage\n")  # a line the server cannot read: its nonce is unknown
    os.utime(path, ns=(NOW * 1_000_000, NOW * 1_000_000))  # last written at NOW
    after = restarted(store)
    assert [p.name for p in tmp_path.glob("*.damaged-*")] == [f"{NONCES_FILE}.damaged-{NOW}"]
    captured = logon(key_id, secret, NOW + 10_000, "nonce-unknown-00001")  # any logon the lost line may hold
    assert refused(after, captured, NOW + 1_000) is AuthFailure.BEFORE_NONCE_RECORD
    assert refused(restarted(store), captured, NOW + 2_000) is AuthFailure.BEFORE_NONCE_RECORD  # a second crash too
    later = NOW + SKEW + 1
    assert after.verify(logon(key_id, secret, later, "nonce-fresh-0000001"), later) == "M0001"


def test_a_logon_whose_nonce_cannot_be_written_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, key_id, secret = store_with_log(tmp_path / NONCES_FILE)
    authenticator = Authenticator(store)

    def full_disk(path, data, mode=0o600) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(auth.files, "append_durably", full_disk)
    assert refused(authenticator, logon(key_id, secret), NOW) is AuthFailure.NOT_RECORDED
    assert AuthError(AuthFailure.NOT_RECORDED).public_problem() == "the server could not record the logon: try again"
    monkeypatch.undo()
    assert refused(authenticator, logon(key_id, secret), NOW) is AuthFailure.NONCE_REUSED  # seen, though not stored


def test_an_unsigned_logon_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / NONCES_FILE
    store, key_id, _secret = store_with_log(path)
    authenticator = Authenticator(store)
    forged = Logon(key_id, NOW, "nonce-0000000000001", "00" * 32)
    assert refused(authenticator, forged, NOW) is AuthFailure.BAD_SIGNATURE
    assert path.read_bytes() == b""
