"""``llmtrace prices MODEL``: the rates llmtrace would charge for a model, and where they came from.

The command a user runs when a cost looks wrong: it shows the exact rates ``price_calls`` uses
(after fallbacks, tiers and the user's price file), the genai-prices ids the name matched and the
dated or time-of-day price in force, so a surprise can be traced to data rather than guessed at.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from llmtrace.commands.common import (
    WHEN,
    console,
    err_console,
    format_option,
    load_price_book,
    open_existing_store,
    prices_option,
    store_option,
)
from llmtrace.price_book import PriceBook
from llmtrace.rates import COMPONENTS, PER, Rate, Rates

# component -> (label, unit the table quotes it in)
_LABELS: dict[str, tuple[str, str]] = {
    "input": ("input", "per 1M tokens"),
    "cache_read": ("cache read", "per 1M tokens"),
    "cache_write": ("cache write (5m)", "per 1M tokens"),
    "cache_write_1h": ("cache write (1h)", "per 1M tokens"),
    "output": ("output", "per 1M tokens"),
    "reasoning": ("reasoning", "per 1M tokens"),
    "request": ("request", "per request"),
}


@click.command("prices")
@click.argument("model", required=False)
@click.option("--provider", default=None, help="Provider as recorded (openai, aws.bedrock, ...).")
@store_option
@click.option(
    "--at",
    type=WHEN,
    default=None,
    help="Price in force at this date or date-time (naive = UTC). Default: now.",
)
@click.option(
    "--service-tier",
    default=None,
    help="Rates of this service tier (flex, priority, batch...) instead of the standard ones.",
)
@prices_option
@format_option(["table", "json"])
def prices(
    model: str | None,
    provider: str | None,
    store_path: str | None,
    at: datetime | None,
    service_tier: str | None,
    prices_file: Path | None,
    fmt: str,
) -> None:
    """Show the rates in force for MODEL (USD per million tokens) and where they came from.

    Without MODEL: every model in the store, with its calls and main rates.

    Tiers apply to all tokens of a call once its total input exceeds the tier start. Exits 1 when
    no price is known for MODEL.

    \b
    Examples:
      llmtrace prices                      # every model in the store
      llmtrace prices claude-sonnet-4-5
      llmtrace prices o3 --at 2025-05-01 --format json
      llmtrace prices deepseek-chat --at 2026-11-27T02:00Z
      llmtrace prices o3 --service-tier flex
      llmtrace prices ft:gpt-4o-mini:acme:1 --provider openai --prices prices.toml
    """
    book = load_price_book(prices_file)
    when = at or datetime.now(UTC)
    if model is None:
        _store_models(book, store_path, provider, when, fmt)
        return
    rates = book.rates_for(provider, model, when, service_tier)
    if rates is None and book.rates_for(provider, model, when) is not None:
        _no_tier_price(model, provider, service_tier or "")
    if rates is None:
        _unknown(book, model, provider)
    if fmt == "json":
        click.echo(json.dumps(_as_json(model, provider, when, rates), indent=2))
    else:
        _print_table(model, provider, when, rates)


def _unknown(book: PriceBook, model: str, provider: str | None) -> None:
    known_by = book.providers_for(model) if provider is None else []
    if known_by:
        near = f" It is known under --provider {', '.join(known_by)}."
    else:
        hint = book.suggest(model)
        near = f" Close names: {', '.join(hint)}." if hint else ""
    err_console.print(
        f"llmtrace: no price for model {model!r} (provider: {provider or 'any'}) in "
        f"{book.source}.{near}\nGive it rates in a price file, e.g.\n"
        f'  [[price]]\n  model = "{model}"\n  input_mtok = 1.0\n  output_mtok = 2.0',
        markup=False,
    )
    raise click.exceptions.Exit(1)


def _no_tier_price(model: str, provider: str | None, tier: str) -> None:
    err_console.print(
        f"llmtrace: no {tier} price for model {model!r} (provider: {provider or 'any'}); calls "
        "on that tier stay unpriced rather than priced at standard rates.\nGive the tier a "
        f'price in a price file, e.g.\n  [[price]]\n  model = "{model}"\n'
        f'  service_tier = "{tier}"\n'
        "  multiplier = ...  # share of the standard price; or input_mtok and output_mtok",
        markup=False,
    )
    raise click.exceptions.Exit(1)


def _quoted(name: str, value: float) -> float:
    """A price as the table quotes it: per 1M tokens, or per single request."""
    return value / PER[name] if name == "request" else value


def _money(value: float) -> str:
    text = f"{value:,.6f}".rstrip("0")
    whole, _, frac = text.partition(".")
    return f"${whole}.{frac.ljust(2, '0')}"


def _tiers(name: str, rate: Rate) -> str:
    return "; ".join(f"> {start:,} input: {_money(_quoted(name, p))}" for start, p in rate.tiers)


def _print_table(model: str, provider: str | None, when: datetime, rates: Rates) -> None:
    matched = f"{rates.provider_id or provider or 'any provider'} / "
    matched += rates.model_id or "custom model"
    console.print(f"[bold]{model}[/bold] -> {matched}", markup=True)
    console.print(f"at {when:%Y-%m-%d %H:%M} UTC; period: {rates.period}", markup=False)
    console.print(f"source: {rates.source}", markup=False)
    for line in rates.overrides or ("none",):
        console.print(f"override: {line}", markup=False)
    fallbacks = dict(rates.fallbacks)
    table = Table(show_edge=False, pad_edge=False)
    for header, justify in (("rate", "left"), ("USD", "right"), ("unit", "left")):
        table.add_column(header, justify=justify)  # type: ignore[arg-type]
    table.add_column("tiers / note")
    for name in COMPONENTS:
        rate = rates.component(name)
        if name == "request" and rate.base == 0 and not rate.tiers:
            continue
        label, unit = _LABELS[name]
        note = _tiers(name, rate)
        if name in fallbacks:
            note = note or f"no own price; from {_LABELS[fallbacks[name]][0]}"
        table.add_row(label, _money(_quoted(name, rate.base)), unit, note)
    console.print(table)


def _as_json(model: str, provider: str | None, when: datetime, rates: Rates) -> dict[str, Any]:
    def rate_json(name: str) -> dict[str, Any]:
        rate = rates.component(name)
        return {
            "base": _quoted(name, rate.base),
            "tiers": [{"above_input_tokens": s, "price": _quoted(name, p)} for s, p in rate.tiers],
            "unit": _LABELS[name][1],
            "billed_as": dict(rates.fallbacks).get(name),
        }

    return {
        "model": model,
        "provider": provider,
        "at": when.isoformat(),
        "matched": {"provider_id": rates.provider_id, "model_id": rates.model_id},
        "period": rates.period,
        "overrides": list(rates.overrides),
        "source": rates.source,
        "rates": {name: rate_json(name) for name in COMPONENTS},
    }


# the rates the store listing shows, per 1M tokens
_LISTED = ("input", "cache_read", "output")


def _store_models(
    book: PriceBook, store_path: str | None, provider: str | None, when: datetime, fmt: str
) -> None:
    """Every (provider, model) in the store, most calls first, with its main rates at ``when``:
    what the costs footnote's "run llmtrace prices" leads to."""
    import polars as pl

    store = open_existing_store(store_path)
    calls = store.scan()
    if provider is not None:
        calls = calls.filter(pl.col("provider") == provider)
    models = (
        calls.group_by("provider", "model")
        .agg(pl.len().alias("calls"))
        .sort(["calls", "provider", "model"], descending=[True, False, False], nulls_last=True)
        .collect()
    )
    rows = []
    for row in models.iter_rows(named=True):
        rates = book.rates_for(row["provider"], row["model"], when) if row["model"] else None
        listed = (
            {name: _quoted(name, rates.component(name).base) for name in _LISTED}
            if rates is not None
            else None
        )
        rows.append({**row, "rates": listed})
    if fmt == "json":
        click.echo(json.dumps({"at": when.isoformat(), "source": book.source, "models": rows}))
        return
    if not rows:
        err_console.print(
            f"The store at {store.path} holds no calls yet; name a model "
            "(llmtrace prices gpt-4o) or run `llmtrace demo`.",
            markup=False,
        )
        return
    table = Table(title=f"Models in {store.path}, USD per 1M tokens at {when:%Y-%m-%d %H:%M} UTC")
    table.title_justify = "left"
    for header, justify in (
        ("Provider", "left"),
        ("Model", "left"),
        ("Calls", "right"),
        ("Input", "right"),
        ("Cache read", "right"),
        ("Output", "right"),
    ):
        table.add_column(header, justify=justify)  # type: ignore[arg-type]
    for row in rows:
        rates = row["rates"]
        cells = (
            [_money(rates[name]) for name in _LISTED] if rates is not None else ["no price", "", ""]
        )
        table.add_row(row["provider"] or "-", row["model"] or "-", f"{row['calls']:,}", *cells)
    console.print(table)
    console.print(f"source: {book.source}. Details: llmtrace prices MODEL", markup=False)
