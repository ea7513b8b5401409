"""``llmtrace rules``: list the rules (built-in and custom), and the rule page ``--explain`` prints.

Like ``ruff rule``: every rule has a stable code and a page (what it finds, why it costs money,
how to fix it, an example, its parameters), so a finding in a report can be looked up.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any, NoReturn

import click
from rich.table import Table

from llmtrace.commands.common import console, err_console, format_option
from llmtrace.config import Config, ConfigError, load_config
from llmtrace.errors import EXIT_USAGE, UsageError
from llmtrace.rules.base import RuleSpec
from llmtrace.rules.catalogue import Catalogue, params_table, rule_catalogue

EXIT_CONFIG = EXIT_USAGE


def exit_config_error(message: object) -> NoReturn:
    """Stop with a configuration error: one line, exit ``EXIT_CONFIG`` (``llmtrace.cli``), so
    CI tells it from findings."""
    raise UsageError(str(message))


def load_config_or_exit(path: str | None) -> Config:
    """The config (``--config FILE`` or the one found); a ConfigError exits with code 2."""
    try:
        return load_config(path)
    except ConfigError as exc:
        exit_config_error(exc)


def _toml_value(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str | list | bool) else repr(value)


def rule_page(spec: RuleSpec, origin: str, params: Mapping[str, Any] | None = None) -> str:
    """A rule's documentation as Markdown, the way ``ruff rule CODE`` prints it."""
    parts = [
        f"# {spec.name} ({spec.code})",
        "",
        f"{spec.summary}.",
        "",
        f"Origin: {origin}. Default severity: {spec.default_severity}.",
        "",
        "## What it finds",
        "",
        spec.doc.what.strip(),
        "",
        "## Why it costs money",
        "",
        spec.doc.why.strip(),
        "",
        "## How to fix it",
        "",
        spec.doc.fix.strip(),
        "",
    ]
    if spec.doc.example.strip():
        parts += ["## Example", "", spec.doc.example.rstrip(), ""]
    values = dict(params if params is not None else spec.params)
    if values:
        parts += ["## Parameters", "", f"Set in llmtrace.toml under `[rules.{spec.code}]`:", ""]
        parts += ["```toml", f"[rules.{spec.code}]"]
        parts += [f"{name} = {_toml_value(value)}" for name, value in values.items()]
        parts += ["```", ""]
    return "\n".join(parts)


def explain(code: str, config: Config) -> str:
    """The page of ``code`` (case-insensitive); ConfigError when no rule has that code."""
    catalogue = rule_catalogue(config)
    wanted = code.strip().upper()
    spec = catalogue.specs.get(wanted)
    if spec is None:
        known = ", ".join(sorted(catalogue.specs)) or "none"
        raise ConfigError(f"no rule has the code {code!r} (rules: {known})")
    return rule_page(spec, catalogue.origins[wanted], params_table(spec, config))


def _rows(catalogue: Catalogue) -> list[dict[str, Any]]:
    return [
        {
            "code": code,
            "name": spec.name,
            "summary": spec.summary,
            "severity": spec.default_severity,
            "origin": catalogue.origins[code],
            "runnable": code in catalogue.entries,
        }
        for code, spec in sorted(catalogue.specs.items())
    ]


@click.command("rules")
@click.argument("code", required=False)
@format_option(["text", "json"])
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="Config file.")
def rules(code: str | None, fmt: str, config_path: str | None) -> None:
    """List the audit rules, or show one rule's page (llmtrace rules LT201).

    Without CODE: code, name, summary, and whether built-in or custom. With CODE: what the
    rule finds, why it costs money, how to fix it, and its parameters (the page
    ``llmtrace audit --explain CODE`` prints).

    \b
    Examples:
      llmtrace rules
      llmtrace rules --format json
      llmtrace rules LT101               # one rule's documentation
    """
    config = load_config_or_exit(config_path)
    if code is not None:
        try:
            page = explain(code, config)
        except ConfigError as exc:
            exit_config_error(exc)
        click.echo(page)
        return
    try:
        catalogue = rule_catalogue(config)
    except ConfigError as exc:
        exit_config_error(exc)
    rows = _rows(catalogue)
    if fmt == "json":
        errors = [e.to_dict() for e in catalogue.errors]
        click.echo(json.dumps({"rules": rows, "errors": errors}, indent=2))
    else:
        grid = Table(title="llmtrace rules", title_justify="left")
        for column in ("Code", "Name"):
            grid.add_column(column, no_wrap=True)
        grid.add_column("Summary", overflow="fold", ratio=1)
        for column in ("Severity", "Origin"):
            grid.add_column(column, no_wrap=True)
        for row in rows:
            origin = row["origin"] if row["runnable"] else f"{row['origin']} (not loadable)"
            grid.add_row(row["code"], row["name"], row["summary"], row["severity"], origin)
        console.print(grid)
        for error in catalogue.errors:
            err_console.print(
                f"error: {error.rule}: {error.message}", highlight=False, markup=False
            )
    if catalogue.errors:
        sys.exit(EXIT_CONFIG)
