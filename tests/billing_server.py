"""A loopback stand-in for OpenAI's and Anthropic's organization usage and cost reports.

It answers the four endpoints ``llmtrace reconcile`` reads, in the shapes of the providers' API
references (shared/research/provider-billing-apis.md): daily buckets with ``results`` lists,
empty buckets listed with ``results: []``, cursor paging (``has_more`` / ``next_page``, ``limit``
counting buckets, capped by ``page_size`` so a short window still pages), OpenAI costs as
``amount {value, currency}`` per line item ``"<dated model>, input|cached input|output"``, and
Anthropic costs as decimal strings in **cents** per ``token_type``.

The bill is computed from call records (the same calls that fill the store in the tests), so a
faithful provider gives zero drift; ``cost_factor`` bills at another rate (a tier or discount
the price data lacks) and ``dated`` renames models to dated snapshots, as real reports do.
Requests without the right key get the provider's 401 error shape.

Run by hand (for the README): ``python tests/billing_server.py openai --store DIR`` prints the
base URL to use with ``--base-url`` and serves until interrupted.
"""

from __future__ import annotations

import base64
import json
import threading
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import polars as pl

DATED = {
    "gpt-4o": "gpt-4o-2024-08-06",
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
    "o3": "o3-2025-04-16",
    "o4-mini": "o4-mini-2025-04-16",
    "claude-sonnet-4-5": "claude-sonnet-4-5-20250929",
    "claude-haiku-4-5": "claude-haiku-4-5-20251001",
}


def _day_rows(calls: pl.DataFrame, provider: str, dated: bool) -> pl.DataFrame:
    """Per day and model: the tokens and the disjoint cost components the provider bills."""
    billed = calls.filter(
        (pl.col("provider") == provider)
        & (pl.col("input_tokens").is_not_null() | pl.col("output_tokens").is_not_null())
    )
    model = pl.col("model")
    if dated:
        model = model.replace(DATED)
    return (
        billed.with_columns(model.alias("bill_model"))
        .group_by("day", "bill_model")
        .agg(
            pl.len().alias("requests"),
            pl.col("input_tokens").fill_null(0).sum().alias("input"),
            pl.col("cache_read_tokens").fill_null(0).sum().alias("read"),
            pl.col("cache_write_tokens").fill_null(0).sum().alias("write"),
            pl.col("cache_write_1h_tokens").fill_null(0).sum().alias("write_1h"),
            pl.col("output_tokens").fill_null(0).sum().alias("output"),
            pl.col("input_cost").fill_null(0).sum().alias("input_cost"),
            pl.col("cache_read_cost").fill_null(0).sum().alias("read_cost"),
            pl.col("cache_write_cost").fill_null(0).sum().alias("write_cost"),
            (pl.col("output_cost").fill_null(0) + pl.col("reasoning_cost").fill_null(0))
            .sum()
            .alias("output_cost"),
        )
        .sort("day", "bill_model")
    )


class BillingServer:
    """Serve a provider's usage and cost reports for ``calls`` on 127.0.0.1 (a free port)."""

    def __init__(
        self,
        calls: pl.DataFrame,
        provider: str,
        *,
        key: str = "sk-admin-test-0123456789abcdef",
        page_size: int = 3,
        cost_factor: float = 1.0,
        tier: str | None = None,
        dated: bool = True,
    ) -> None:
        self.provider = provider
        self.key = key
        self.page_size = page_size
        self.cost_factor = cost_factor
        self.tier = tier
        self.rows = _day_rows(calls, provider, dated)
        self.requests: list[tuple[str, dict[str, list[str]], dict[str, str]]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                url = urlparse(self.path)
                query = parse_qs(url.query)
                server.requests.append((url.path, query, dict(self.headers)))
                status, body = server.answer(url.path, query, self.headers)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}" + ("/v1" if self.provider == "openai" else "")

    def __enter__(self) -> BillingServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- answers ---------------------------------------------------------------------------------

    def answer(self, path: str, query: dict[str, list[str]], headers: Any) -> tuple[int, Any]:
        if self.provider == "openai":
            if headers.get("authorization") != f"Bearer {self.key}":
                return 401, {
                    "error": {
                        "message": "Incorrect API key provided: sk-admin***. You need an admin key.",
                        "type": "invalid_request_error",
                        "code": "invalid_api_key",
                    }
                }
            if "start_time" not in query:
                return 400, {"error": {"message": "start_time is required", "type": "invalid"}}
            start = datetime.fromtimestamp(int(query["start_time"][0]), UTC)
            end = datetime.fromtimestamp(int(query["end_time"][0]), UTC)
            if path == "/v1/organization/usage/completions":
                return 200, self._page(query, start, end, self._openai_usage, unix=True)
            if path == "/v1/organization/costs":
                return 200, self._page(query, start, end, self._openai_costs, unix=True)
        else:
            if headers.get("x-api-key") != self.key or not headers.get("anthropic-version"):
                return 401, {
                    "type": "error",
                    "error": {"type": "authentication_error", "message": "invalid x-api-key"},
                }
            if "starting_at" not in query:
                return 400, {
                    "type": "error",
                    "error": {"type": "invalid_request_error", "message": "starting_at required"},
                }
            start = _parse(query["starting_at"][0])
            end = _parse(query["ending_at"][0])
            if path == "/v1/organizations/usage_report/messages":
                return 200, self._page(query, start, end, self._anthropic_usage, unix=False)
            if path == "/v1/organizations/cost_report":
                return 200, self._page(query, start, end, self._anthropic_costs, unix=False)
        return 404, {"error": {"message": f"no route {path}", "type": "not_found"}}

    def _page(self, query, start: datetime, end: datetime, results, *, unix: bool) -> dict:
        """Daily buckets from ``start`` (snapped to midnight) to ``end``, one page of them."""
        first = start.replace(hour=0, minute=0, second=0, microsecond=0)
        days = []
        day = first
        while day < end:
            days.append(day)
            day += timedelta(days=1)
        offset = int(base64.b64decode(query["page"][0]).decode()) if "page" in query else 0
        limit = min(int(query.get("limit", ["7"])[0]), self.page_size)
        chosen = days[offset : offset + limit]
        buckets = []
        for day in chosen:
            nxt = day + timedelta(days=1)
            if unix:
                bucket = {
                    "object": "bucket",
                    "start_time": int(day.timestamp()),
                    "end_time": int(nxt.timestamp()),
                }
            else:
                bucket = {
                    "starting_at": day.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "ending_at": nxt.strftime("%Y-%m-%dT%H:%M:%SZ"),
                }
            bucket["results"] = results(day.date())
            buckets.append(bucket)
        more = offset + limit < len(days)
        token = base64.b64encode(str(offset + limit).encode()).decode() if more else None
        body: dict[str, Any] = {"data": buckets, "has_more": more, "next_page": token}
        if unix:
            body = {"object": "page", **body}
        return body

    def _of(self, day: date) -> list[dict[str, Any]]:
        return self.rows.filter(pl.col("day") == day).to_dicts()

    def _openai_usage(self, day: date) -> list[dict[str, Any]]:
        return [
            {
                "object": "organization.usage.completions.result",
                "input_tokens": r["input"],
                "input_cached_tokens": r["read"],
                "output_tokens": r["output"],
                "num_model_requests": r["requests"],
                "project_id": None,
                "user_id": None,
                "api_key_id": None,
                "model": r["bill_model"],
                "batch": self.tier == "batch",
                "service_tier": self.tier or "default",
            }
            for r in self._of(day)
        ]

    def _openai_costs(self, day: date) -> list[dict[str, Any]]:
        out = []
        prefix = f"{self.tier} | " if self.tier and self.tier != "batch" else ""
        for r in self._of(day):
            for kind, column in (
                ("input", "input_cost"),
                ("cached input", "read_cost"),
                ("output", "output_cost"),
            ):
                value = r[column] * self.cost_factor
                if value:
                    out.append(
                        {
                            "object": "organization.costs.result",
                            # some live answers carry the value as a string
                            "amount": {"value": str(value), "currency": "usd"},
                            "line_item": f"{prefix}{r['bill_model']}, {kind}",
                            "project_id": None,
                        }
                    )
        return out

    def _anthropic_usage(self, day: date) -> list[dict[str, Any]]:
        return [
            {
                "uncached_input_tokens": r["input"] - r["read"] - r["write"],
                "cache_creation": {
                    "ephemeral_1h_input_tokens": r["write_1h"],
                    "ephemeral_5m_input_tokens": r["write"] - r["write_1h"],
                },
                "cache_read_input_tokens": r["read"],
                "output_tokens": r["output"],
                "server_tool_use": {"web_search_requests": 0},
                "model": r["bill_model"],
                "service_tier": self.tier or "standard",
                "context_window": "0-200k",
                "workspace_id": None,
                "api_key_id": None,
            }
            for r in self._of(day)
        ]

    def _anthropic_costs(self, day: date) -> list[dict[str, Any]]:
        out = []
        for r in self._of(day):
            for token_type, column in (
                ("uncached_input_tokens", "input_cost"),
                ("cache_read_input_tokens", "read_cost"),
                ("cache_creation.ephemeral_5m_input_tokens", "write_cost"),
                ("output_tokens", "output_cost"),
            ):
                cents = r[column] * self.cost_factor * 100.0
                if cents:
                    out.append(
                        {
                            "amount": f"{cents:.9f}",
                            "currency": "USD",
                            "description": f"{r['bill_model']} Usage - {token_type}",
                            "cost_type": "tokens",
                            "model": r["bill_model"],
                            "token_type": token_type,
                            "context_window": "0-200k",
                            "service_tier": self.tier or "standard",
                            "workspace_id": None,
                        }
                    )
        return out


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


if __name__ == "__main__":  # pragma: no cover - for producing the README's sample by hand
    import argparse
    import time

    from llmtrace.store import Store

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("provider", choices=["openai", "anthropic"])
    parser.add_argument("--store", required=True)
    parser.add_argument("--cost-factor", type=float, default=1.0)
    parser.add_argument("--key", default="sk-admin-test-0123456789abcdef")
    args = parser.parse_args()
    frame = Store(args.store).scan().collect()
    with BillingServer(frame, args.provider, key=args.key, cost_factor=args.cost_factor) as s:
        print(s.base_url, flush=True)
        while True:
            time.sleep(3600)
