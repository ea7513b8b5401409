"""Talking to Langfuse: settings (host, keys), the checkpoint's name, retries and the HTTP
client (the SDK's API plus plain GETs for endpoints SDK 5 dropped).

Retries: 401/403 stop at once; 429 waits for ``Retry-After`` however long it is; 5xx, 408,
409, timeouts, dropped connections and malformed answers (a page that is not the JSON asked
for, e.g. an HTML error page sent with status 200, or a truncated body) retry with exponential
backoff and then stop with a message naming the request and the last problem.
"""

from __future__ import annotations

import email.utils
import os
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import httpx

from llmtrace.errors import EXIT_FINDINGS, EXIT_USAGE, LlmtraceError
from llmtrace.importers.langfuse.stats import ImportReporter, ImportStats
from llmtrace.safe_text import escape, redact_url

DEFAULT_HOST = "https://cloud.langfuse.com"


class LangfuseImportError(LlmtraceError):
    """An import that cannot go on; the message says why and what to do. Exit 1 (the run
    failed) unless raised with ``exit_code=EXIT_USAGE`` (keys, host, timeout: configuration)."""

    exit_code = EXIT_FINDINGS


class _NotFound(Exception):
    """HTTP 404: the endpoint does not exist on this server."""


class _MalformedPage(Exception):
    """A success status with a body that is not the page asked for (retried like a 5xx)."""


class _BadRequest(Exception):
    """HTTP 400 (the server rejected a parameter, e.g. a saved cursor)."""


@dataclass(frozen=True)
class LangfuseSettings:
    """Where and as whom to read: host and the project's API keys."""

    host: str
    public_key: str
    secret_key: str = field(repr=False)  # never in a log line or traceback repr
    timeout: float = 60.0

    @classmethod
    def from_env(
        cls, host: str | None = None, environ: Mapping[str, str] | None = None
    ) -> LangfuseSettings:
        """Keys from ``LANGFUSE_PUBLIC_KEY`` / ``LANGFUSE_SECRET_KEY``; host from ``host``, else
        ``LANGFUSE_BASE_URL``, else ``LANGFUSE_HOST`` (the SDK's order), else Langfuse Cloud;
        timeout from ``LANGFUSE_TIMEOUT`` (seconds)."""
        env = os.environ if environ is None else environ
        public, secret = env.get("LANGFUSE_PUBLIC_KEY"), env.get("LANGFUSE_SECRET_KEY")
        chosen = host or env.get("LANGFUSE_BASE_URL") or env.get("LANGFUSE_HOST") or DEFAULT_HOST
        # Keys written into the URL (http://pk:sk@host) are used as keys where the variables
        # are unset, and removed from the host: it is printed, logged and names the checkpoint.
        chosen, url_public, url_secret = _split_credentials(chosen)
        public, secret = public or url_public, secret or url_secret
        missing = [
            name
            for name, value in (("LANGFUSE_PUBLIC_KEY", public), ("LANGFUSE_SECRET_KEY", secret))
            if not value
        ]
        if missing:
            raise LangfuseImportError(
                f"{' and '.join(missing)} not set: export the project's API keys "
                "(Langfuse > Project settings > API keys)",
                exit_code=EXIT_USAGE,
            )
        if not re.match(r"^https?://[^/\s]+", chosen):
            raise LangfuseImportError(
                f"Langfuse host {redact_url(chosen)!r} is not an http(s) URL",
                exit_code=EXIT_USAGE,
            )
        timeout = env.get("LANGFUSE_TIMEOUT")
        try:
            seconds = float(timeout) if timeout else 60.0
        except ValueError:
            raise LangfuseImportError(
                f"LANGFUSE_TIMEOUT={timeout!r} is not a number", exit_code=EXIT_USAGE
            ) from None
        return cls(chosen.rstrip("/"), str(public), str(secret), seconds)


def checkpoint_name(host: str) -> str:
    """The store-state name for a host: ``langfuse-<host[:port]>``, file-name safe; credentials
    in the URL never become part of a file name."""
    netloc = re.sub(r"^https?://", "", _split_credentials(host.rstrip("/"))[0])
    return "langfuse-" + re.sub(r"[^A-Za-z0-9._-]+", "_", netloc)


def _split_credentials(url: str) -> tuple[str, str | None, str | None]:
    """``(url without user:password@, user, password)``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url, None, None
    if "@" not in parts.netloc:
        return url, None, None
    userinfo, host = parts.netloc.rsplit("@", 1)
    user, _, password = userinfo.partition(":")
    clean = urlunsplit(parts._replace(netloc=host))
    return clean, unquote(user) or None, unquote(password) or None


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try. ``attempts`` counts tries for 5xx/timeouts/network errors; rate limits
    (429) are waited out up to ``rate_limit_attempts`` times, each wait as long as the server
    asks (up to ``max_rate_limit_wait``)."""

    attempts: int = 6
    backoff: float = 1.0
    max_backoff: float = 60.0
    rate_limit_attempts: int = 50
    max_rate_limit_wait: float = 24 * 3600.0


def _header(headers: Mapping[str, str] | None, name: str) -> str | None:
    for key, value in (headers or {}).items():
        if key.lower() == name:
            return value
    return None


def retry_wait(
    headers: Mapping[str, str] | None,
    body: Any,
    attempt: int,
    policy: RetryPolicy,
    now: float | None = None,
) -> float:
    """Seconds to wait before retrying a 429: ``Retry-After`` (seconds or an HTTP date),
    ``retry-after-ms``, Langfuse's ``details.retryAfterSeconds``, else exponential backoff.

    Unlike the SDK this does not cap the wait at 60 s: hourly and daily limits ask for more,
    and retrying early only burns attempts.
    """
    wait: float | None = None
    millis = _header(headers, "retry-after-ms")
    seconds = _header(headers, "retry-after")
    if millis is not None and re.fullmatch(r"\s*\d+(\.\d+)?\s*", millis):
        wait = float(millis) / 1000
    elif seconds is not None:
        if re.fullmatch(r"\s*\d+(\.\d+)?\s*", seconds):
            wait = float(seconds)
        else:
            try:
                parsed = email.utils.parsedate_to_datetime(seconds)
            except (TypeError, ValueError):
                parsed = None
            if parsed is not None:
                if parsed.tzinfo is None:
                    parsed = parsed.replace(tzinfo=UTC)
                wait = parsed.timestamp() - (time.time() if now is None else now)
    if wait is None and isinstance(body, Mapping):
        details = body.get("details")
        if isinstance(details, Mapping) and isinstance(
            details.get("retryAfterSeconds"), int | float
        ):
            wait = float(details["retryAfterSeconds"])
    if wait is None:
        wait = _backoff(attempt, policy)
    return min(max(wait, 0.0), policy.max_rate_limit_wait)


def _backoff(attempt: int, policy: RetryPolicy) -> float:
    """``backoff * 2**attempt`` with +-10 % jitter, at most ``max_backoff``."""
    base = min(policy.backoff * 2**attempt, policy.max_backoff)
    return base * (0.9 + 0.2 * random.random())


class _Client:
    """The SDK's API client plus plain GETs for endpoints SDK 5 dropped, with our retries.

    SDK retries are switched off (``max_retries=0``): its 429 wait is capped at 60 s and its
    retries would hide attempts from the progress display.
    """

    def __init__(
        self,
        settings: LangfuseSettings,
        policy: RetryPolicy,
        reporter: ImportReporter,
        stats: ImportStats,
        sleep: Callable[[float], None],
    ) -> None:
        self.settings = settings
        self.policy = policy
        self.reporter = reporter
        self.stats = stats
        self.sleep = sleep
        from langfuse.api import LangfuseAPI  # the SDK loads only when an import runs

        self.http = httpx.Client(timeout=settings.timeout, follow_redirects=True)
        self.api = LangfuseAPI(
            base_url=settings.host,
            username=settings.public_key,
            password=settings.secret_key,
            x_langfuse_sdk_name="llmtrace",
            x_langfuse_public_key=settings.public_key,
            httpx_client=self.http,
            timeout=settings.timeout,
        )
        self.options: dict[str, Any] = {"max_retries": 0, "timeout_in_seconds": settings.timeout}

    def close(self) -> None:
        self.http.close()

    def call(self, what: str, request: Callable[[], Any]) -> Any:
        """Run ``request`` with our retry rules; ``what`` names it in error messages."""
        from langfuse.api.core.api_error import ApiError

        failures = 0
        waits = 0
        while True:
            try:
                return request()
            except ApiError as exc:
                status = exc.status_code or 0
                if status in (401, 403):
                    raise LangfuseImportError(
                        self._auth_message(status), exit_code=EXIT_USAGE
                    ) from None
                if status == 404:
                    raise _NotFound(f"{what}: HTTP 404: {_message(exc.body)}") from None
                if status == 400:
                    raise _BadRequest(f"{what}: HTTP 400: {_message(exc.body)}") from None
                if status == 429:
                    waits += 1
                    if waits > self.policy.rate_limit_attempts:
                        raise LangfuseImportError(
                            f"{what}: still rate limited (HTTP 429) after {waits - 1} waits"
                        ) from None
                    wait = retry_wait(exc.headers, exc.body, waits - 1, self.policy)
                    self.stats.rate_limit_waits += 1
                    self.stats.waited_seconds += wait
                    self._pause(wait, f"rate limited by Langfuse (HTTP 429), waiting {wait:.0f} s")
                    continue
                if 200 <= status < 300:
                    # the SDK could not decode a success answer: a truncated body, an HTML
                    # page from a proxy; as transient as a 5xx
                    problem = f"malformed answer (HTTP {status}, not JSON): {_message(exc.body)}"
                elif status >= 500 or status in (408, 409):
                    problem = f"HTTP {status}: {_message(exc.body)}"
                else:
                    raise LangfuseImportError(
                        f"{what}: HTTP {status}: {_message(exc.body)}"
                    ) from None
            except _MalformedPage as exc:
                problem = str(exc)
            except httpx.TimeoutException:
                problem = f"no answer within {self.settings.timeout:g} s"
            except httpx.TransportError as exc:
                problem = f"network error: {exc or type(exc).__name__}"
            failures += 1
            if failures >= self.policy.attempts:
                raise LangfuseImportError(
                    f"{what} failed {failures} times, last: {problem}"
                ) from None
            wait = _backoff(failures - 1, self.policy)
            self.stats.retries += 1
            self._pause(wait, f"{problem}; retrying in {wait:.1f} s")

    def _pause(self, seconds: float, reason: str) -> None:
        self.reporter.waiting(seconds, reason)
        self.sleep(seconds)

    def _auth_message(self, status: int) -> str:
        verb = "rejected" if status == 401 else "refused access for"
        return (
            f"Langfuse at {self.settings.host} {verb} the API keys (HTTP {status}): check "
            "LANGFUSE_PUBLIC_KEY / LANGFUSE_SECRET_KEY and that the host is the project's region "
            "(--host, LANGFUSE_BASE_URL or LANGFUSE_HOST)"
        )

    def get_json(self, path: str, params: dict[str, Any]) -> dict[str, Any]:
        """A plain GET for the page-based endpoints; errors become ``ApiError`` like the SDK's."""
        from langfuse.api.core.api_error import ApiError

        response = self.http.get(
            f"{self.settings.host}/{path}",
            params={k: v for k, v in params.items() if v is not None},
            auth=(self.settings.public_key, self.settings.secret_key),
        )
        try:
            body = response.json()
        except ValueError:
            body = response.text
        if not 200 <= response.status_code < 300:
            raise ApiError(
                status_code=response.status_code, headers=dict(response.headers), body=body
            )
        if not isinstance(body, dict) or not isinstance(body.get("data"), list):
            raise _MalformedPage(
                f"malformed answer (HTTP {response.status_code}, not a page of data): "
                f"{_message(body)}"
            )
        return body


def _message(body: Any) -> str:
    if isinstance(body, Mapping):
        for key in ("message", "error"):
            if body.get(key):
                return escape(str(body[key]))[:200]
    text = str(body or "").strip()
    return escape(text[:200]) or "no message"


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None
