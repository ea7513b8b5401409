"""Exit codes and the one error type the CLI reports in a single line.

A nightly job reads the exit code before anything else, so every command means the same by it:
``0`` ok, ``1`` findings over the threshold or rejected input, ``2`` a usage or configuration
error (a bad option value, a missing file or credential, an unwritable output). Code anywhere
below the CLI raises ``LlmtraceError`` (or a subclass) with a message that names the file,
option or variable; ``llmtrace.cli`` turns it into one line on stderr and the exit code, so no
command handles it on its own. Kept free of imports: every layer may raise these.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FINDINGS = 1  # findings over --fail-on-savings, or input rejected (bad lines, spans)
EXIT_USAGE = 2  # usage or configuration error: bad option, file, credential; internal error
EXIT_INTERRUPTED = 130


class LlmtraceError(Exception):
    """An error the user can act on; its message is the whole report (one line, no traceback).

    ``exit_code`` says which kind: ``EXIT_USAGE`` (the default: fix the command or the config)
    or ``EXIT_FINDINGS`` (the input was rejected).
    """

    exit_code: int = EXIT_USAGE

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(LlmtraceError):
    """A usage or configuration error: exit 2."""

    exit_code = EXIT_USAGE


class RejectedInput(LlmtraceError):
    """Input that was read but refused (e.g. nothing valid in it): exit 1."""

    exit_code = EXIT_FINDINGS
