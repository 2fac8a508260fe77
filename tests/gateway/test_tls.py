"""``exchange serve --tls-cert FILE --tls-key FILE`` serves HTTPS and WSS (issue 10, finding 8).

The certificate is self-signed, made in the test (with the ``cryptography`` package, else the
``openssl`` command; skipped, saying why, only if neither exists), for ``localhost`` and
``127.0.0.1``; the clients trust exactly it. Plain HTTP stays the default.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import re
import shutil
import ssl
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from exchange.gateway.connections import tls_context
from tests.gateway.conftest import ROOT, Member, logon_frame


def make_certificate(directory: Path, name: str = "server") -> tuple[Path, Path]:
    """A self-signed certificate and its key (PEM files) for localhost and 127.0.0.1."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    try:
        _with_cryptography(cert, key)
    except ImportError:
        if shutil.which("openssl") is None:
            pytest.skip("neither the cryptography package nor the openssl command is here to make a certificate")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                       check=True, capture_output=True)
    return cert, key


def _with_cryptography(cert_path: Path, key_path: Path) -> None:
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))


def serve_command(data_dir: Path, *arguments: str) -> list[str]:
    return [sys.executable, "-m", "exchange.serve", "serve", "--port", "0", "--data-dir", str(data_dir), *arguments]


@pytest.mark.asyncio
async def test_a_wss_logon_and_an_https_health_on_a_self_signed_certificate(tmp_path: Path) -> None:
    cert, key = make_certificate(tmp_path)
    data_dir = tmp_path / "data"
    process = subprocess.Popen(serve_command(data_dir, "--tls-cert", str(cert), "--tls-key", str(key)), cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert process.stdout is not None
        line = await asyncio.to_thread(process.stdout.readline)
        match = re.search(r"serving on (https://\S+) \(members: (wss://\S+)\)", line)
        assert match, line
        url, ws_url = match[1], match[2]
        trusted = ssl.create_default_context(cafile=str(cert))
        admin = {"Authorization": f"Bearer {json.loads((data_dir / 'operator-tokens.json').read_text())['admin']}"}
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trusted)) as http:
            async with http.get(url + "/health") as response:
                assert response.status == 200
            async with http.post(url + "/members", json={"member_id": "T1", "kind": "voluntary"}, headers=admin) as response:
                assert response.status == 200, await response.text()
            async with http.post(url + "/members/T1/credentials", headers=admin) as response:
                issued = await response.json()
            member = await Member.connect(http, ws_url)
            await member.send(logon_frame(issued["key_id"], bytes.fromhex(issued["secret"])))
            ack = await member.expect("logon_ack", "error", timeout=60)  # generous: the machine may be busy
            assert ack["type"] == "logon_ack" and ack["member_id"] == "T1", ack
            await member.close()
        async with aiohttp.ClientSession() as http:  # a client that does not trust it is refused
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await http.get(url + "/health")
            with pytest.raises(aiohttp.ClientError):  # and plain HTTP is not served on the TLS port
                await http.get(url.replace("https", "http", 1) + "/health")
    finally:
        process.send_signal(2)
        code = await asyncio.to_thread(process.wait, 30)
    assert code == 0


def test_the_context_asks_for_tls_1_2_at_least(tmp_path: Path) -> None:
    cert, key = make_certificate(tmp_path)
    assert tls_context(str(cert), str(key)).minimum_version == ssl.TLSVersion.TLSv1_2


@pytest.mark.asyncio
@pytest.mark.parametrize("case", ["missing certificate", "unreadable key", "not PEM", "mismatched key", "key alone"])
async def test_a_bad_certificate_or_key_is_one_line_and_exit_code_2(tmp_path: Path, case: str) -> None:
    cert, key = make_certificate(tmp_path)
    _other_cert, other_key = make_certificate(tmp_path, "other")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    unreadable = tmp_path / "unreadable.key"
    unreadable.write_bytes(key.read_bytes())
    unreadable.chmod(0)
    if case == "unreadable key" and unreadable.open("rb").readable():
        pytest.skip("running as root: a mode 000 file is still readable")
    arguments = {
        "missing certificate": ["--tls-cert", str(tmp_path / "absent.crt"), "--tls-key", str(key)],
        "unreadable key": ["--tls-cert", str(cert), "--tls-key", str(unreadable)],
        "not PEM": ["--tls-cert", str(garbage), "--tls-key", str(key)],
        "mismatched key": ["--tls-cert", str(cert), "--tls-key", str(other_key)],
        "key alone": ["--tls-key", str(key)],
    }[case]
    done = await asyncio.to_thread(subprocess.run, serve_command(tmp_path / "data", *arguments), cwd=ROOT,
                                   capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    expected = {"missing certificate": "absent.crt", "unreadable key": "unreadable.key", "not PEM": "not a PEM",
                "mismatched key": "does not match", "key alone": "go together"}[case]
    assert expected in lines[0], lines[0]
    assert "exchange serving" not in done.stdout
