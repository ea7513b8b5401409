"""The price book: genai-prices' bundled data plus the user's price file, one call at a time.

Split from ``llmtrace.pricing`` so the live side can price a call without importing Polars: an
app that calls ``llmtrace.init()`` loads this module (and genai-prices' data) on a background
thread, and Polars is ~25 MB and ~0.2 s of CPU it would never use (bench/bench_startup.py).
``llmtrace.pricing`` re-exports everything here and adds the vectorised ``price_calls``.

This and ``llmtrace.pricing`` are the only modules that import ``genai_prices``, so an upgrade
(0.x releases do break APIs) touches two files. The book keeps a *private* ``DataSnapshot`` of
the bundled data: it never calls ``set_custom_snapshot`` (process-global, would change prices
for other libraries in the same process) and never starts ``UpdatePrices`` (network inside
someone else's program). See ``llmtrace.pricing`` for how prices, tiers and overrides combine.
"""

from __future__ import annotations

import bisect
import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import genai_prices
from genai_prices import types as gp_types
from genai_prices.data_snapshot import DataSnapshot

from llmtrace.dialects import normalize_provider, normalize_service_tier
from llmtrace.price_file import Override, find_price_file, load_overrides
from llmtrace.rates import MULTIPLIER_KEYS, PRICE_KEYS, Rate, Rates, complete_rates

# The record's cost fields and price statuses (llmtrace.record), repeated here so pricing one
# call never imports Polars; tests/test_startup.py checks they agree.
COST_COMPONENTS: tuple[str, ...] = (
    "input_cost",
    "cache_read_cost",
    "cache_write_cost",
    "output_cost",
    "reasoning_cost",
    "request_cost",
)
PRICE_OK = "ok"
PRICE_UNKNOWN_MODEL = "unknown_model"
PRICE_NO_MODEL = "no_model"
PRICE_NO_USAGE = "no_usage"
PRICE_INVALID_USAGE = "invalid_usage"
PRICE_UNPRICED_TIER = "unpriced_tier"

GENAI_SOURCE = f"genai-prices {genai_prices.__version__}"


def _rate_from_genai(value: Decimal | gp_types.TieredPrices | None) -> Rate | None:
    if value is None:
        return None
    if isinstance(value, gp_types.TieredPrices):
        tiers = tuple((int(t.start), float(t.price)) for t in sorted(value.tiers, key=_start))
        return Rate(float(value.base), tiers)
    return Rate(float(value))


def _start(tier: gp_types.Tier) -> int:
    return tier.start


def _rates_from_model_price(price: gp_types.ModelPrice) -> tuple[dict[str, Rate], tuple]:
    given = {}
    for key, name in PRICE_KEYS.items():
        rate = _rate_from_genai(getattr(price, key, None))
        if rate is not None:
            given[name] = rate
    return complete_rates(given)


# -- provider and model names -----------------------------------------------------------------


def normalise_model(model: str) -> str:
    """The bare model name: lower case, without ``models/`` or ``provider/`` prefixes."""
    name = model.strip().lower()
    return name.rsplit("/", 1)[-1] if "/" in name else name


def _model_candidates(model: str) -> list[str]:
    """Names to try, most specific first: as recorded, then with prefixes stripped one by one.

    The recorded name comes first because some providers' ids contain a slash
    (OpenRouter ``anthropic/claude-sonnet-4.5``).
    """
    name = model.strip().lower()
    names = [name]
    while "/" in name:
        name = name.split("/", 1)[1]
        names.append(name)
    return [n for n in dict.fromkeys(names) if n]


def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _tod_us(value: time | datetime) -> int:
    return ((value.hour * 60 + value.minute) * 60 + value.second) * 1_000_000 + value.microsecond


def _utc_time(value: time) -> time:
    if value.tzinfo is None:
        return value
    return datetime.combine(date(1970, 1, 1), value).astimezone(UTC).time()


@dataclass(frozen=True)
class _Model:
    """A (provider, model) as recorded, resolved once: what its price can depend on."""

    provider: gp_types.Provider | None
    info: gp_types.ModelInfo | None
    overrides: tuple[Override, ...]
    date_bounds: tuple[date, ...]
    tod_bounds: tuple[int, ...]  # microseconds of the UTC day where a price band starts or ends
    assumed: str | None = None  # the provider id assumed from the model (none was recorded)


def _constraints(info: gp_types.ModelInfo | None) -> list[Any]:
    if info is None or isinstance(info.prices, gp_types.ModelPrice):
        return []
    return [c.constraint for c in info.prices if c.constraint is not None]


# -- the price book ---------------------------------------------------------------------------


class PriceBook:
    """genai-prices' bundled data with the user's price file layered on top.

    Lookups are cached per book: a (provider, model) pair is resolved once, and its rates once per
    price period (date range and time-of-day band), which is what makes the live path take
    microseconds.
    """

    def __init__(self, overrides: Iterable[Override] = (), overrides_label: str | None = None):
        from genai_prices.data import providers

        self._snapshot = DataSnapshot(providers=providers, from_auto_update=False)
        self.overrides: tuple[Override, ...] = tuple(overrides)
        self.source = GENAI_SOURCE
        self.overrides_label = overrides_label
        if overrides_label:
            self.source += f" + overrides {overrides_label}"
        self._models: dict[tuple[str | None, str], _Model | None] = {}
        self._rates: dict[tuple[str | None, str, int, int], Rates | None] = {}
        # (provider, model, service tier as given, UTC day) -> rates_for's answer, for models
        # whose price has no time-of-day bands (``_rates_on``)
        self._daily: dict[tuple[Any, ...], Rates | None] = {}

    @classmethod
    def load(cls, path: Path | str | None = None) -> PriceBook:
        """The book with the price file from ``path``, ``$LLMTRACE_PRICES`` or the config."""
        chosen = find_price_file(path)
        if chosen is None:
            return cls()
        overrides, label = load_overrides(chosen)
        return cls(overrides, label)

    # resolution ------------------------------------------------------------------------------

    def _find(self, provider: str | None, model: str) -> tuple[Any, Any]:
        """genai-prices provider and model for a recorded pair, or (None, None)."""
        found_provider, info, _ = self._resolve(provider, model)
        return found_provider, info

    def _resolve(self, provider: str | None, model: str) -> tuple[Any, Any, bool]:
        """``_find``, and whether the provider was assumed (none recorded, or one genai-prices
        does not know)."""
        pid = None
        if provider and provider.strip():
            pid = normalize_provider(provider)  # records are normalised; hand-made may not be
            try:
                self._snapshot.find_provider(None, pid, None)
            except LookupError:
                pid = None  # a provider genai-prices does not know: guess from the model name
        for name in _model_candidates(model):
            try:
                return (*self._snapshot.find_provider_model(name, None, pid, None), pid is None)
            except LookupError:
                continue
        if pid is not None:
            return None, None, False
        if "/" in model:  # "anthropic/claude-..." with no provider recorded
            try:
                return (
                    *self._snapshot.find_provider_model(model.strip(), None, "litellm", None),
                    True,
                )
            except LookupError:
                pass
        return (*self._first_party(model), True)

    def _first_party(self, model: str) -> tuple[Any, Any]:
        """The model's own provider when genai-prices' guess from the name found none.

        genai-prices guesses a provider from the model name by each provider's ``model_match``
        (``gpt-*`` is OpenAI's); names outside those patterns (``text-embedding-3-small``) it
        does not place. Then every provider that lists the model is a candidate, and resellers
        say whom they resell: a candidate named in another candidate's
        ``fallback_model_providers`` (Azure lists OpenAI) is the first party. A single
        candidate is taken as it is; several resellers and no first party (an open-weights
        model on five hosts at five prices) stay unresolved rather than priced by a guess.
        """
        for name in _model_candidates(model):
            known = [(p, m) for p in self._snapshot.providers if (m := p.find_model(name))]
            if not known:
                continue
            ids = {p.id for p, _ in known}
            resold = {f for p, _ in known for f in p.fallback_model_providers or () if f in ids}
            chosen = [(p, m) for p, m in known if p.id in resold] if resold else known
            return chosen[0] if len(chosen) == 1 else (None, None)
        return None, None

    def _model(self, provider: str | None, model: str) -> _Model | None:
        key = (provider, model)
        if key in self._models:
            return self._models[key]
        gp_provider, info, assumed = self._resolve(provider, model)
        names = [*_model_candidates(model), info.id.lower() if info else None]
        providers = [provider.strip().lower() if provider else None]
        if provider:
            providers.append(normalize_provider(provider))
        if gp_provider is not None:
            providers.append(gp_provider.id)
        overrides = tuple(o for o in self.overrides if o.matches(names, providers))
        resolved = None
        if info is not None or any(o.rates is not None for o in overrides):
            constraints = _constraints(info)
            dates = _constraint_dates(info) if info is not None else set()
            dates |= {d for o in overrides for d in (o.since, o.until) if d is not None}
            if info is not None and gp_provider is not None:
                dates |= _variant_dates(info)
            tods = set()
            for c in constraints:
                if isinstance(c, gp_types.TimeOfDateConstraint):
                    tods |= {_tod_us(_utc_time(c.start_time)), _tod_us(_utc_time(c.end_time))}
            resolved = _Model(
                gp_provider,
                info,
                overrides,
                tuple(sorted(dates)),
                tuple(sorted(tods)),
                gp_provider.id if assumed and gp_provider is not None else None,
            )
        self._models[key] = resolved
        return resolved

    def suggest(self, model: str, limit: int = 3) -> list[str]:
        """Known model ids close to ``model``: a typo should get a hint, not just a refusal."""
        ids = {m.id.lower() for p in self._snapshot.providers for m in p.models}
        return difflib.get_close_matches(normalise_model(model), sorted(ids), n=limit, cutoff=0.6)

    def providers_for(self, model: str) -> list[str]:
        """genai-prices providers that know ``model`` (a hint when no provider was given)."""
        names = _model_candidates(model)
        return [p.id for p in self._snapshot.providers if any(p.find_model(n) for n in names)]

    def assumed_provider(self, provider: str | None, model: str) -> str | None:
        """The genai-prices provider id assumed for ``model`` when ``provider`` is missing or
        unknown to genai-prices; None when the recorded provider was used or none was found."""
        resolved = self._model(provider, model)
        return resolved.assumed if resolved else None

    def tod_bounds(self, provider: str | None, model: str) -> tuple[int, ...]:
        """Microseconds of the UTC day where this model's time-of-day price bands change."""
        resolved = self._model(provider, model)
        return resolved.tod_bounds if resolved else ()

    def rates_for(
        self, provider: str | None, model: str, at: datetime, service_tier: str | None = None
    ) -> Rates | None:
        """The rates in force for ``model`` at ``at`` (naive = UTC) on ``service_tier``; None
        if it has no price (for a non-standard tier: no price *for that tier*, see
        ``tier_rates``).

        Cached by (provider, model, date range, time-of-day band, tier): everything the price
        depends on, so the warm path is two dict lookups and two bisects.
        """
        resolved = self._models.get((provider, model), _MISSING)
        if resolved is _MISSING:
            resolved = self._model(provider, model)
        if resolved is None:
            return None
        at = _utc(at)
        day = at.date()
        date_band = bisect.bisect_right(resolved.date_bounds, day)
        tod_band = (
            bisect.bisect_right(resolved.tod_bounds, _tod_us(at)) if resolved.tod_bounds else 0
        )
        tier = standard_tier(service_tier)
        key = (provider, model, date_band, tod_band, tier)
        rates = self._rates.get(key, _MISSING)
        if rates is _MISSING:
            rates = self._rates[key] = self._rates_at(resolved, at, tier)
        return rates

    def tier_rates(
        self, provider: str | None, model: str, at: datetime, service_tier: str
    ) -> Rates | None:
        """The rates of ``service_tier`` (``batch``, ``flex``, ``priority``...) for a model at a
        time, or None when nothing prices that tier: never the standard rates in its place.

        From the price file's entries for the tier (absolute rates, or multipliers of the
        standard price), else genai-prices' price variants for the tier in force at ``at``
        (OpenAI ``service_tier`` flex/priority from 2026-10-12; batch as ``processing`` for
        Anthropic, OpenAI, Google, Mistral, Groq and xAI from 2026-10-14). For ``standard``
        (or None) these are the standard rates. The one lookup for "what would this call cost
        on another tier" (batch-eligible traffic, reconciliation with the bill).
        """
        return self.rates_for(provider, model, at, service_tier)

    def _rates_at(self, resolved: _Model, at: datetime, tier: str | None = None) -> Rates | None:
        active = [o for o in resolved.overrides if o.active(at.date())]
        plain = [o for o in active if o.service_tier is None]
        tiered = [o for o in active if tier is not None and o.service_tier == tier]
        standard = self._standard_base(resolved, plain, at)
        if tier is None:
            if standard is None:
                return None
            rates, fallbacks, period, base_entry = standard
        else:
            absolute = next((o for o in tiered if o.rates is not None), None)
            variant = _variant_price(resolved, at, tier)
            if absolute is not None:
                rates, fallbacks = complete_rates(absolute.rates or {})
                period, base_entry = f"{tier}: custom rates from {absolute.label}", absolute
            elif tiered and standard is not None:  # multipliers of the standard price
                rates, fallbacks, period, base_entry = standard
                period = f"{tier}: standard price ({period}) x the tier's multipliers"
            elif variant is not None and not any(o.rates is not None for o in plain):
                price, since = variant
                rates, fallbacks = _rates_from_model_price(price)
                period = f"{tier} price" + (f" from {since}" if since else "")
                base_entry = None
            else:
                return None
        multiplied = [o for o in (*plain, *tiered) if o.multipliers]
        for override in multiplied:
            for key, factor in override.multipliers.items():
                for name in MULTIPLIER_KEYS[key]:
                    rates[name] = rates[name].scaled(factor)
        applied = [o for o in active if o is base_entry or o in multiplied]
        return Rates(
            **rates,
            provider_id=resolved.provider.id if resolved.provider else None,
            model_id=resolved.info.id if resolved.info else None,
            period=period,
            overrides=tuple(o.describe() for o in applied),
            fallbacks=fallbacks,
            source=self._source(applied)
            + (f" (provider {resolved.assumed} assumed)" if resolved.assumed else ""),
        )

    def _standard_base(
        self, resolved: _Model, plain: list[Override], at: datetime
    ) -> tuple[dict[str, Rate], tuple, str, Override | None] | None:
        """The standard price before multipliers: the first entry without a tier that has
        absolute rates, else genai-prices' price in force; None when neither exists."""
        absolute = next((o for o in plain if o.rates is not None), None)
        if absolute is not None:
            rates, fallbacks = complete_rates(absolute.rates or {})
            return rates, fallbacks, f"custom rates from {absolute.label}", absolute
        if resolved.info is None:
            return None
        price = resolved.info.get_prices(at)
        rates, fallbacks = _rates_from_model_price(price)
        return rates, fallbacks, _describe_period(resolved.info, price, at), None

    def _source(self, applied: list[Override]) -> str:
        """``price_source`` of calls priced with ``applied`` entries: the price data, plus the
        file (name and hash) and entry numbers when any entry changed the price, e.g.
        ``genai-prices 0.2.5 + prices.toml@1a2b3c4d#1#3``."""
        if not applied:
            return GENAI_SOURCE
        numbers = "#".join(o.label.rsplit("#", 1)[-1] for o in applied)
        if self.overrides_label is None:
            return f"{GENAI_SOURCE} + {applied[0].label.rsplit('#', 1)[0]}#{numbers}"
        return f"{GENAI_SOURCE} + {self.overrides_label}#{numbers}"

    # pricing ---------------------------------------------------------------------------------

    def price_one(
        self,
        provider: str | None,
        model: str | None,
        at: datetime,
        *,
        input_tokens: int | None = None,
        cache_read_tokens: int | None = None,
        cache_write_tokens: int | None = None,
        cache_write_1h_tokens: int | None = None,
        output_tokens: int | None = None,
        reasoning_tokens: int | None = None,
        service_tier: str | None = None,
    ) -> dict[str, Any]:
        """Cost fields of one call (``input_cost`` ... ``total_cost``, ``price_status``,
        ``price_source``), from the same rates and rules as ``price_calls``."""
        return self.price_counts(
            provider,
            model,
            at,
            input_tokens,
            cache_read_tokens,
            cache_write_tokens,
            cache_write_1h_tokens,
            output_tokens,
            reasoning_tokens,
            service_tier,
        )

    def price_counts(
        self,
        provider: str | None,
        model: str | None,
        at: datetime,
        input_tokens: int | None,
        cache_read_tokens: int | None,
        cache_write_tokens: int | None,
        cache_write_1h_tokens: int | None,
        output_tokens: int | None,
        reasoning_tokens: int | None,
        service_tier: str | None,
    ) -> dict[str, Any]:
        """``price_one`` with every argument positional (a call with eleven keywords cost
        more than the rule checks)."""
        return dict(
            zip(
                PRICE_FIELDS,
                self.price_values(
                    provider,
                    model,
                    at,
                    input_tokens,
                    cache_read_tokens,
                    cache_write_tokens,
                    cache_write_1h_tokens,
                    output_tokens,
                    reasoning_tokens,
                    service_tier,
                ),
                strict=True,
            )
        )

    def price_values(
        self,
        provider: str | None,
        model: str | None,
        at: datetime,
        input_tokens: int | None,
        cache_read_tokens: int | None,
        cache_write_tokens: int | None,
        cache_write_1h_tokens: int | None,
        output_tokens: int | None,
        reasoning_tokens: int | None,
        service_tier: str | None,
    ) -> tuple[Any, ...]:
        """``price_counts``' values as a tuple in ``PRICE_FIELDS`` order: what the live worker
        prices each call with (no dict per call: it writes the values into the call record and
        the span's attributes itself)."""
        if model is None or not model.strip():
            return _UNPRICED_SEVEN + (self.source, PRICE_NO_MODEL)
        # written out, not as generator expressions: the live side prices every call here
        if (
            input_tokens is None
            and cache_read_tokens is None
            and cache_write_tokens is None
            and cache_write_1h_tokens is None
            and output_tokens is None
            and reasoning_tokens is None
        ):
            return _UNPRICED_SEVEN + (self.source, PRICE_NO_USAGE)
        inp, cr, cw = input_tokens or 0, cache_read_tokens or 0, cache_write_tokens or 0
        cw1h, out, rs = cache_write_1h_tokens or 0, output_tokens or 0, reasoning_tokens or 0
        if min(inp, cr, cw, cw1h, out, rs) < 0 or cr + cw > inp or cw1h > cw or rs > out:
            return _UNPRICED_SEVEN + (self.source, PRICE_INVALID_USAGE)
        rates = self._rates_on(provider, model, at, service_tier)
        if rates is None:
            status = self._unpriced_status(provider, model, at, service_tier)
            return _UNPRICED_SEVEN + (self.source, status)
        return rates.cost_values(inp, cr, cw, cw1h, out, rs) + (rates.source, PRICE_OK)

    def _rates_on(
        self, provider: str | None, model: str, at: datetime, service_tier: str | None
    ) -> Rates | None:
        """``rates_for``, remembered per UTC day for a time in UTC and a model without
        time-of-day bands: its answer then depends on the day alone (the date bands are
        days), so the live worker skips the time conversion, bisects and tier spelling per
        call. The same ``Rates`` object ``rates_for`` gives (it caches per band)."""
        if at.tzinfo is not UTC:
            return self.rates_for(provider, model, at, service_tier)
        key = (provider, model, service_tier, at.toordinal())
        try:
            rates = self._daily.get(key, _MISSING)
        except TypeError:  # an unhashable tier: rates_for decides what it makes of it
            return self.rates_for(provider, model, at, service_tier)
        if rates is not _MISSING:
            return rates
        rates = self.rates_for(provider, model, at, service_tier)
        resolved = self._models.get((provider, model))
        if resolved is None or not resolved.tod_bounds:
            if len(self._daily) >= 4096:
                self._daily.clear()
            self._daily[key] = rates
        return rates

    def _unpriced_status(
        self, provider: str | None, model: str, at: datetime, service_tier: str | None
    ) -> str:
        """Why a call with usage has no rates: its tier has no price, or its model none."""
        tier = standard_tier(service_tier)
        if tier is not None and self.rates_for(provider, model, at) is not None:
            return f"{PRICE_UNPRICED_TIER}:{tier}"
        return PRICE_UNKNOWN_MODEL


_MISSING: Any = object()
_COST_NAMES = (*COST_COMPONENTS, "total_cost")
PRICE_FIELDS = (*_COST_NAMES, "price_source", "price_status")
"""The fields ``PriceBook.price_counts`` gives, in its order (``price_values``' tuple)."""
_UNPRICED_SEVEN = (None,) * len(_COST_NAMES)


def standard_tier(service_tier: str | None) -> str | None:
    """None for the standard (list-price) tier under any spelling, else the normalised tier."""
    tier = normalize_service_tier(service_tier)
    return None if tier == "standard" else tier


# genai-prices' price_context per tier: OpenAI and Google name theirs ``service_tier``; batch is
# ``processing`` for every provider. A tier not listed here is looked up as ``service_tier``.
TIER_CONTEXTS: Mapping[str, Mapping[str, str]] = {"batch": {"processing": "batch"}}


def _tier_context(tier: str) -> Mapping[str, str]:
    return TIER_CONTEXTS.get(tier, {"service_tier": tier})


def _variant_price(
    resolved: _Model, at: datetime, tier: str
) -> tuple[gp_types.ModelPrice, date | None] | None:
    """genai-prices' price of ``tier`` in force at ``at`` and the date its variant started, or
    None when no variant of the model prices it then. As ``calc_price`` does, variants count
    only for a model of the provider itself (not one it falls back to, e.g. Azure to OpenAI)."""
    info, provider = resolved.info, resolved.provider
    if info is None or provider is None or not any(info is m for m in provider.models):
        return None
    context = _tier_context(tier)
    for variant in info.price_variants or ():
        if variant.constraint is not None and not variant.constraint.active(at):
            continue
        if all(context.get(key) == value for key, value in variant.when.items()):
            since = getattr(variant.constraint, "start_date", None)
            return info.get_prices(at, context), since
    return None


def _variant_dates(info: gp_types.ModelInfo) -> set[date]:
    """Start dates of the model's price variants: the tier price can change on them."""
    return {
        v.constraint.start_date
        for v in info.price_variants or ()
        if isinstance(v.constraint, gp_types.StartDateConstraint)
    }


def _describe_period(info: gp_types.ModelInfo, price: gp_types.ModelPrice, at: datetime) -> str:
    """Which of a model's conditional prices ``price`` is, in words (the same for every ``at``
    in one price period, so it can be cached with the rates)."""
    if isinstance(info.prices, gp_types.ModelPrice):
        return "always"
    constraint = next(c.constraint for c in info.prices if c.prices is price)
    starts = sorted(_constraint_dates(info))
    if isinstance(constraint, gp_types.TimeOfDateConstraint):
        return f"daily {_window(constraint)}"
    if isinstance(constraint, gp_types.StartDateConstraint):
        later = [d for d in starts if d > constraint.start_date]
        text = f"from {constraint.start_date}" + (f" until {later[0]}" if later else "")
    else:
        later = [d for d in starts if d > at.date()]
        text = "standard" + (f" until {later[0]}" if later else "")
    windows = [
        _window(c) for c in _constraints(info) if isinstance(c, gp_types.TimeOfDateConstraint)
    ]
    return text + (f" (outside {', '.join(windows)})" if windows else "")


def _constraint_dates(info: gp_types.ModelInfo) -> set[date]:
    return {c.start_date for c in _constraints(info) if isinstance(c, gp_types.StartDateConstraint)}


def _window(constraint: gp_types.TimeOfDateConstraint) -> str:
    start, end = _utc_time(constraint.start_time), _utc_time(constraint.end_time)
    return f"{start:%H:%M}-{end:%H:%M} UTC"


@cache
def default_book() -> PriceBook:
    """The process-wide book (``PriceBook.load()``, loaded once); pass a book to control it."""
    return PriceBook.load()


def tier_rates(
    provider: str | None,
    model: str,
    at: datetime,
    service_tier: str,
    *,
    book: PriceBook | None = None,
) -> Rates | None:
    """``PriceBook.tier_rates`` on ``book`` or the default book: the rates of a service tier
    (``batch``, ``flex``, ``priority``...), or None when nothing prices that tier."""
    return (book or default_book()).tier_rates(provider, model, at, service_tier)


def price_one(
    provider: str | None, model: str | None, at: datetime, *, book: PriceBook | None = None, **usage
) -> dict[str, Any]:
    """``PriceBook.price_one`` on ``book`` or the default book."""
    return (book or default_book()).price_one(provider, model, at, **usage)
