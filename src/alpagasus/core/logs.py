"""Logging for rule scripts: to the rule's log file and to stderr, with secrets redacted.

A failing rule's log ends with its error and traceback (Snakemake's console says "check log
file(s) for error details"): :func:`setup` logs an uncaught exception before the process exits,
and :func:`redirect_output` prints it into the log before the redirection is undone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import traceback
from pathlib import Path

SECRET_VARS = ("OPENAI_API_KEY", "AZURE_OPENAI_API_KEY", "ANTHROPIC_API_KEY")


class _Redact(logging.Filter):
    def __init__(self, extra_vars=()):
        super().__init__()
        self.secrets = [v for name in (*SECRET_VARS, *extra_vars) if (v := os.environ.get(name)) and len(v) >= 8]

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        for s in self.secrets:
            msg = msg.replace(s, "***")
        record.msg, record.args = msg, None
        return True


def setup(log_path: str | None = None, secret_vars=()) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w", encoding="utf-8"))
    redact = _Redact(secret_vars)
    for h in handlers:
        h.addFilter(redact)
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True)
    sys.excepthook = _log_uncaught
    # The SDK's HTTP loggers print one line per request at INFO; keep them quiet.
    for noisy in ("httpx", "httpx2", "openai", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _log_uncaught(exc_type, exc, tb) -> None:
    """sys.excepthook: the traceback goes through logging (so to the log file, and redacted,
    as the message: a Formatter's exc_info text would bypass the redaction filter)."""
    if issubclass(exc_type, KeyboardInterrupt):
        sys.__excepthook__(exc_type, exc, tb)
        return
    text = "".join(traceback.format_exception(exc_type, exc, tb)).rstrip()
    logging.getLogger("alpagasus").error("the job failed: %s: %s\n%s", exc_type.__name__, exc, text)


@contextlib.contextmanager
def redirect_output(log_file: str | os.PathLike | None):
    """Send this process's stdout/stderr (file descriptors, so child processes and C code too)
    and Python logging to ``log_file``, appending; a no-op when ``log_file`` is None. An
    exception leaving the block is printed into the log first, then re-raised."""
    if not log_file:
        yield
        return
    Path(log_file).parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log_file, "a", encoding="utf-8") as fh:
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                            force=True)
        try:
            yield
        except SystemExit as exc:
            if exc.code not in (None, 0):
                print(f"the job failed: exit status {exc.code}", file=sys.stderr)
            raise
        except BaseException:
            # Still redirected: the traceback lands in the log (Python would print it only after
            # the redirection is undone, to Snakemake's console).
            traceback.print_exc()
            raise
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
