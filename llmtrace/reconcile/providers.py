"""Read what a provider says it billed: OpenAI's and Anthropic's organization usage and cost reports.

Why a small client of our own: neither official SDK covers all four endpoints (anthropic-sdk-python
has no method for ``usage_report/messages`` and ``cost_report``; it only calls the newer
``analytics`` endpoints, with other shapes), and reconciling needs only paged GETs. httpx is the
HTTP client the langfuse importer already uses (a dependency of langfuse, openai and anthropic).

Everything is turned into two small frames per provider, one row per UTC day and model:

* usage: ``day, model, service_tier, requests`` (null for Anthropic, whose report has no request
  count), ``input_tokens`` (inclusive, like the call record), ``cache_read_tokens``,
  ``cache_write_tokens`` (both lifetimes), ``cache_write_1h_tokens``, ``output_tokens``;
* cost: ``day, model`` (null for line items that belong to no model: tools, storage),
  ``service_tier``, ``cost_usd``.

Keys: an admin key (``OPENAI_ADMIN_KEY`` / ``ANTHROPIC_ADMIN_KEY``) is read by the caller and sent
only in the request header. It never appears in an error message: provider messages are passed
through ``_redact`` first. Base URLs follow the official SDKs' variables (``OPENAI_BASE_URL``, with
``/v1``; ``ANTHROPIC_BASE_URL``, without), so a proxy or a loopback test server can stand in.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import httpx
import polars as pl

from llmtrace.errors import UsageError

OPENAI_BASE_URL = "https://api.openai.com/v1"
ANTHROPIC_BASE_URL = "https://api.anthropic.com"
ANTHROPIC_VERSION = "2023-06-01"
PROVIDERS = ("openai", "anthropic")
KEY_VARIABLES = {"openai": "OPENAI_ADMIN_KEY", "anthropic": "ANTHROPIC_ADMIN_KEY"}
BASE_URL_VARIABLES = {"openai": "OPENAI_BASE_URL", "anthropic": "ANTHROPIC_BASE_URL"}
DEFAULT_BASE_URLS = {"openai": OPENAI_BASE_URL, "anthropic": ANTHROPIC_BASE_URL}

# Buckets per page: the documented maxima for daily buckets (usage 31, OpenAI costs 180).
_USAGE_PAGE = 31
_OPENAI_COST_PAGE = 180
_MAX_PAGES = 1000
_RETRIES = 3

USAGE_SCHEMA = pl.Schema(
    {
        "day": pl.Date,
        "model": pl.String,
        "service_tier": pl.String,
        "requests": pl.Int64,
        "input_tokens": pl.Int64,
        "cache_read_tokens": pl.Int64,
        "cache_write_tokens": pl.Int64,
        "cache_write_1h_tokens": pl.Int64,
        "output_tokens": pl.Int64,
    }
)
COST_SCHEMA = pl.Schema(
    {"day": pl.Date, "model": pl.String, "service_tier": pl.String, "cost_usd": pl.Float64}
)


class ProviderError(UsageError):
    """The provider could not be read: refused key, bad answer, network (exit 2: nothing was
    compared). The message is safe to print (the key is redacted)."""

    def __init__(self, message: str, *, auth: bool = False) -> None:
        super().__init__(message)
        self.auth = auth


@dataclass(frozen=True)
class BillingReport:
    """What the provider reported for the window: usage and cost per day and model."""

    provider: str
    usage: pl.DataFrame
    cost: pl.DataFrame
    base_url: str


def _redact(text: str, key: str) -> str:
    """``text`` without the key (nor its long fragments) in it."""
    if key:
        text = text.replace(key, "[redacted]")
        if len(key) > 12:
            text = text.replace(key[-8:], "[redacted]").replace(key[:12], "[redacted]")
    return text


class _Pager:
    """GET one endpoint page after page (``page`` = previous ``next_page`` until ``has_more`` is
    false), retrying 429 and 5xx answers with the provider's ``retry-after``."""

    def __init__(self, base_url: str, headers: Mapping[str, str], key: str, timeout: float):
        self.base_url = base_url.rstrip("/")
        self.key = key
        self.http = httpx.Client(headers=dict(headers), timeout=timeout, follow_redirects=True)

    def close(self) -> None:
        self.http.close()

    def pages(self, path: str, params: list[tuple[str, str]]) -> Iterator[dict[str, Any]]:
        page: str | None = None
        for _ in range(_MAX_PAGES):
            query = [*params, ("page", page)] if page else params
            body = self._get(path, query)
            yield body
            page = body.get("next_page")
            if not body.get("has_more") or not page:
                return
        raise ProviderError(f"{self.base_url}{path}: more than {_MAX_PAGES} pages")

    def _get(self, path: str, params: list[tuple[str, str]]) -> dict[str, Any]:
        url = f"{self.base_url}{path}"
        for attempt in range(_RETRIES + 1):
            try:
                response = self.http.get(url, params=params)
            except httpx.HTTPError as exc:
                detail = _redact(str(exc) or type(exc).__name__, self.key)
                raise ProviderError(f"{url}: {detail}") from None
            if response.status_code in (429, 500, 502, 503, 504) and attempt < _RETRIES:
                time.sleep(_retry_after(response.headers, attempt))
                continue
            if response.status_code >= 400:
                detail = _redact(_error_message(response), self.key)
                raise ProviderError(
                    f"{url}: HTTP {response.status_code}: {detail}",
                    auth=response.status_code in (401, 403),
                )
            try:
                body = response.json()
            except ValueError:
                raise ProviderError(f"{url}: the answer is not JSON") from None
            if not isinstance(body, dict) or not isinstance(body.get("data"), list):
                raise ProviderError(f"{url}: the answer has no 'data' list")
            return body
        raise ProviderError(f"{url}: still failing after {_RETRIES} retries")  # pragma: no cover


def _retry_after(headers: Mapping[str, str], attempt: int) -> float:
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value:
            try:
                return min(max(float(value) * scale, 0.0), 30.0)
            except ValueError:
                pass
    return min(0.5 * 2**attempt, 8.0)


def _error_message(response: httpx.Response) -> str:
    """The provider's own error text (OpenAI ``{error: {message}}``, Anthropic
    ``{type: error, error: {type, message}}``), else the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        kind = error.get("type")
        message = error.get("message") or ""
        return f"{kind}: {message}" if kind else str(message)
    return str(body)[:200]


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def _day(value: Any) -> Any:
    """A bucket's start (unix seconds or RFC 3339) as a UTC date."""
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC).date()
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).astimezone(UTC).date()


def _amount(value: Any) -> float | None:
    """A number that may arrive as a JSON number or a decimal string."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(Decimal(str(value)))
    except (InvalidOperation, ValueError):
        return None


# -- OpenAI -------------------------------------------------------------------------------------


def parse_openai_line_item(line_item: str | None) -> tuple[str | None, str | None, str | None]:
    """``(model, kind, service_tier)`` of a Costs API line item.

    Line items are free text: ``"gpt-4o-mini-2024-07-18, input"``, ``"..., cached input"``,
    ``"priority | gpt-4o, output, long context"``, ``"web search tool calls"``. Items without a
    comma belong to no model.
    """
    if not line_item or "," not in line_item:
        return None, line_item, None
    tier = None
    text = line_item
    if "|" in text:
        head, text = (part.strip() for part in text.split("|", 1))
        tier = head.lower()
    model, _, kind = text.partition(",")
    if "batch" in kind.lower():
        tier = tier or "batch"
    return model.strip() or None, kind.strip(), tier


def fetch_openai(
    key: str, base_url: str, since: datetime, until: datetime, *, timeout: float = 30.0
) -> BillingReport:
    """Completions usage by model and day, and costs by line item and day."""
    pager = _Pager(base_url, {"Authorization": f"Bearer {key}"}, key, timeout)
    window = [
        ("start_time", str(int(since.timestamp()))),
        ("end_time", str(int(until.timestamp()))),
    ]
    try:
        usage_rows = []
        params = [*window, ("bucket_width", "1d"), ("limit", str(_USAGE_PAGE))]
        params += [("group_by", "model"), ("group_by", "service_tier"), ("group_by", "batch")]
        for body in pager.pages("/organization/usage/completions", params):
            for bucket in body["data"]:
                day = _day(bucket.get("start_time"))
                for r in bucket.get("results") or []:
                    tier = r.get("service_tier") or ("batch" if r.get("batch") else None)
                    usage_rows.append(
                        {
                            "day": day,
                            "model": r.get("model"),
                            "service_tier": tier,
                            "requests": _int(r.get("num_model_requests")),
                            "input_tokens": _int(r.get("input_tokens")),
                            "cache_read_tokens": _int(r.get("input_cached_tokens")),
                            "cache_write_tokens": _int(r.get("input_cache_write_tokens")),
                            "cache_write_1h_tokens": 0,
                            "output_tokens": _int(r.get("output_tokens")),
                        }
                    )
        cost_rows = []
        params = [*window, ("bucket_width", "1d"), ("limit", str(_OPENAI_COST_PAGE))]
        params.append(("group_by", "line_item"))
        for body in pager.pages("/organization/costs", params):
            for bucket in body["data"]:
                day = _day(bucket.get("start_time"))
                for r in bucket.get("results") or []:
                    amount = r.get("amount") or {}
                    value = _amount(amount.get("value") if isinstance(amount, dict) else amount)
                    if value is None:
                        continue
                    model, _kind, tier = parse_openai_line_item(r.get("line_item"))
                    cost_rows.append(
                        {"day": day, "model": model, "service_tier": tier, "cost_usd": value}
                    )
    finally:
        pager.close()
    return BillingReport(
        "openai",
        pl.DataFrame(usage_rows, schema=USAGE_SCHEMA),
        pl.DataFrame(cost_rows, schema=COST_SCHEMA),
        base_url,
    )


# -- Anthropic ----------------------------------------------------------------------------------


def _rfc3339(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def fetch_anthropic(
    key: str, base_url: str, since: datetime, until: datetime, *, timeout: float = 30.0
) -> BillingReport:
    """Messages usage by model, service tier and day, and the cost report by description.

    The cost report's ``amount`` is a decimal string in **cents**: it is divided by 100 here,
    once (a tool that summed cents as dollars read 100 times the spend).
    """
    headers = {"x-api-key": key, "anthropic-version": ANTHROPIC_VERSION}
    pager = _Pager(base_url, headers, key, timeout)
    window = [("starting_at", _rfc3339(since)), ("ending_at", _rfc3339(until))]
    try:
        usage_rows = []
        params = [*window, ("bucket_width", "1d"), ("limit", str(_USAGE_PAGE))]
        params += [("group_by[]", "model"), ("group_by[]", "service_tier")]
        for body in pager.pages("/v1/organizations/usage_report/messages", params):
            for bucket in body["data"]:
                day = _day(bucket.get("starting_at"))
                for r in bucket.get("results") or []:
                    creation = r.get("cache_creation") or {}
                    write_5m = _int(creation.get("ephemeral_5m_input_tokens"))
                    write_1h = _int(creation.get("ephemeral_1h_input_tokens"))
                    read = _int(r.get("cache_read_input_tokens"))
                    uncached = _int(r.get("uncached_input_tokens"))
                    usage_rows.append(
                        {
                            "day": day,
                            "model": r.get("model"),
                            "service_tier": r.get("service_tier"),
                            "requests": None,
                            "input_tokens": uncached + read + write_5m + write_1h,
                            "cache_read_tokens": read,
                            "cache_write_tokens": write_5m + write_1h,
                            "cache_write_1h_tokens": write_1h,
                            "output_tokens": _int(r.get("output_tokens")),
                        }
                    )
        cost_rows = []
        params = [*window, ("bucket_width", "1d"), ("limit", str(_USAGE_PAGE))]
        params.append(("group_by[]", "description"))
        for body in pager.pages("/v1/organizations/cost_report", params):
            for bucket in body["data"]:
                day = _day(bucket.get("starting_at"))
                for r in bucket.get("results") or []:
                    cents = _amount(r.get("amount"))
                    if cents is None:
                        continue
                    tokens = r.get("cost_type") in (None, "tokens")
                    cost_rows.append(
                        {
                            "day": day,
                            "model": r.get("model") if tokens else None,
                            "service_tier": r.get("service_tier"),
                            "cost_usd": cents / 100.0,
                        }
                    )
    finally:
        pager.close()
    return BillingReport(
        "anthropic",
        pl.DataFrame(usage_rows, schema=USAGE_SCHEMA),
        pl.DataFrame(cost_rows, schema=COST_SCHEMA),
        base_url,
    )


def fetch(
    provider: str, key: str, base_url: str, since: datetime, until: datetime
) -> BillingReport:
    """The provider's usage and cost reports for ``[since, until)``."""
    if provider == "openai":
        return fetch_openai(key, base_url, since, until)
    if provider == "anthropic":
        return fetch_anthropic(key, base_url, since, until)
    raise ValueError(f"unknown provider {provider!r} (known: {', '.join(PROVIDERS)})")
