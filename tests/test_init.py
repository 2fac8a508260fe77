"""``exchange init DIR``: a private data directory with a commented configuration that loads
to the defaults, the registry with its four accounts, the operator tokens ``serve`` uses and a
what-next text; run again it keeps everything; it completes an existing exchange's directory
and refuses someone else's."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import msgspec
import pytest

from exchange.cli import main
from exchange.config import Config, load_config
from exchange.init import NO_COMMENT, REGISTRY_ACCOUNTS, comment, config_text, initialize
from registry_adapter.sql import SqlRegistry

ROOT = Path(__file__).resolve().parents[1]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def accounts(data_dir: Path) -> dict[str, str]:
    registry = SqlRegistry(f"sqlite:///{data_dir / 'registry.db'}")
    try:
        return {account.account_id: account.account_type.value for account in registry.accounts()}
    finally:
        registry.close()


def test_init_makes_a_data_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data_dir = tmp_path / "venue"
    assert main(["init", str(data_dir)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert mode(data_dir) == 0o700
    assert mode(data_dir / "operator-tokens.json") == 0o600
    tokens = json.loads((data_dir / "operator-tokens.json").read_text())
    assert sorted(tokens) == ["admin", "clearing", "regulator"]
    assert load_config(data_dir / "config.toml") == Config()
    assert accounts(data_dir) == {account_id: kind.value for account_id, kind in REGISTRY_ACCOUNTS}
    next_text = (data_dir / "NEXT.txt").read_text()
    assert next_text in out  # printed and kept
    for step in (f"exchange serve --data-dir {data_dir} --config {data_dir / 'config.toml'}",
                 str(data_dir / "operator-tokens.json"), "/members", "/clearing/deposits",
                 "exchange registry allocate M0001 CEA-2025", "/clearing/start-of-day"):
        assert step in next_text, step


def keys_of(table: msgspec.Struct, path: str) -> list[str]:
    found = []
    for name in table.__struct_fields__:
        value = getattr(table, name)
        key = f"{path}.{name}" if path else name
        if isinstance(value, msgspec.Struct):
            found += [key, *keys_of(value, key)]
        elif isinstance(value, list) and value and isinstance(value[0], msgspec.Struct):
            found += [key, *keys_of(value[0], key)]
        else:
            found.append(key)
    return found


def test_every_configuration_key_is_written_with_a_comment() -> None:
    """Walks Config: a key added there without a comment (in exchange/init.py's COMMENTS or
    beside its field in exchange/config.py) fails here, naming the key."""
    text = config_text()
    config = Config()
    keys = keys_of(config, "")
    assert "risk.limits.max_open_orders" in keys and "instruments.band_bps" in keys
    tables = {line.strip("[]") for line in text.splitlines() if line.startswith("[")}
    for key in keys:
        owner, _, name = key.rpartition(".")
        struct = config
        for part in owner.split(".") if owner else []:
            struct = getattr(struct, part)
            struct = struct[0] if isinstance(struct, list) else struct
        field_type = type(struct) if owner else None
        assert comment(key, field_type) != NO_COMMENT, f"{key}: give it a line in exchange/init.py's COMMENTS"
        if isinstance(getattr(struct, name), msgspec.Struct) or name == "instruments":
            assert key in tables, key
        else:
            assert re.search(rf"^#? ?{name} = ", text, re.MULTILINE), key
    assert msgspec.toml.decode(text.encode(), type=Config) == config


def test_init_again_keeps_everything(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data_dir = tmp_path / "venue"
    initialize(data_dir)
    tokens = (data_dir / "operator-tokens.json").read_bytes()
    (data_dir / "config.toml").write_text("[engine]\nfsync = \"every_command\"\n")
    assert main(["init", str(data_dir)]) == 0
    out, _ = capsys.readouterr()
    assert "made " not in out and out.count("kept ") == 6
    assert (data_dir / "operator-tokens.json").read_bytes() == tokens
    assert load_config(data_dir / "config.toml").engine.fsync == "every_command"


def test_init_completes_an_exchange_directory_with_its_own_accounts(tmp_path: Path) -> None:
    """A registry that already has a government account (under another id) keeps it: the
    registry holds one of each authority account."""
    data_dir = tmp_path / "venue"
    data_dir.mkdir(mode=0o700)
    registry = SqlRegistry(f"sqlite:///{data_dir / 'registry.db'}")
    registry.create_schema()
    registry.open_account("GOV", "government_allocation", actor="authority", reason="earlier")
    registry.close()
    result = initialize(data_dir)
    assert "the registry account GOV (government_allocation)" in result.kept
    assert accounts(data_dir)["GOV"] == "government_allocation" and "GOV-ALLOCATION" not in accounts(data_dir)
    assert "house:settlement" in accounts(data_dir)


def test_init_refuses_a_directory_that_is_not_an_exchange(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"\xff\xd8")
    assert main(["init", str(tmp_path / "photos")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "not empty and holds no exchange" in err
    assert sorted(os.listdir(tmp_path / "photos")) == ["cat.jpg"]


def test_serve_runs_on_what_init_made(tmp_path: Path) -> None:
    """The tokens init wrote are the ones the server answers to, with init's configuration."""
    data_dir = tmp_path / "venue"
    initialize(data_dir)
    server = subprocess.Popen(
        [sys.executable, "-m", "exchange.cli", "serve", "--port", "0", "--data-dir", str(data_dir),
         "--config", str(data_dir / "config.toml")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        first: list[str] = []
        reader = threading.Thread(target=lambda: first.append(server.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(120)
        match = re.search(r"serving on (http://\S+) ", first[0] if first else "")
        assert match, first
        assert f"operator tokens in {data_dir / 'operator-tokens.json'}" in first[0]
        admin = json.loads((data_dir / "operator-tokens.json").read_text())["admin"]
        request = urllib.request.Request(match[1] + "/members", headers={"Authorization": f"Bearer {admin}"})
        with urllib.request.urlopen(request, timeout=60) as answer:
            assert answer.status == 200 and json.loads(answer.read()) == []
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=120)
