"""The operators' audit log: who did what through the operator API, and how it ended.

One file in the data directory, ``operator-audit.jsonl``: one JSON object a line, appended,
never rewritten. The regulator reads it over the API (``GET /regulator/audit?since=N&limit=M``).

Decisions:

* **What is logged: every call that may change something** (``POST`` and ``DELETE``),
  by a caller with a valid role token, whatever its outcome: done (200/201), refused as bad
  input (400), forbidden to the role (403), not found (404), refused by the exchange (409) or
  failed (500). A call without a valid token (401: none, unknown or expired) is nobody's
  action and is **not** written here: an unauthenticated client could otherwise make the
  server fsync a line per request, a flood of disk writes for free (issue 10); such calls
  are one warning line per interval in the server's log, with their count. A request for no
  endpoint at all (the router's 404 or 405) is not an action either. **Reads (``GET``) are not logged**: they
  change nothing, ``/health`` and ``/metrics`` are scraped every few seconds and would bury
  the actions, and the regulator's own reading of this log would log itself. The engine's
  journal stays the record of what the exchange did; this log is the record of who asked.
* **Durable before the answer.** An entry is appended in one write and fsynced
  (:func:`exchange.files.append_durably`) before the response leaves, so an operator who saw
  an answer can find its entry after any crash. The write runs on the event loop, in the
  order the answers are made, which keeps ``seq`` in that order with no lock: one small
  fsync per operator action, rare beside the members' traffic (which is not audited). If the log cannot be written the action
  stands (the journal has it) and the failure is logged as an error: refusing afterwards
  would not undo it.
* **Who**: the role and the fingerprint of the token (the first 16 hex digits of its
  SHA-256, as ``/admin/tokens`` lists them); never a token. **What**: method, the path as
  called, the route's template, and the request body as JSON. **Outcome**: the status and
  the answer's body, or its error. Secrets are never written: every field named ``secret``
  or ``token`` (an issued API key's secret, a rotated role token) is replaced by
  ``"(not logged)"``, wherever it is in the body or the answer. Request and answer are kept
  up to 8 KiB each of JSON; a bigger one is summarised by its size (a settlement report
  with many differences, say).
* **Entries are numbered** from 1 without gaps (``seq``) and chained: ``chain`` is the
  SHA-256 of the previous entry's ``chain`` and this entry's other fields (hex, the first
  32 digits), so a removed or edited line shows (:meth:`AuditLog.verify`).
* **A cut last line** (a crash during the write) was never answered: it is dropped when the
  log is opened. Any other line that does not read is a damaged log: opening refuses,
  naming the line, for the operator to look at; nothing is repaired silently.
* Paging: ``since`` is the last ``seq`` the reader has (0 for the start); the answer gives
  up to ``limit`` (1 to 1000, default 100) entries after it and ``next``, the ``since`` for
  the following page. Line offsets are kept in memory, so a page costs its own lines.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import msgspec

from exchange import files

log = logging.getLogger("exchange.gateway.operator.audit")

AUDIT_FILE = "operator-audit.jsonl"
SECRET_FIELDS = frozenset({"secret", "token"})
NOT_LOGGED = "(not logged)"
MAX_KEPT_BYTES = 8 * 1024
MAX_PAGE = 1000
GENESIS = "0" * 32


class AuditEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One operator call. ``role`` is who the token says (``anonymous`` without one,
    ``invalid`` for a token that is no one's or expired); ``token`` its fingerprint."""

    seq: int
    at_ms: int
    role: str
    token: str | None
    method: str
    path: str
    endpoint: str
    request: Any
    status: int
    result: Any
    error: str | None
    chain: str


class AuditPage(msgspec.Struct, frozen=True):
    entries: list[AuditEntry]
    next: int  # the ``since`` of the next page


class AuditLogDamaged(Exception):
    """A line of the audit log (not the last) does not read."""


_decoder = msgspec.json.Decoder(AuditEntry)
_encoder = msgspec.json.Encoder()


def fingerprint(token: bytes) -> str:
    """What the log shows of a token (the same digits as ``TokenEntry.fingerprint``)."""
    return hashlib.sha256(token).hexdigest()[:16]


def without_secrets(value: Any) -> Any:
    """``value`` with every ``secret`` or ``token`` field replaced, at any depth."""
    if isinstance(value, dict):
        return {key: NOT_LOGGED if key in SECRET_FIELDS else without_secrets(item) for key, item in value.items()}
    if isinstance(value, list):
        return [without_secrets(item) for item in value]
    return value


def kept(raw: bytes) -> Any:
    """A request or answer body as the log keeps it: its JSON without secrets, or a note."""
    if not raw:
        return None
    try:
        value = msgspec.json.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return {"not_json_bytes": len(raw)}
    value = without_secrets(value)
    if len(_encoder.encode(value)) > MAX_KEPT_BYTES:
        return {"json_bytes": len(raw), "kept": False}
    return value


def chain_of(previous: str, entry: AuditEntry) -> str:
    fields = msgspec.structs.replace(entry, chain="")
    return hashlib.sha256(previous.encode() + _encoder.encode(fields)).hexdigest()[:32]


class AuditLog:
    """The append-only log on disk, with each line's offset in memory. ``path`` None: kept
    in memory only (an application built without a data directory, as the benchmarks do)."""

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = None if path is None else Path(path)
        self._offsets: list[int] = []  # where line seq N starts: self._offsets[N - 1]
        self._end = 0
        self._chain = GENESIS
        self._memory: list[bytes] = []
        if self.path is not None and self.path.exists():
            self._recover()

    @property
    def last_seq(self) -> int:
        return len(self._offsets)

    def _recover(self) -> None:
        assert self.path is not None
        data = self.path.read_bytes()
        whole, _, cut = data.rpartition(b"\n")
        if cut:
            log.warning("%s: dropped a cut last line of %d bytes (a write the crash interrupted, never answered)",
                        self.path, len(cut))
            os.truncate(self.path, len(whole) + 1 if whole else 0)
        offset = 0
        for number, line in enumerate(whole.split(b"\n") if whole else [], start=1):
            entry = self._read_line(line, number)
            self._offsets.append(offset)
            self._chain = entry.chain
            offset += len(line) + 1
        self._end = offset

    def _read_line(self, line: bytes, number: int) -> AuditEntry:
        try:
            entry = _decoder.decode(line)
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as error:
            raise AuditLogDamaged(f"{self.path}: line {number} does not read ({error}); move the file aside "
                                  "to start a new log, and keep it for the audit") from None
        if entry.seq != number:
            raise AuditLogDamaged(f"{self.path}: line {number} says it is entry {entry.seq}")
        return entry

    def append(self, at_ms: int, role: str, token: str | None, method: str, path: str, endpoint: str,
               request: bytes, status: int, answer: bytes) -> AuditEntry:
        """Write one entry and make it durable (raises ``OSError`` if it could not: then the
        log is as it was)."""
        answered = kept(answer)
        error = answered.get("error") if status >= 400 and isinstance(answered, dict) else None
        entry = AuditEntry(self.last_seq + 1, at_ms, role, token, method, path, endpoint, kept(request), status,
                           None if error is not None else answered, error if isinstance(error, str) else None, "")
        entry = msgspec.structs.replace(entry, chain=chain_of(self._chain, entry))
        line = _encoder.encode(entry) + b"\n"
        if self.path is None:
            self._memory.append(line)
        else:
            files.append_durably(self.path, line)
        self._offsets.append(self._end)
        self._end += len(line)
        self._chain = entry.chain
        return entry

    def page(self, since: int, limit: int) -> AuditPage:
        """Up to ``limit`` entries after entry ``since``."""
        assert since >= 0 and 1 <= limit <= MAX_PAGE
        first, last = min(since, self.last_seq), min(since + limit, self.last_seq)
        lines = self._lines(first, last)
        return AuditPage([_decoder.decode(line) for line in lines], last)

    def _lines(self, first: int, last: int) -> list[bytes]:
        """Lines first+1 .. last (1-based seq)."""
        if first == last:
            return []
        if self.path is None:
            return [line.rstrip(b"\n") for line in self._memory[first:last]]
        start = self._offsets[first]
        end = self._offsets[last] if last < self.last_seq else self._end
        with open(self.path, "rb") as handle:
            handle.seek(start)
            return handle.read(end - start).rstrip(b"\n").split(b"\n")

    def verify(self) -> list[str]:
        """Problems with the chain (empty: every entry is as written, none missing)."""
        problems, previous = [], GENESIS
        for entry in self._all():
            if chain_of(previous, entry) != entry.chain:
                problems.append(f"entry {entry.seq}: its chain does not follow from the entry before")
            previous = entry.chain
        return problems

    def _all(self) -> list[AuditEntry]:
        return [_decoder.decode(line) for line in self._lines(0, self.last_seq)]
