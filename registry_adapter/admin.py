"""Operator commands for the registry (登记簿), wired into the ``exchange`` CLI as
``exchange registry ...`` by :func:`add_registry_commands`; ``python -m registry_adapter.admin
registry ...`` runs them on their own.

Each command prints a readable result and returns an exit code: 0 done, 1 ``verify`` found a
problem, 2 refused or failed (one line on stderr names the problem and, for an unknown
account, where to look). The registry database defaults to ``sqlite:///data/registry.db``;
only ``init`` creates it (``exchange init DIR`` makes one in a data directory, with its
authority and exchange accounts). ``accounts`` lists every account: id, type, who holds it
(a member's holding account has the member's id), frozen, opened, tonnes held.

``issue``, ``allocate`` and ``correct-allocation`` require ``--id``, the operation's id (1 to
64 of letters, digits and _ . : -): an operator who does not know whether a command went
through (a dropped connection, a closed terminal) runs it again with the same id, and the
registry answers with the first result and changes nothing ("already done"). The same id with
other arguments is refused, naming what it was used for.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from registry_adapter.port import RegistryError, UnknownAccount
from registry_adapter.sql import AccountType, Entry, SqlRegistry, allowance_unit

DEFAULT_DB_URL = "sqlite:///data/registry.db"
EXIT_OK, EXIT_PROBLEMS, EXIT_ERROR = 0, 1, 2


class CommandError(Exception):
    """A problem with the command's surroundings (no database yet, a bad URL)."""


def add_registry_commands(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``registry`` and its sub-commands; each leaf sets ``run`` (args -> exit code)."""
    registry = subparsers.add_parser("registry", help="operate the allowance registry (登记簿)")
    commands = registry.add_subparsers(dest="registry_command", required=True, metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--db", default=DEFAULT_DB_URL, metavar="URL", help=f"registry database (default {DEFAULT_DB_URL})")
    common.add_argument("--actor", default=default_actor(), help="who acts: recorded with every entry")

    def command(name: str, run: Callable[[argparse.Namespace], int], help_text: str) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, parents=[common], help=help_text, description=help_text)
        parser.set_defaults(run=guarded(run))
        return parser

    command("init", init, "create the registry's tables (and the SQLite file)")
    parser = command("open-account", open_account, "open a registry account")
    parser.add_argument("account_id", metavar="ID", help="the account's id (a member's holding account: the member's id)")
    parser.add_argument("--type", required=True, choices=[kind.value for kind in AccountType], dest="account_type",
                        help="the account's type")
    parser.add_argument("--reason", default="opened by an operator", help="why: recorded with the entry")
    parser = command("set-cap", set_cap, "set the annual cap of a year (the authority)")
    parser.add_argument("year", type=year_number, metavar="YEAR", help="the compliance year")
    parser.add_argument("qty_t", type=tonnes, metavar="QTY", help="the cap in tonnes")
    parser.add_argument("--reason", default="annual cap set by the authority", help="why: recorded with the entry")
    parser = command("issue", issue, "issue allowances of a vintage into the government allocation account")
    parser.add_argument("unit", metavar="UNIT", help="the allowance unit, e.g. CEA-2025")
    parser.add_argument("qty_t", type=tonnes, metavar="QTY", help="tonnes to issue")
    parser.add_argument("--reason", required=True, help="why: recorded with the entry")
    add_operation_id(parser)
    parser = command("allocate", allocate, "allocate allowances to an account from the government account")
    parser.add_argument("account_id", metavar="ACCOUNT", help="the receiving account")
    parser.add_argument("unit", metavar="UNIT", help="the allowance unit, e.g. CEA-2025")
    parser.add_argument("qty_t", type=tonnes, metavar="QTY", help="tonnes to allocate")
    parser.add_argument("--reason", required=True, help="why: recorded with the entry")
    parser.add_argument("--compliance-only", action="store_true", help="units the member can surrender, not trade")
    parser.add_argument("--from-reserve", action="store_true", help="allocate from the adjustment reserve")
    add_operation_id(parser)
    parser = command("correct-allocation", correct_allocation, "set what an allocation amounts to (a correcting entry)")
    parser.add_argument("seq", type=entry_number, metavar="ENTRY", help="the allocation's entry number (see history)")
    parser.add_argument("qty_t", type=tonnes, metavar="QTY", help="what the allocation amounts to now")
    parser.add_argument("--reason", required=True, help="why: recorded with the entry")
    add_operation_id(parser)
    command("accounts", show_accounts, "list every account: id, type, who holds it, frozen, opened, tonnes held")
    parser = command("holdings", show_holdings, "show what an account holds")
    parser.add_argument("account_id", metavar="ACCOUNT", help="the account (see `exchange registry accounts`)")
    parser = command("history", show_history, "show the entries touching an account, oldest first")
    parser.add_argument("account_id", metavar="ACCOUNT", help="the account (see `exchange registry accounts`)")
    parser.add_argument("--limit", type=int, default=50, help="the latest N entries (0: all; default 50)")
    command("verify", verify, "recompute holdings from the journal and check the registry's rules")
    for name, run in (("freeze", freeze), ("unfreeze", unfreeze)):
        parser = command(name, run, f"{name} an account: nothing moves into or out of a frozen account")
        parser.add_argument("account_id", metavar="ACCOUNT", help="the account (see `exchange registry accounts`)")
        parser.add_argument("--reason", required=True, help="why: recorded with the entry")
    return registry


def add_operation_id(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--id", required=True, dest="operation_id", metavar="ID",
                        help="the operation's id: run again with the same id, nothing changes twice")


def default_actor() -> str:
    try:
        return f"operator:{getpass.getuser()}"
    except (KeyError, OSError, ImportError):  # no login name in this environment (no pwd entry, no pwd module)
        return "operator"


def tonnes(text: str) -> int:
    try:
        return int(text.replace(",", "").replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of tonnes") from None


def entry_number(text: str) -> int:
    try:
        return int(text.lstrip("#"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an entry number") from None


def year_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a year") from None


# ---------------------------------------------------------------------------------------------
# Running a command


def guarded(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn refusals and database trouble into a message naming the problem, and exit 2."""

    def guarded_run(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except UnknownAccount as error:
            print(f"error: {error}: `exchange registry accounts` lists the accounts, "
                  f"`exchange registry open-account` opens one", file=sys.stderr)
        except (RegistryError, CommandError) as error:
            print(f"error: {error}", file=sys.stderr)
        except sa.exc.SQLAlchemyError as error:
            print(f"error: the registry database at {shown(args.db)} failed: {database_problem(error)}", file=sys.stderr)
        return EXIT_ERROR

    return guarded_run


def database_problem(error: sa.exc.SQLAlchemyError) -> str:
    text = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
    if "no such table" in text or "does not exist" in text:
        return f"{text} (run `exchange registry init` first)"
    return text


def shown(url: str) -> str:
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return url


def sqlite_file(url: str) -> Path | None:
    parsed = sa.make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def open_registry(args: argparse.Namespace, creating: bool = False) -> SqlRegistry:
    try:
        path = sqlite_file(args.db)
    except sa.exc.ArgumentError:
        raise CommandError(f"{args.db!r} is not a database URL (e.g. {DEFAULT_DB_URL})") from None
    if path is not None:
        if creating:
            path.parent.mkdir(parents=True, exist_ok=True)
        elif not path.exists():
            raise CommandError(f"no registry database at {path}: run `exchange registry init --db {args.db}` first")
    return SqlRegistry(args.db)


def with_registry(args: argparse.Namespace, action: Callable[[SqlRegistry], int]) -> int:
    registry = open_registry(args)
    try:
        return action(registry)
    finally:
        registry.close()


# ---------------------------------------------------------------------------------------------
# The commands


def init(args: argparse.Namespace) -> int:
    registry = open_registry(args, creating=True)
    try:
        registry.create_schema()
    finally:
        registry.close()
    print(f"registry ready at {shown(args.db)}")
    return EXIT_OK


def open_account(args: argparse.Namespace) -> int:
    def action(registry: SqlRegistry) -> int:
        opened = registry.open_account(args.account_id, args.account_type, actor=args.actor, reason=args.reason)
        print(f"{'opened' if opened else 'already open:'} {args.account_id} ({args.account_type})")
        return EXIT_OK

    return with_registry(args, action)


def set_cap(args: argparse.Namespace) -> int:
    def action(registry: SqlRegistry) -> int:
        registry.set_annual_cap(args.year, args.qty_t, actor=args.actor, reason=args.reason)
        cap_t, issued_t = registry.annual_cap(args.year) or (args.qty_t, 0)
        reserve_t = cap_t * registry.reserve_percent // 100
        print(f"cap for {args.year}: {cap_t:,} t ({issued_t:,} t issued); "
              f"the adjustment reserve may hold up to {reserve_t:,} t of {allowance_unit(args.year)}")
        return EXIT_OK

    return with_registry(args, action)


def issue(args: argparse.Namespace) -> int:
    def action(registry: SqlRegistry) -> int:
        done_before = registry.operation(args.operation_id) is not None
        seq = registry.issue(args.unit, args.qty_t, actor=args.actor, reason=args.reason, operation_id=args.operation_id)
        if done_before:
            return already_done(args.operation_id, seq)
        cap_t, issued_t = registry.annual_cap(int(args.unit.removeprefix("CEA-"))) or (0, 0)
        print(f"issued {args.qty_t:,} t of {args.unit} into the government allocation account (entry {seq}); "
              f"{cap_t - issued_t:,} t of the cap left to issue")
        return EXIT_OK

    return with_registry(args, action)


def allocate(args: argparse.Namespace) -> int:
    def action(registry: SqlRegistry) -> int:
        done_before = registry.operation(args.operation_id) is not None
        seq = registry.allocate(
            args.account_id, args.unit, args.qty_t, actor=args.actor, reason=args.reason,
            compliance_only=args.compliance_only, from_reserve=args.from_reserve, operation_id=args.operation_id,
        )
        if done_before:
            return already_done(args.operation_id, seq)
        source = "the adjustment reserve" if args.from_reserve else "the government allocation account"
        kind = " compliance-only" if args.compliance_only else ""
        print(f"allocated {args.qty_t:,} t of{kind} {args.unit} to {args.account_id} from {source} (entry {seq})")
        return EXIT_OK

    return with_registry(args, action)


def correct_allocation(args: argparse.Namespace) -> int:
    def action(registry: SqlRegistry) -> int:
        done_before = registry.operation(args.operation_id) is not None
        seq = registry.correct_allocation(
            args.seq, args.qty_t, actor=args.actor, reason=args.reason, operation_id=args.operation_id,
        )
        if done_before:
            return already_done(args.operation_id, seq)
        if seq is None:
            print(f"allocation #{args.seq} already amounts to {args.qty_t:,} t: nothing to correct")
        else:
            print(f"allocation #{args.seq} now amounts to {args.qty_t:,} t (correcting entry {seq})")
        return EXIT_OK

    return with_registry(args, action)


def already_done(operation_id: str, seq: int | None) -> int:
    """A re-run of an operation id the registry knows: the request was the same (else it
    refused), so the first run stands and nothing changed."""
    recorded = f"entry {seq}" if seq is not None else "no entry (nothing needed correcting)"
    print(f"already done: operation {operation_id} was recorded before as {recorded}; nothing changed")
    return EXIT_OK


# Who holds each type of account (a member's holding account has the member's id).
HELD_BY = {
    AccountType.MEMBER_HOLDING: "member {account_id}",
    AccountType.EXCHANGE_SETTLEMENT: "the exchange",
    AccountType.GOVERNMENT_ALLOCATION: "the authority",
    AccountType.ADJUSTMENT_RESERVE: "the authority",
    AccountType.AUCTION: "the authority (auctions)",
    AccountType.CANCELLATION: "the authority (retired units)",
}


def show_accounts(args: argparse.Namespace) -> int:
    def action(registry: SqlRegistry) -> int:
        found = registry.accounts()
        print(f"{'account':<28} {'type':<22} {'held by':<30} {'frozen':<6} {'opened (UTC)':<19} "
              f"{'tradable t':>14} {'compliance-only t':>17}")
        for account in found:
            opened = datetime.fromtimestamp(account.opened_at_ns // 1_000_000_000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
            held_by = HELD_BY[account.account_type].format(account_id=account.account_id)
            print(f"{account.account_id:<28} {account.account_type.value:<22} {held_by:<30} "
                  f"{'yes' if account.frozen else 'no':<6} {opened:<19} {account.tradable_t:>14,} {account.compliance_only_t:>17,}")
        print(f"{len(found)} account{'' if len(found) == 1 else 's'}")
        return EXIT_OK

    return with_registry(args, action)


def show_holdings(args: argparse.Namespace) -> int:
    def action(registry: SqlRegistry) -> int:
        held = registry.holdings_detail(args.account_id)
        frozen = ", frozen" if registry.is_frozen(args.account_id) else ""
        print(f"holdings of {args.account_id} ({registry.account_type(args.account_id).value}{frozen})")
        if not held:
            print("  nothing held")
            return EXIT_OK
        by_unit: dict[str, list[int]] = {}
        for holding in held:
            by_unit.setdefault(holding.unit, [0, 0])[holding.compliance_only] += holding.qty_t
        print(f"  {'unit':<10} {'tradable t':>16} {'compliance-only t':>18}")
        for unit, (tradable, locked_up) in sorted(by_unit.items()):
            print(f"  {unit:<10} {tradable:>16,} {locked_up:>18,}")
        return EXIT_OK

    return with_registry(args, action)


def show_history(args: argparse.Namespace) -> int:
    def action(registry: SqlRegistry) -> int:
        found = registry.history(args.account_id, limit=args.limit or None)
        print(f"history of {args.account_id}: {len(found)} entr{'y' if len(found) == 1 else 'ies'}"
              + (f" (the latest {args.limit})" if args.limit and len(found) == args.limit else ""))
        for entry in found:
            print("  " + describe(entry))
        return EXIT_OK

    return with_registry(args, action)


def describe(entry: Entry) -> str:
    when = datetime.fromtimestamp(entry.at_ns // 1_000_000_000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
    what = entry.operation
    if entry.unit is not None and entry.qty_t:
        what += f" {entry.qty_t:,} t {entry.unit}"
        if entry.compliance_only:
            what += " (compliance-only)"
    route = f"{entry.from_account or '-'} -> {entry.to_account or '-'}"
    extras = [text for text in (
        entry.idempotency_id and f"id {entry.idempotency_id}",
        entry.compliance_year and f"year {entry.compliance_year}",
        entry.corrects_seq and f"corrects #{entry.corrects_seq}",
        entry.memo,
    ) if text]
    details = f" [{'; '.join(extras)}]" if extras else ""
    return f"#{entry.seq} {when} UTC  {what}  {route}{details}  by {entry.actor}: {entry.reason or '-'}"


def verify(args: argparse.Namespace) -> int:
    def action(registry: SqlRegistry) -> int:
        problems = registry.verify()
        if problems:
            print(f"registry verification FAILED: {len(problems)} problem(s)")
            for problem in problems:
                print(f"  {problem}")
            return EXIT_PROBLEMS
        print("registry verified: holdings match the journal, units are conserved, caps and reserve hold")
        for unit, totals in registry.totals().items():
            print(f"  {unit:<10} created {totals.created_t:>14,} t  retired {totals.retired_t:>14,} t  "
                  f"outstanding {totals.outstanding_t:>14,} t")
        return EXIT_OK

    return with_registry(args, action)


def freeze(args: argparse.Namespace) -> int:
    return with_registry(args, lambda registry: frozen_message(registry.freeze, args, "frozen"))


def unfreeze(args: argparse.Namespace) -> int:
    return with_registry(args, lambda registry: frozen_message(registry.unfreeze, args, "unfrozen"))


def frozen_message(operation: Callable[[str, str, str], None], args: argparse.Namespace, done: str) -> int:
    operation(args.account_id, args.actor, args.reason)
    print(f"{args.account_id} is {done}")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="registry-admin", description="Operate the allowance registry.")
    add_registry_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
