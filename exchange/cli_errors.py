"""Expected failures of the ``exchange`` commands, said as one line: what is wrong, what to do.

A command that meets a locked data directory, a port in use, a bad or missing configuration,
a journal it cannot open or a file it may not touch prints one line on stderr and exits 2; a
traceback is left for a real bug (an exception :func:`explain` does not know).

Decisions:

- One module for every command (``cli.py`` and ``serve.py`` both use it), so the same mistake
  reads the same wherever it happens.
- The journal's lock (``JournalError: ... open for writing elsewhere``) means another process
  has the data directory; what to do depends on the command, so the caller names itself.
- An ``OSError`` is the surroundings' (a permission, a full disk, a missing directory), never
  the program's: said with its file, not traced. ``serve`` says a port in use itself, since
  only it knows the host and port it tried.
"""

from __future__ import annotations

import errno
from pathlib import Path

from exchange.config import ConfigError
from exchange.engine import ProjectionAhead
from exchange.engine.journal import JournalCorrupted, JournalError

EXIT_REFUSED = 2

# What to do when another process holds the data directory, by command.
IN_USE_ADVICE = {
    "serve": "is `exchange serve` already running on it? stop that one, or give another --data-dir",
    "settle": "a running `exchange serve` holds it: settle through its operator API (POST /clearing/settlements) "
              "or stop the server first",
    "simulate": "another exchange process holds it: stop it, or give another --data-dir",
}


def explain(error: BaseException, command: str, data_dir: Path | str | None = None) -> str | None:
    """The one line for an expected failure of ``command``; None for anything else (a bug)."""
    said = _sentence(error, command, data_dir)
    return " ".join(said.split()) if said is not None else None  # one line, whatever the message held


def _sentence(error: BaseException, command: str, data_dir: Path | str | None) -> str | None:
    where = f"the data directory {data_dir}" if data_dir is not None else "the data directory"
    match error:
        case ConfigError() if "cannot read configuration" in str(error):
            return f"configuration error: {error} (check the path given to --config; `exchange init DIR` writes one)"
        case ConfigError():
            return f"configuration error: {error} (fix the file, or leave --config out for the market rules' defaults)"
        case JournalCorrupted():
            return f"error: the journal in {where} does not verify: {error}; nothing was changed (an operator must decide)"
        case JournalError() if "open for writing elsewhere" in str(error):
            return f"error: {where} is in use by another process; {IN_USE_ADVICE.get(command, IN_USE_ADVICE['simulate'])}"
        case JournalError():
            return f"error: the journal in {where} cannot be opened: {error}"
        case ProjectionAhead():
            return f"error: cannot open the exchange in {where}: {error}"
        case OSError() if error.errno == errno.EADDRINUSE:
            return f"error: the address is already in use: {error.strerror}; stop what listens there or choose another --port"
        case OSError():
            target = f" {error.filename}" if error.filename else ""
            return f"error: cannot use{target}: {error.strerror or error} (check the path and its permissions)"
    return None
