"""The user's price file: ``[[price]]`` entries read, checked and matched to calls.

Price file (TOML)
-----------------
Found in this order: the ``path`` argument (``--prices FILE``), ``$LLMTRACE_PRICES``, the
top-level ``prices = "file.toml"`` key of llmtrace.toml (relative to that file), else none.
It is a list of ``[[price]]`` entries::

    [[price]]                      # a negotiated discount on everything Anthropic from a date
    provider = "anthropic"
    model = "claude-*"
    multiplier = 0.8
    since = 2026-01-01             # TOML date or "2026-01-01"; inclusive
    until = "2027-01-01"           # exclusive; both optional, compared with the call's UTC date

    [[price]]                      # a reasoning premium
    model = "o3*"
    reasoning_multiplier = 1.5     # multiplies the reasoning rate (defaults to the output rate)

    [[price]]                      # a custom / fine-tuned model with absolute rates, USD per 1M
    provider = "openai"
    model = "ft:gpt-4o-mini:acme*"
    input_mtok = 0.30
    cache_read_mtok = 0.15
    output_mtok = 1.20
    note = "fine-tune, billed like gpt-4o-mini x2"

Fields of an entry:

``model`` (required), ``provider`` (optional)
    Case-insensitive globs (``*``, ``?``, ``[...]``). ``model`` is tried against the model name
    as recorded, the name without ``provider/`` or ``models/`` prefixes, and the genai-prices
    model id (so ``o3`` also matches ``o3-2025-04-16``). ``provider`` is tried against the
    recorded provider (``aws.bedrock``) and the genai-prices provider id (``aws``).
``since``, ``until``
    The entry's effective dates: ``since <= call date < until``.
Absolute rates, USD per million tokens (``requests_kcount``: USD per 1,000 requests)
    ``input_mtok`` and ``output_mtok`` (both required once any rate is given: a forgotten rate
    must not silently price at 0), ``cache_read_mtok``, ``cache_write_mtok``,
    ``cache_write_1h_mtok``, ``output_reasoning_mtok``, ``requests_kcount``. A value is a number
    or a tiered price ``{ base = 3.0, tiers = [{ start = 200000, price = 6.0 }] }``. The entry
    replaces the genai-prices price of the models it matches (or prices a model genai-prices does
    not know). Missing cache rates fall back to the input rate, the 1-hour write rate to the
    write rate and the reasoning rate to the output rate, as in genai-prices.
Multipliers (numbers >= 0)
    ``multiplier`` (every rate), ``input_multiplier`` (uncached input), ``cache_read_multiplier``,
    ``cache_write_multiplier`` (5-minute and 1-hour writes), ``output_multiplier`` (non-reasoning
    output), ``reasoning_multiplier``, ``request_multiplier``. They scale the rates in force after
    fallbacks, tiers included.
``note``
    Free text, shown by ``llmtrace prices``.
``service_tier``
    The tier the entry prices (``"flex"``, ``"priority"``, ``"batch"``...): it applies only to
    calls on that tier, and its absolute rates are the tier's price, or its multipliers scale
    the *standard* price in force (``multiplier = 0.5``: half the list price), replacing
    genai-prices' own price for the tier. Without it an entry prices the standard tier, and
    its multipliers (a negotiated discount) also apply on top of every tier's price.

How entries combine: among the entries in force for a call, the *first* one with absolute rates
sets the base price; *every* matching multiplier then applies (they multiply). An error in the
file raises ``ConfigError`` naming the file, the entry number (1-based) and the field.
"""

from __future__ import annotations

import fnmatch
import hashlib
import math
import os
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from llmtrace.config import ConfigError, load_config
from llmtrace.dialects import normalize_service_tier
from llmtrace.rates import MULTIPLIER_KEYS, PRICE_KEYS, Rate

PRICES_ENV = "LLMTRACE_PRICES"


# -- the user's price file --------------------------------------------------------------------


@dataclass(frozen=True)
class Override:
    """One ``[[price]]`` entry of the user's price file."""

    label: str
    model: str
    provider: str | None = None
    since: date | None = None
    until: date | None = None
    rates: Mapping[str, Rate] | None = None  # absolute rates as given (before fallbacks)
    multipliers: Mapping[str, float] = field(default_factory=dict)
    note: str | None = None
    service_tier: str | None = None  # the tier this entry prices; None: the standard price

    def matches(self, models: Iterable[str], providers: Iterable[str | None]) -> bool:
        """Whether the globs match any of the names a call's model and provider go by."""
        if not any(fnmatch.fnmatchcase(m, self.model) for m in models if m):
            return False
        if self.provider is None:
            return True
        return any(fnmatch.fnmatchcase(p, self.provider) for p in providers if p)

    def active(self, day: date) -> bool:
        """Whether the entry is in force on ``day`` (since inclusive, until exclusive)."""
        return (self.since is None or day >= self.since) and (
            self.until is None or day < self.until
        )

    def describe(self) -> str:
        """A short label for tables: ``prices.toml#2 (reasoning x1.5, since 2026-01-01)``."""
        parts = [f"{self.service_tier} tier"] if self.service_tier else []
        if self.rates is not None:
            parts.append("custom rates")
        parts += [
            f"{key.removesuffix('_multiplier')} x{v:g}" for key, v in self.multipliers.items()
        ]
        if self.since:
            parts.append(f"since {self.since}")
        if self.until:
            parts.append(f"until {self.until}")
        if self.note:
            parts.append(self.note)
        return f"{self.label} ({', '.join(parts)})"


_ENTRY_FIELDS = {
    "model",
    "provider",
    "since",
    "until",
    "note",
    "service_tier",
    *PRICE_KEYS,
    *MULTIPLIER_KEYS,
}


def load_overrides(path: Path) -> tuple[list[Override], str]:
    """Read a price file; returns its entries and a label ``name@sha256[:8]``.

    Raises ``ConfigError`` naming the file, entry and field for anything it cannot use, so a
    typo (``multipler``) fails loudly instead of silently leaving prices unchanged.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read price file: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    extra = sorted(set(data) - {"price"})
    if extra:
        raise ConfigError(f"{path}: unknown top-level key {extra[0]!r}; expected [[price]] entries")
    entries = data.get("price", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ConfigError(f"{path}: 'price' must be an array of tables ([[price]])")
    overrides = [_parse_entry(path, i, entry) for i, entry in enumerate(entries, start=1)]
    return overrides, f"{path.name}@{hashlib.sha256(raw).hexdigest()[:8]}"


def _parse_entry(path: Path, index: int, entry: dict[str, Any]) -> Override:
    def fail(name: str, problem: str) -> ConfigError:
        return ConfigError(f"{path}: [[price]] entry {index}: field {name!r}: {problem}")

    unknown = sorted(set(entry) - _ENTRY_FIELDS)
    if unknown:
        raise fail(unknown[0], f"unknown field; expected one of {', '.join(sorted(_ENTRY_FIELDS))}")
    model = entry.get("model")
    if not isinstance(model, str) or not model.strip():
        raise fail("model", "required: a model name or glob such as 'claude-*'")
    provider = entry.get("provider")
    if provider is not None and (not isinstance(provider, str) or not provider.strip()):
        raise fail("provider", "must be a provider name or glob")
    since, until = _entry_date(entry, "since", fail), _entry_date(entry, "until", fail)
    if since and until and until <= since:
        raise fail("until", f"{until} is not after since = {since}")
    note = entry.get("note")
    if note is not None and not isinstance(note, str):
        raise fail("note", "must be a string")
    tier = entry.get("service_tier")
    if tier is not None and (not isinstance(tier, str) or not tier.strip()):
        raise fail("service_tier", 'must be a tier name such as "flex" or "batch"')
    tier = None if tier is None else normalize_service_tier(tier)
    if tier == "standard":
        tier = None  # the list price: the same as an entry without a tier
    multipliers = {}
    for key in MULTIPLIER_KEYS:
        if key in entry:
            multipliers[key] = _number(entry[key], lambda p, k=key: fail(k, p))
    given = {PRICE_KEYS[k]: _entry_rate(entry[k], k, fail) for k in PRICE_KEYS if k in entry}
    if given:
        for required in ("input_mtok", "output_mtok"):
            if required not in entry:
                raise fail(required, "required when an entry gives absolute rates (0 if free)")
    if not given and not multipliers:
        raise fail(
            "multiplier", "the entry changes nothing: give rates (input_mtok...) or a multiplier"
        )
    rates = given or None
    return Override(
        label=f"{path.name}#{index}",
        model=model.strip().lower(),
        provider=provider.strip().lower() if provider else None,
        since=since,
        until=until,
        rates=rates,
        multipliers=multipliers,
        note=note,
        service_tier=tier,
    )


def _entry_date(entry: dict[str, Any], name: str, fail: Any) -> date | None:
    value = entry.get(name)
    if value is None:
        return None
    if isinstance(value, datetime):
        raise fail(name, "use a date (2026-01-01), not a date-time")
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise fail(name, f"{value!r} is not a date such as 2026-01-01")


def _number(value: Any, fail: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise fail(f"{value!r} is not a number")
    if not math.isfinite(value) or value < 0:
        raise fail(f"{value!r} must be a finite number >= 0")
    return float(value)


def _entry_rate(value: Any, key: str, fail: Any) -> Rate:
    if not isinstance(value, dict):
        return Rate(_number(value, lambda p: fail(key, p)))
    extra = sorted(set(value) - {"base", "tiers"})
    if extra or "base" not in value:
        raise fail(
            key, "a tiered price is { base = 3.0, tiers = [{ start = 200000, price = 6.0 }] }"
        )
    base = _number(value["base"], lambda p: fail(key, f"base: {p}"))
    tiers = []
    for tier in value.get("tiers", []):
        if not isinstance(tier, dict) or set(tier) != {"start", "price"}:
            raise fail(key, "each tier is { start = <input tokens>, price = <USD per 1M> }")
        start = tier["start"]
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise fail(key, f"tier start {start!r} must be a whole number of tokens >= 0")
        tiers.append((start, _number(tier["price"], lambda p: fail(key, f"tier price: {p}"))))
    return Rate(base, tuple(sorted(tiers)))


def find_price_file(path: Path | str | None) -> Path | None:
    if path is not None:
        return Path(path).expanduser()
    env = os.environ.get(PRICES_ENV)
    if env:
        return Path(env).expanduser()
    config = load_config()
    value = config.data.get("prices")
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{config.path}: 'prices' must be a file name such as \"prices.toml\"")
    return config.resolve_path(value)
