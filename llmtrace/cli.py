"""The ``llmtrace`` command: a thin click group; each command lives in llmtrace/commands/."""

from __future__ import annotations

import click

from llmtrace import __version__
from llmtrace.commands.audit import audit
from llmtrace.commands.costs import costs
from llmtrace.commands.demo import demo
from llmtrace.commands.importing import import_group
from llmtrace.commands.prices import prices
from llmtrace.commands.reconcile import reconcile
from llmtrace.commands.rules import rules
from llmtrace.commands.run import run


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="llmtrace")
def cli() -> None:
    """What each LLM call costs, and where the money is wasted.

    \b
    Example:
      llmtrace demo && llmtrace costs --by model
    """


for _command in (demo, costs, prices, import_group, audit, rules, run, reconcile):
    cli.add_command(_command)


def main() -> None:
    """Console-script entry point."""
    cli()


if __name__ == "__main__":
    main()
