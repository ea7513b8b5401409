"""The ``llmtrace`` command: a thin click group; each command lives in llmtrace/commands/."""

from __future__ import annotations

import importlib

import click

from llmtrace import __version__

# (module in llmtrace.commands, attribute): every command registered here in one place.
_COMMANDS: list[tuple[str, str]] = [
    ("demo", "demo"),
    ("costs", "costs"),
    ("prices", "prices"),
    ("importing", "import_group"),
    ("audit", "audit"),
    ("rules", "rules"),
    ("run", "run"),
]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="llmtrace")
def cli() -> None:
    """What each LLM call costs, and where the money is wasted.

    \b
    Example:
      llmtrace demo && llmtrace costs --by model
    """


for _module, _attr in _COMMANDS:
    try:
        _command = getattr(importlib.import_module(f"llmtrace.commands.{_module}"), _attr)
    except ModuleNotFoundError as exc:  # a command still being built is left out, not fatal
        if exc.name != f"llmtrace.commands.{_module}":
            raise
        continue
    cli.add_command(_command)


def main() -> None:
    """Console-script entry point."""
    cli()


if __name__ == "__main__":
    main()
