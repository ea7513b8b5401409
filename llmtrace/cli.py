"""The ``llmtrace`` command: a lazily loaded click group and the one place errors become exits.

Each command lives in its own module under llmtrace/commands/ and is registered by one line in
``COMMANDS``; its module is imported only when the command runs, so ``--help`` and
``--version`` stay fast (bench/bench_startup.py). Exit codes are decided here, once, for every
command (``llmtrace.errors``): 0 ok, 1 findings over the threshold or rejected input, 2 a usage
or configuration error. An error a user can fix is one line on stderr; ``--debug`` (or
``LLMTRACE_DEBUG=1``) shows the traceback instead.
"""

from __future__ import annotations

import sys
import traceback
from typing import Any

import click

from llmtrace import __version__
from llmtrace.commands.lazy import Entry, LazyGroup
from llmtrace.errors import EXIT_INTERRUPTED, EXIT_USAGE, LlmtraceError

# name -> where the command lives and the summary --help lists. One line per command.
COMMANDS: dict[str, Entry] = {
    "demo": Entry(
        "llmtrace.commands.demo:demo",
        "Generate a realistic demo workload, price it and add it to the store.",
    ),
    "costs": Entry(
        "llmtrace.commands.costs:costs", "What the calls in the store cost, grouped as you ask."
    ),
    "prices": Entry(
        "llmtrace.commands.prices:prices",
        "Show the rates in force for MODEL (USD per million tokens) and where they came from.",
    ),
    "import": Entry(
        "llmtrace.commands.import_group:import_group",
        "Import LLM calls from telemetry files or services into the store.",
    ),
    "audit": Entry(
        "llmtrace.commands.audit:audit",
        "Find where LLM money is wasted, with the evidence and the monthly saving.",
    ),
    "rules": Entry(
        "llmtrace.commands.rules:rules",
        "List the audit rules, or show one rule's page (llmtrace rules LT201).",
    ),
    "reprice": Entry(
        "llmtrace.commands.reprice:reprice",
        "Price stored calls again with the current price data plus your overrides.",
    ),
    "reconcile": Entry(
        "llmtrace.commands.reconcile:reconcile",
        "Compare the store's tokens and dollars with the provider's usage and cost reports.",
    ),
    "run": Entry(
        "llmtrace.commands.run:run",
        "Run COMMAND with every LLM call priced: llmtrace run -- python app.py",
    ),
    "store": Entry(
        "llmtrace.commands.store:store_group",
        "Check and repair the local store.",
    ),
}


class CliError(click.ClickException):
    """How a ``LlmtraceError`` or an unexpected exception reaches the user: one line, an exit."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file: Any = None) -> None:
        click.echo(f"llmtrace: error: {self.format_message()}", err=True)


def _describe_os_error(exc: OSError) -> str:
    """``No such file or directory: /nonexistent/dir/x.json`` rather than a traceback."""
    if exc.filename is not None and exc.strerror:
        return f"{exc.strerror}: {exc.filename}"
    return str(exc) or type(exc).__name__


class RootGroup(LazyGroup):
    """The ``llmtrace`` group: translates every exception of every command into an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:  # a bad option or argument of a command: one line
            where = exc.ctx.command_path if exc.ctx is not None else "llmtrace"
            raise CliError(f"{exc.format_message()} (see '{where} --help')", EXIT_USAGE) from None
        except (click.exceptions.Exit, click.Abort, click.ClickException, BrokenPipeError):
            raise  # click prints these itself, with their own exit codes
        except KeyboardInterrupt:
            _traceback_if_debug(ctx)
            click.echo("Interrupted.", err=True)
            ctx.exit(EXIT_INTERRUPTED)
        except LlmtraceError as exc:
            _traceback_if_debug(ctx)
            raise CliError(str(exc), exc.exit_code) from None
        except OSError as exc:  # a path that does not exist, is not writable, is a folder
            _traceback_if_debug(ctx)
            raise CliError(_describe_os_error(exc), EXIT_USAGE) from None
        except Exception as exc:  # noqa: BLE001 - never a traceback without --debug
            _traceback_if_debug(ctx)
            message = " ".join(str(exc).split()) or "(no message)"
            raise CliError(
                f"{type(exc).__name__}: {message} (internal error; run with --debug for the "
                "traceback, and please report it)",
                EXIT_USAGE,
            ) from None


def _traceback_if_debug(ctx: click.Context) -> None:
    """With ``--debug``, the traceback goes to stderr before the one-line message; the exit
    code stays the same, so a job run with --debug still reads it right."""
    if ctx.params.get("debug"):
        traceback.print_exc(file=sys.stderr)


@click.group(
    cls=RootGroup,
    lazy=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="llmtrace")
@click.option(
    "--debug",
    is_flag=True,
    envvar="LLMTRACE_DEBUG",
    help="Show the traceback of an error instead of the one-line message.",
)
def cli(debug: bool) -> None:
    """What each LLM call costs, and where the money is wasted.

    Exit codes: 0 ok, 1 findings over the threshold or rejected input, 2 usage or
    configuration error.

    \b
    Example:
      llmtrace demo && llmtrace costs --by model
    """


def main() -> None:
    """Console-script entry point."""
    cli()


if __name__ == "__main__":
    sys.exit(main())
