"""``exchange init DIR``: a data directory ready to serve, in one command.

It makes, in ``DIR`` (mode 0700):

- ``config.toml``: every section and key of :class:`exchange.config.Config` with its default
  and a one-line comment (:func:`config_text`); ``exchange serve --config DIR/config.toml``
  loads it.
- ``registry.db``: the reference registry with the accounts every market needs before its
  first day (:data:`REGISTRY_ACCOUNTS`): the authority's government allocation account
  (``issue`` puts allowances there), its adjustment reserve, its cancellation account, and
  the exchange's settlement account.
- ``operator-tokens.json`` (mode 0600): a token for every operator role, made by the one
  token writer the server uses (:func:`exchange.gateway.server.operator_token_store`).
- ``NEXT.txt``: what to do next (serve, the tokens, admit a member, deposit, give it
  allowances, open the day), also printed.

Decisions:

- The configuration's values are written out, not commented out: the data directory keeps
  the rules it was made with, so its journal replays under them even if a later version
  changes a default. A key whose default is "derived" (None) is written commented out, since
  TOML has no null.
- Account ids: the registry's adjustment reserve and the exchange's settlement account carry
  the ids the exchange itself uses for them (``house:adjustment-reserve``, the core's house
  account; ``house:settlement``, the cash ledger's), so a leg naming the house settles against
  the registry account of the same id, as a member's holding account has the member's id.
- ``init`` never overwrites: run on a directory that is already an exchange's (it holds a
  journal or a registry), it adds only what is missing (a configuration, an account, the
  tokens) and says so; a non-empty directory that is not an exchange's is refused, since
  writing into it could mix an exchange with someone else's files.
"""

from __future__ import annotations

import argparse
import enum
import inspect
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from exchange import files
from exchange.config import Config, load_config
from exchange.gateway.server import TOKENS_FILE, operator_token_store
from registry_adapter.admin import default_actor
from registry_adapter.sql import AccountType, SqlRegistry

CONFIG_FILE = "config.toml"
REGISTRY_FILE = "registry.db"
NEXT_FILE = "NEXT.txt"
# What makes a directory an exchange's: what ``serve`` and ``simulate`` leave in it.
EXCHANGE_MARKERS = ("commands.journal", REGISTRY_FILE)

REGISTRY_ACCOUNTS: tuple[tuple[str, AccountType], ...] = (
    ("GOV-ALLOCATION", AccountType.GOVERNMENT_ALLOCATION),
    ("house:adjustment-reserve", AccountType.ADJUSTMENT_RESERVE),
    ("CANCELLATION", AccountType.CANCELLATION),
    ("house:settlement", AccountType.EXCHANGE_SETTLEMENT),
)

# One line per key: what it means. A key without a line here takes the comment beside its
# field in exchange/config.py (:func:`source_comment`); one with neither is written with a
# pointer to exchange/config.py, and tests/test_init.py fails until it gets a line.
COMMENTS: dict[str, str] = {
    "market": "How the book matches.",
    "market.self_trade_policy": "a member's order meeting its own: cancel_newest, cancel_oldest or cancel_both",
    "engine": "The journal and snapshots.",
    "engine.fsync": "when the journal reaches the disk: never, batched or every_command",
    "engine.fsync_batch_records": "batched: records written between two fsyncs at most",
    "engine.snapshot_every_commands": "a snapshot of the state every so many commands",
    "engine.snapshots_kept": "snapshots kept on disk (older ones are deleted)",
    "engine.gc_freeze_every_commands": "freeze long-lived objects out of the garbage collector every so many commands; 0: never",
    "risk": "Pre-trade risk and positions.",
    "risk.position_limit_t": "tonnes of allowances a member may hold (a covered entity adds its allocation)",
    "risk.large_holder_bps": "the large-holder reporting threshold, in basis points of the position limit",
    "risk.holding_days": "days before bought allowances may be sold (1: T+1)",
    "risk.same_day_proceeds": "sale proceeds usable the same day",
    "risk.limits": "Per-member order limits.",
    "risk.limits.max_order_value_fen": "the largest order, price x quantity, in fen",
    "risk.limits.orders_per_second": "new orders a second, sustained, per member",
    "risk.limits.order_burst": "new orders in a burst above the rate, per member",
    "risk.limits.max_open_orders": "orders a member may have resting at once",
    "calendar": "The trading calendar, in the exchange's local time.",
    "calendar.sessions": "continuous trading sessions, [open, close] in HH:MM, in order",
    "calendar.holidays": "days without trading besides weekends, YYYY-MM-DD",
    "calendar.utc_offset_hours": "the exchange's local time, hours from UTC",
    "calendar.weekend": "weekdays without trading",
    "calendar.max_days_from_today": "the operator API opens a day at most this many days from today",
    "calendar.automatic": "exchange serve runs the day by this calendar; false leaves every step to the operator API",
    "calendar.start_of_day_lead_minutes": "start of day this many minutes before the first session",
    "calendar.settle_delay_minutes": "settlement this many minutes after the close",
    "operator": "The operator API.",
    "operator.token_lifetime_days": "how long a rotated operator token stays valid; 0: no expiry",
    "gateway": "The member gateway's flood limits; left out, each is derived from [risk.limits].",
    "gateway.session_frames_per_second": "frames a second per session (default: 2 x orders_per_second)",
    "gateway.session_frame_burst": "frames in a burst per session (default: 2 x order_burst)",
    "gateway.member_frames_per_second": "frames a second per member, all sessions together (default: 4 x orders_per_second)",
    "gateway.member_frame_burst": "frames in a burst per member (default: 4 x order_burst)",
    "gateway.member_max_pending": "a member's commands waiting for the engine (default: 4 x order_burst)",
    "gateway.max_connections": "connections before logon, all together (lowered at start to fit the open-file limit)",
    "gateway.max_connections_per_address": "connections before logon from one address",
    "gateway.descriptor_reserve": "file descriptors kept free of connections for the stores",
    "gateway.header_timeout_ms": "a connection's first request head (TLS handshake included) within this of the accept",
    "gateway.body_timeout_ms": "a request body, complete, within this of its head (else 408 and closed)",
    "gateway.idle_timeout_ms": "a kept-alive HTTP connection idle this long is closed",
    "gateway.logon_timeout_ms": "a WebSocket not logged on this long after its upgrade is closed",
    "instruments": "The listed instruments, one [[instruments]] table each.",
    "instruments.symbol": "the instrument's symbol, as members send it",
    "instruments.kind": "allowance or ccer",
    "instruments.reference_price": "the first day's reference price, yuan per tonne (the band is around it)",
    "instruments.vintage": "an allowance's vintage year",
    "instruments.tick": "the price step, yuan",
    "instruments.lot_t": "the quantity step, tonnes",
    "instruments.max_order_qty_t": "the largest order on the book, tonnes (larger goes to block trading)",
    "instruments.band_bps": "the price band around the reference price, basis points",
}


class InitRefused(Exception):
    """The directory cannot become an exchange's data directory (said in one line)."""


@dataclass
class InitResult:
    data_dir: Path
    made: list[str] = field(default_factory=list)  # what this run created
    kept: list[str] = field(default_factory=list)  # what was there already
    next_steps: str = ""


# -- the configuration ---------------------------------------------------------------------------


def config_text(config: Config | None = None) -> str:
    """``config`` (the defaults) as a commented TOML file that :func:`load_config` reads back."""
    config = config or Config()
    lines = ["# The exchange's configuration (exchange init). Every key with its default; see exchange/config.py.",
             "# Prices are decimal strings of yuan; money elsewhere is fen, quantities are tonnes."]
    tables: list[tuple[str, msgspec.Struct]] = []
    arrays: list[tuple[str, list[msgspec.Struct]]] = []
    for name in config.__struct_fields__:
        value = getattr(config, name)
        if isinstance(value, msgspec.Struct):
            tables.append((name, value))
        else:
            arrays.append((name, value))
    for name, table in tables:
        lines += _table(name, table)
    for name, items in arrays:
        lines += ["", f"# {comment(name)}"]
        for item in items:
            lines += ["", f"[[{name}]]", *_keys(name, item)]
    return "\n".join(lines) + "\n"


def _table(path: str, table: msgspec.Struct) -> list[str]:
    lines = ["", f"# {comment(path)}", f"[{path}]", *_keys(path, table)]
    for name in table.__struct_fields__:
        value = getattr(table, name)
        if isinstance(value, msgspec.Struct):
            lines += _table(f"{path}.{name}", value)
    return lines


def _keys(path: str, table: msgspec.Struct) -> list[str]:
    lines = []
    for name in table.__struct_fields__:
        value = getattr(table, name)
        if isinstance(value, msgspec.Struct):
            continue  # its own table, after this one's keys
        key = f"{path}.{name}"
        if value is None:
            lines.append(f"# {name} =   # {comment(key, type(table))}")
        else:
            lines.append(f"{name} = {toml_value(value)}  # {comment(key, type(table))}")
    return lines


def comment(key: str, table: type | None = None) -> str:
    """The key's line: from :data:`COMMENTS`, else the comment beside (or above) the field in
    exchange/config.py, else a pointer there."""
    return COMMENTS.get(key) or (table and source_comment(table, key.rpartition(".")[2])) or NO_COMMENT


NO_COMMENT = "(see exchange/config.py)"
FIELD_LINE = re.compile(r"^\s+(\w+)\s*:")


def source_comment(table: type, name: str) -> str:
    """The comment on the field's line, else the comment block above it or above the fields
    right before it (a block introducing a group), joined into one line; "" when none."""
    try:
        lines = inspect.getsource(table).splitlines()
    except (OSError, TypeError):
        return ""
    found = [n for n, line in enumerate(lines) if (m := FIELD_LINE.match(line)) and m[1] == name]
    if not found:
        return ""
    code, _, trailing = lines[found[0]].partition("  # ")
    if trailing:
        return trailing.strip()
    above: list[str] = []
    for line in reversed(lines[:found[0]]):
        text = line.strip()
        if text.startswith("#"):
            above.insert(0, text.lstrip("# "))
        elif above or not FIELD_LINE.match(line):
            break  # the block ended, or a blank line or a docstring: no comment for this group
    text = " ".join(above)
    return text.partition(". ")[0].rstrip(".")  # its first sentence: one line


def toml_value(value: Any) -> str:
    """A TOML value: JSON's strings, numbers and arrays are TOML's too; booleans are lower case."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, enum.Enum):
        value = value.value
    return msgspec.json.encode(msgspec.to_builtins(value)).decode()


# -- the directory -------------------------------------------------------------------------------


def initialize(data_dir: Path, host: str = "127.0.0.1", port: int = 8080) -> InitResult:
    """Make ``data_dir`` an exchange's data directory (see the module docstring)."""
    _check_directory(data_dir)
    result = InitResult(data_dir)
    fresh = not data_dir.exists()
    files.make_private_dir(data_dir)
    if fresh or not any(data_dir.iterdir()):
        os.chmod(data_dir, files.PRIVATE_DIR)  # an empty directory handed to init becomes the exchange's
    _write_config(data_dir / CONFIG_FILE, result)
    _open_registry(data_dir / REGISTRY_FILE, result)
    _make_tokens(data_dir, result)
    result.next_steps = next_steps(data_dir, host, port)
    files.write_atomic(data_dir / NEXT_FILE, result.next_steps.encode())
    return result


def _check_directory(data_dir: Path) -> None:
    if not data_dir.exists():
        return
    if not data_dir.is_dir():
        raise InitRefused(f"{data_dir} is a file, not a directory: give a new or empty directory")
    held = {entry.name for entry in data_dir.iterdir()}
    if held and not held.intersection(EXCHANGE_MARKERS):
        raise InitRefused(f"{data_dir} is not empty and holds no exchange (no {' or '.join(EXCHANGE_MARKERS)}): "
                          "give a new or empty directory")


def _write_config(path: Path, result: InitResult) -> None:
    if path.exists():
        load_config(path)  # a configuration kept must still load (ConfigError names what is wrong)
        result.kept.append(f"the configuration {path}")
        return
    text = config_text()
    files.write_atomic(path, text.encode())
    result.made.append(f"the configuration {path}")


def _open_registry(path: Path, result: InitResult) -> None:
    registry = SqlRegistry(f"sqlite:///{path}")
    try:
        registry.create_schema()
        actor = default_actor()
        present = {account.account_type: account.account_id for account in registry.accounts()}
        for account_id, kind in REGISTRY_ACCOUNTS:
            if kind in present:  # one account of each of these types: keep the one there, by its id
                result.kept.append(f"the registry account {present[kind]} ({kind.value})")
                continue
            registry.open_account(account_id, kind.value, actor=actor, reason="opened by exchange init")
            result.made.append(f"the registry account {account_id} ({kind.value})")
    finally:
        registry.close()


def _make_tokens(data_dir: Path, result: InitResult) -> None:
    existed = (data_dir / TOKENS_FILE).exists()
    _, path = operator_token_store(data_dir)  # made at first call, the same way `serve` would
    (result.kept if existed else result.made).append(f"the operator tokens {path} (mode 0600)")


def next_steps(data_dir: Path, host: str, port: int) -> str:
    base = f"http://{host}:{port}"
    db = f"sqlite:///{data_dir / REGISTRY_FILE}"
    tokens = data_dir / TOKENS_FILE
    return f"""What next, for the exchange in {data_dir}

1. Serve it (the engine, members on WebSocket, operators on HTTP):
     exchange serve --data-dir {data_dir} --config {data_dir / CONFIG_FILE} --host {host} --port {port}
   Members connect to ws://{host}:{port}/ws; the operator API is {base}.

2. The operator tokens are in {tokens} (mode 0600), one per role (admin, clearing, regulator).
   Each request carries one: Authorization: Bearer TOKEN. For example:
     ADMIN=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["admin"])' {tokens})
     CLEARING=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["clearing"])' {tokens})

3. Admit a member (this opens its registry holding account, under the member's id, and its
   cash account), then issue its key:
     curl -H "Authorization: Bearer $ADMIN" -d '{{"member_id": "M0001", "kind": "voluntary"}}' {base}/members
     curl -H "Authorization: Bearer $ADMIN" -X POST {base}/members/M0001/credentials
   The key's secret is shown once: hand it to the member.

4. Deposit its cash (in fen; the reference makes a retry harmless):
     curl -H "Authorization: Bearer $CLEARING" -d '{{"member_id": "M0001", "amount_fen": 100000000, "reference": "PAY-1"}}' {base}/clearing/deposits

5. Give it allowances (the authority): a cap, an issue into GOV-ALLOCATION, an allocation:
     exchange registry set-cap 2025 1000000 --db {db}
     exchange registry issue CEA-2025 100000 --reason "2025 allocation" --id ISSUE-2025-1 --db {db}
     exchange registry allocate M0001 CEA-2025 5000 --reason "2025 allocation" --id ALLOC-2025-M0001 --db {db}
   `exchange registry accounts --db {db}` lists the accounts.

6. The trading day runs itself by [calendar] in the configuration (start of day, which loads
   the holdings from the registry, the phases, the close and settlement). To open a day by hand:
     curl -H "Authorization: Bearer $CLEARING" -d '{{"trading_day": "YYYY-MM-DD"}}' {base}/clearing/start-of-day
"""


# -- the command ---------------------------------------------------------------------------------


def add_init_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("init", help="make a data directory: configuration, registry, operator tokens",
                                   description="Make a data directory ready for `exchange serve`.")
    parser.add_argument("data_dir", metavar="DIR", help="the data directory to make (new or empty)")
    parser.add_argument("--host", default="127.0.0.1", help="the host the what-next text serves on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="the port the what-next text serves on (default 8080)")
    parser.set_defaults(run=run_init)
    return parser


def run_init(args: argparse.Namespace) -> int:
    try:
        result = initialize(Path(args.data_dir), args.host, args.port)
    except InitRefused as refusal:
        print(f"error: {refusal}", file=sys.stderr)
        return 2
    for item in result.made:
        print(f"made {item}")
    for item in result.kept:
        print(f"kept {item} (already there)")
    print(f"(this text is also in {result.data_dir / NEXT_FILE})")
    print()
    print(result.next_steps, end="")
    return 0
