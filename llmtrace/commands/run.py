"""``llmtrace run -- python app.py``: price every LLM call of an app without changing its code.

Works like ``opentelemetry-instrument``: it puts a folder holding a ``sitecustomize`` module first
on ``PYTHONPATH`` (that module calls ``llmtrace.init()`` when the interpreter starts), turns the
options into the ``LLMTRACE_*`` / ``OTEL_*`` variables ``init()`` reads, and replaces itself
with the command, so signals, stdin/stdout and the exit code are the app's own.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import click

from llmtrace.commands.common import err_console
from llmtrace.errors import UsageError


def sitecustomize_dir() -> Path:
    """The folder ``llmtrace run`` prepends to PYTHONPATH."""
    import llmtrace.otel.sitecustomize as package

    return Path(package.__file__).resolve().parent


def child_environment(
    base: dict[str, str],
    *,
    exporters: str | None = None,
    store: str | None = None,
    service_name: str | None = None,
    capture_content: bool | None = None,
) -> dict[str, str]:
    """The environment the command runs in: options as variables, our folder on PYTHONPATH."""
    env = dict(base)
    if exporters:
        env["LLMTRACE_EXPORTERS"] = exporters
    if store:
        env["LLMTRACE_STORE"] = str(Path(store).resolve())
    if service_name:
        env["OTEL_SERVICE_NAME"] = service_name
    if capture_content is not None:
        env["LLMTRACE_CAPTURE_CONTENT"] = "true" if capture_content else "false"
    ours = str(sitecustomize_dir())
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != ours]
    cwd = os.getcwd()
    if cwd not in paths:  # as opentelemetry-instrument does, for apps run by their own launcher
        paths.insert(0, cwd)
    env["PYTHONPATH"] = os.pathsep.join([ours, *paths])
    return env


def _check_exporters(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Refuse an unknown exporter name here (exit 2), not inside the app where only its log
    would say so."""
    if value is None:
        return None
    from llmtrace.otel.settings import EXPORTER_NAMES

    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = sorted(set(names) - EXPORTER_NAMES)
    if unknown or not names:
        raise click.BadParameter(
            f"unknown exporter(s) {', '.join(unknown) or repr(value)}; "
            f"choose from {', '.join(sorted(EXPORTER_NAMES))}",
            ctx,
            param,
        )
    return ",".join(names)


@click.command(
    "run",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@click.option(
    "--exporters",
    default=None,
    callback=_check_exporters,
    help="Where spans go: any of otlp,store,console (default: $LLMTRACE_EXPORTERS, else store, "
    "plus otlp when OTEL_EXPORTER_OTLP_ENDPOINT is set).",
)
@click.option(
    "--store",
    "store_path",
    type=click.Path(file_okay=False),
    default=None,
    help="Store directory for the store exporter (default: $LLMTRACE_STORE, else ./.llmtrace).",
)
@click.option("--service-name", default=None, help="service.name of the app (OTEL_SERVICE_NAME).")
@click.option(
    "--capture-content/--no-capture-content",
    default=None,
    help="Let prompt and completion content onto spans (off by default).",
)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run(
    exporters: str | None,
    store_path: str | None,
    service_name: str | None,
    capture_content: bool | None,
    command: tuple[str, ...],
) -> None:
    """Run COMMAND with every LLM call priced: llmtrace run -- python app.py

    The exit code is COMMAND's own; 127 when COMMAND is not found (as a shell says it), 2 for a
    bad option or LLMTRACE_*/OTEL_* setting, refused before COMMAND starts.

    \b
    Example:
      llmtrace run --exporters store,console -- python app.py
      llmtrace costs --since 1h
    """
    executable = shutil.which(command[0])
    if executable is None:
        err_console.print(f"llmtrace: error: command not found: {command[0]}")
        sys.exit(127)  # as a shell says it: the command, not llmtrace, is missing
    env = child_environment(
        dict(os.environ),
        exporters=exporters,
        store=store_path,
        service_name=service_name,
        capture_content=capture_content,
    )
    from llmtrace.otel.settings import environment_problems

    problems = environment_problems(env)
    if problems:
        raise UsageError("; ".join(problems))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(executable, [command[0], *command[1:]], env)


if __name__ == "__main__":
    run()
