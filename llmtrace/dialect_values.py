"""Counts and costs read from span attributes: value coercion (``token_count``,
``cost_value``), usage in each dialect's names, JSON usage objects (Langfuse, Logfire) and the
counting rules that make every count inclusive (see ``llmtrace.dialects``' docstring).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from operator import itemgetter
from typing import Any

from llmtrace.dialect_tables import (
    _COST_SLOT,
    _TOKEN_KEYS,
    _TOKEN_SLOT,
    LANGFUSE_COST_JSON,
    PRICE_STATUS,
    PRICED,
    RAW_USAGE_PATHS,
    REPORTED_COST,
    REPORTED_COST_SOURCE,
    TOKEN_RECORD_FIELD,
    USAGE_JSON_BUCKETS,
    Dialect,
    Found,
    SpanError,
    _collect,
)
from llmtrace.fingerprint import msgspec_decoder
from llmtrace.limits import INT64_MAX

# --------------------------------------------------------------------------------------------
# Value coercion
# --------------------------------------------------------------------------------------------


def token_count(value: Any, attribute: str) -> int:
    """A non-negative integer count; strings and floats only when they are exact integers."""
    kind = type(value)
    if kind is int:
        number = value
    elif kind is float:
        if not value.is_integer():
            raise SpanError(f"{attribute}: token count {value!r} is not a whole number")
        number = int(value)
    elif kind is str:
        number = _int_from_text(value, attribute)
    else:  # bool, None, lists, maps
        raise SpanError(f"{attribute}: token count {value!r} is not a number")
    if number < 0:
        raise SpanError(f"{attribute}: token count {value!r} is negative")
    if number > INT64_MAX:
        raise SpanError(f"{attribute}: token count {value!r} is beyond a 64-bit integer")
    return number


def _int_from_text(value: str, attribute: str) -> int:
    try:
        return int(value)
    except ValueError:
        pass
    try:
        as_float = float(value)
    except ValueError:
        raise SpanError(f"{attribute}: token count {value!r} is not a number") from None
    if not as_float.is_integer():
        raise SpanError(f"{attribute}: token count {value!r} is not a whole number")
    return int(as_float)


def cost_value(value: Any, attribute: str) -> float:
    """A finite, non-negative USD amount (numbers or numeric strings)."""
    if type(value) is bool:
        raise SpanError(f"{attribute}: cost {value!r} is not a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SpanError(f"{attribute}: cost {value!r} is not a number") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise SpanError(f"{attribute}: cost {value!r} is not finite")
    if number < 0:
        raise SpanError(f"{attribute}: cost {value!r} is negative")
    return number


def _json_object(value: Any, attribute: str) -> dict[str, Any]:
    """A JSON object attribute (Langfuse details, Logfire raw usage), parsed if it is a string.

    Why the shortcuts: the live store exporter reads the processor's cost details back from
    every priced span (``_reported_cost``), and ``json.loads`` of them took 2 us of the
    span's 16. Where msgspec is loaded (the store exporter's spool loads it; the importer
    does) its decoder reads the text (0.3 us), and its object is used: where msgspec accepts
    a text it gives what ``json.loads`` gives (strict JSON, floats correctly rounded, the
    last of two equal keys in the first one's place; see ``fingerprint.msgspec_decoder``),
    and what it refuses (NaN, Infinity, numbers beyond a double, lone surrogates) goes on.
    Else json's own scanner reads it from the start, and its object is used when it read
    the whole text (``json.loads`` minus its Python-level checks). Anything else goes
    through ``json.loads`` as before, so the same objects and the same errors. Only for a
    text of few brackets: nested near the recursion limit, each parser would stop at another
    depth (``json.loads`` calls the scanner two frames deeper), and there the old error stands.
    """
    if type(value) is str and value[:1] == "{" and value.count("{") + value.count("[") < 64:
        decode = msgspec_decoder()
        if decode is not None:
            try:
                parsed = decode(value)
            except Exception:  # noqa: BLE001, S110 - json below decides, as it always did
                pass
            else:
                if type(parsed) is dict:
                    return parsed
        try:
            parsed, end = _SCAN_JSON(value, 0)
        except Exception:  # noqa: BLE001, S110 - json.loads below says what is wrong
            pass
        else:
            if end == len(value) and type(parsed) is dict:
                return parsed
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            raise SpanError(f"{attribute}: not valid JSON") from None
        if isinstance(parsed, dict):
            return parsed
    raise SpanError(f"{attribute}: expected a JSON object, got {type(value).__name__}")


_SCAN_JSON = json.decoder.JSONDecoder().scan_once
"""The scanner of a decoder with ``json.loads``' defaults: ``json.loads(text)`` is this scan
from the first non-blank character, then a check that only blanks follow."""


def _text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    return str(value)


def _first(attrs: Mapping[str, Any], names: Sequence[str]) -> Any:
    for name in names:
        value = attrs.get(name)
        if value is not None and value != "":
            return value
    return None


# --------------------------------------------------------------------------------------------
# Usage
# --------------------------------------------------------------------------------------------


def _bucket_sum(details: Mapping[str, Any], groups: tuple[tuple[str, ...], ...], attribute: str):
    """The sum of the first group with a count present (its keys in order; a bad one raises).

    Plain in-range integers are their own ``token_count``, so the attribute's name for the
    error is only built for a value that needs checking."""
    for group in groups:
        total = None
        for key in group:
            value = details.get(key)
            if value is None:
                continue
            if type(value) is not int or not 0 <= value <= INT64_MAX:
                value = token_count(value, f"{attribute}.{key}")
            total = value if total is None else total + value
        if total is not None:
            return total
    return None


_BUCKETS = tuple(
    (key, groups, frozenset(name for group in groups for name in group))
    for key, groups in USAGE_JSON_BUCKETS.items()
)


def _usage_from_json(attrs: Mapping[str, Any], attribute: str) -> dict[str, int | None] | None:
    """Tokens from Langfuse usage_details (exclusive buckets) as inclusive counts."""
    raw = attrs.get(attribute)
    if raw is None:
        return None
    details = _json_object(raw, attribute)
    present = details.keys()
    # a bucket none of whose keys is present sums to None: skip it with one set operation
    got = {
        key: None if present.isdisjoint(names) else _bucket_sum(details, groups, attribute)
        for key, groups, names in _BUCKETS
    }
    cache = (got["cache_read"] or 0) + (got["cache_write"] or 0)
    if got["input_inclusive"] is not None:
        got["input"] = got["input_inclusive"]
    elif got["input"] is not None or cache:
        got["input"] = (got["input"] or 0) + cache
    if got["output"] is not None or got["reasoning"]:
        got["output"] = (got["output"] or 0) + (got["reasoning"] or 0)
    return {key: got[key] for key in _TOKEN_KEYS}


def _dig(data: Any, path: tuple[str, ...]) -> Any:
    for step in path:
        if not isinstance(data, Mapping):
            return None
        data = data.get(step)
    return data


def _fill_from_raw(tokens: dict[str, int | None], attrs: Mapping[str, Any], attribute: str) -> None:
    """Logfire's raw provider usage fills reasoning, 1-hour cache writes and the total."""
    raw = attrs.get(attribute)
    if raw is None:
        return
    usage = _json_object(raw, attribute)
    for key, paths in RAW_USAGE_PATHS.items():
        if tokens.get(key) is not None:
            continue
        for path in paths:
            value = _dig(usage, path)
            if value is not None:
                tokens[key] = token_count(value, f"{attribute}.{'.'.join(path)}")
                break


def read_usage(attrs: Mapping[str, Any], dialect: Dialect, provider: str | None) -> dict[str, Any]:
    """Inclusive token counts (record field names) for one span in ``dialect``."""
    return _usage(_collect(attrs, dialect), attrs, dialect, provider)


def _usage(found: Found, attrs: Mapping[str, Any], dialect: Dialect, provider: str | None):
    return dict(
        zip(_RECORD_TOKEN_FIELDS, _usage_values(found, attrs, dialect, provider), strict=True)
    )


_TOKEN_SLOT_ITEMS = tuple(_TOKEN_SLOT.items())
_RECORD_TOKEN_FIELDS = tuple(TOKEN_RECORD_FIELD[key] for key in _TOKEN_KEYS)
_in_token_order = itemgetter(*_TOKEN_KEYS)


def _usage_values(
    found: Found, attrs: Mapping[str, Any], dialect: Dialect, provider: str | None
) -> tuple[int | None, ...]:
    """``_usage``'s counts as a tuple in ``_TOKEN_KEYS`` order (the importer's row form)."""
    tokens: dict[str, int | None] = {}
    for key, slot in _TOKEN_SLOT_ITEMS:
        hit = found.get(slot)
        if hit is None:
            tokens[key] = None
            continue
        value = hit[2]
        # a plain count (what OTLP intValue gives) is its own token_count; anything else is checked
        if type(value) is int and 0 <= value <= INT64_MAX:
            tokens[key] = value
        else:
            tokens[key] = token_count(value, hit[1])
    if dialect.usage_json is not None:
        from_json = _usage_from_json(attrs, dialect.usage_json)
        if from_json is not None:
            tokens.update({k: v for k, v in from_json.items() if v is not None})
    if dialect.raw_usage is not None:
        _fill_from_raw(tokens, attrs, dialect.raw_usage)
    _make_inclusive(tokens, dialect, provider)
    for key, value in tokens.items():  # sums of valid counts can still overflow
        if value is not None and value > INT64_MAX:
            raise SpanError(f"{key} tokens add up to {value}, beyond a 64-bit integer")
    return _in_token_order(tokens)


def _make_inclusive(tokens: dict[str, int | None], dialect: Dialect, provider: str | None) -> None:
    """Apply the counting rules in the module docstring, in place."""
    inp, out = tokens.get("input"), tokens.get("output")
    cache = (tokens.get("cache_read") or 0) + (tokens.get("cache_write") or 0)
    if inp is not None and cache and (provider in dialect.exclusive_input_providers or cache > inp):
        tokens["input"] = inp + cache
    reasoning = tokens.get("reasoning")
    if out is not None and reasoning:
        total = tokens.get("total")
        exclusive = reasoning > out or (
            total is not None and inp is not None and total == inp + out + reasoning
        )
        if exclusive:
            tokens["output"] = out + reasoning


def read_reported_cost(
    attrs: Mapping[str, Any], dialect: Dialect
) -> tuple[float | None, str | None]:
    """A cost the source carried (USD) and the attribute it came from."""
    return _reported_cost(_collect(attrs, dialect), attrs)


def _reported_cost(found: Found, attrs: Mapping[str, Any]) -> tuple[float | None, str | None]:
    if attrs.get(PRICE_STATUS) == PRICED:
        return _priced_reported_cost(attrs)
    raw = attrs.get(LANGFUSE_COST_JSON)
    if raw is not None:
        details = _json_object(raw, LANGFUSE_COST_JSON)
        if details.get("total") is not None:
            source = f"{LANGFUSE_COST_JSON}.total"
            return cost_value(details["total"], source), source
        if details:
            total = sum(cost_value(v, f"{LANGFUSE_COST_JSON}.{k}") for k, v in details.items())
            return total, LANGFUSE_COST_JSON
    hit = found.get(_COST_SLOT)
    if hit is None:
        return None, None
    return cost_value(hit[2], hit[1]), hit[1]


def _priced_reported_cost(attrs: Mapping[str, Any]) -> tuple[float | None, str | None]:
    """The reported cost of a span llmtrace's live processor priced (``PRICE_STATUS`` "ok").

    Why not its cost attributes: the processor wrote its own ``gen_ai.usage.cost`` and
    Langfuse cost details over the source's (``dialect_tables.PRICED_OVER``), so read as the
    source's they would make llmtrace's price the source's cost (and hide the source's own).
    The source's cost, as the worker's record had it, travels as ``REPORTED_COST`` and its
    ``_SOURCE``; none when the source carried none."""
    value = attrs.get(REPORTED_COST)
    if value is None:
        return None, None
    return cost_value(value, REPORTED_COST), _text(attrs.get(REPORTED_COST_SOURCE))
