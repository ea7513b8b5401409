"""OTLP exporters that cannot hold the app at exit, and whose failures are logged once.

A collector that accepts connections and never answers made ``shutdown()`` take 74-83 s and
delayed process exit by 41 s: the SDK's batch processor flushes its whole queue at exit, one
export after another, each waiting for the exporter's timeout (10 s) with retries, and
``force_flush`` has no deadline at all. The SDK's exporters also log every failed batch.

``BoundedSpanExporter`` / ``BoundedMetricExporter`` wrap the SDK's exporters:

* Each export runs on a short-lived daemon thread while the caller waits. In normal operation
  the caller (the SDK's batch worker, never the app's thread) waits as long as the export
  takes, so nothing changes. Once the process starts exiting (a ``threading`` exit hook, which
  runs before the SDK's ``atexit`` flushes) or ``LiveHandle.shutdown()`` begins, every
  exporter gets one deadline, ``LLMTRACE_EXIT_TIMEOUT_MS`` from then: an export still running
  at the deadline is abandoned (its daemon thread does not keep the process alive) and later
  batches are dropped at once, counted as failures.
* Failures (an exception, a FAILURE result, a timeout) are logged once, with the endpoint and
  a running count, and again only when the count reaches 10, 100, 1000, ...; the SDK's own
  per-batch log lines are filtered out while one of these exports runs.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from llmtrace.otel import _guard

logger = logging.getLogger("llmtrace.otel")

DEFAULT_EXIT_TIMEOUT_MS = 3000.0
_EXPORT_THREAD = "llmtrace-otlp-export"
# A filter applies only to the logger it is added to, not to its children: every module of the
# SDK's OTLP exporters that logs a failed export is named.
_SDK_LOGGERS = tuple(
    f"opentelemetry.exporter.otlp.proto.{protocol}.{module}"
    for protocol in ("http", "grpc")
    for module in ("trace_exporter", "metric_exporter", "exporter")
) + ("opentelemetry.exporter.otlp.proto.grpc.exporter",)

_exporters: weakref.WeakSet[_Bounded] = weakref.WeakSet()
_registered = False
_registry_lock = threading.Lock()


class _InsideExport(logging.Filter):
    """Drops the SDK exporters' records emitted on our export threads: we count and log those
    failures ourselves, once. Records from the app's own exporters pass untouched."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not threading.current_thread().name.startswith(_EXPORT_THREAD)


_FILTER = _InsideExport()


def begin_exit() -> None:
    """Give every bounded exporter its exit deadline (idempotent: the first call counts)."""
    for exporter in list(_exporters):
        exporter.start_deadline()


def _register(exporter: _Bounded) -> None:
    global _registered
    with _registry_lock:
        _exporters.add(exporter)
        if not _registered:
            # The SDK's providers flush in atexit handlers; the deadline must start before
            # them. threading's exit hooks run before any atexit handler (CPython calls
            # threading._shutdown first); atexit is the fallback where that hook is missing.
            try:
                threading._register_atexit(begin_exit)  # type: ignore[attr-defined]
            except (AttributeError, RuntimeError):
                atexit.register(begin_exit)
            for name in _SDK_LOGGERS:
                logging.getLogger(name).addFilter(_FILTER)
            _registered = True


class _Bounded:
    """Deadline and failure accounting shared by the span and metric wrappers."""

    def __init__(self, inner: Any, exit_timeout_ms: float, describe: str) -> None:
        self.inner = inner
        self.exit_timeout_s = max(0.0, exit_timeout_ms) / 1000
        self.describe = describe
        self.failures = 0
        self._deadline: float | None = None
        self._lock = threading.Lock()
        _register(self)

    def start_deadline(self) -> None:
        with self._lock:
            if self._deadline is None:
                self._deadline = time.monotonic() + self.exit_timeout_s

    def _run(
        self,
        call: Callable[[], Any],
        failed: Any,
        ok: Callable[[Any], bool],
        *,
        report: bool = True,
    ) -> Any:
        """``call()`` on a daemon thread, waited for until done or past the exit deadline;
        failures are counted and logged unless ``report`` is false (shutdown, flush)."""
        fail = self._failed if report else _ignore
        deadline = self._deadline
        if deadline is not None and time.monotonic() >= deadline:
            fail("exit deadline passed, batch dropped")
            return failed
        box: list[Any] = []

        def target() -> None:
            try:
                box.append(call())
            except BaseException as exc:  # noqa: BLE001 - reported below, never raised
                box.append(exc)

        thread = threading.Thread(target=target, name=_EXPORT_THREAD, daemon=True)
        thread.start()
        while True:
            deadline = self._deadline
            wait = 0.05 if deadline is None else max(0.0, min(0.05, deadline - time.monotonic()))
            thread.join(wait)
            if not thread.is_alive():
                break
            if deadline is not None and time.monotonic() >= deadline:
                fail(f"no answer within the exit timeout ({self.exit_timeout_s:g} s)")
                return failed
        result = box[0] if box else failed
        if isinstance(result, BaseException):
            fail(repr(result))
            return failed
        if not ok(result):
            fail(f"the exporter returned {result}")
        return result

    def _failed(self, why: str) -> None:
        with self._lock:
            self.failures += 1
            count = self.failures
        _guard.count("exporter.otlp")
        if count == 1 or _is_power_of_ten(count):
            logger.warning(
                "llmtrace: OTLP export to %s failed (%s); %d failed batch(es) so far "
                "(logged again at 10, 100, 1000...; the app is not affected)",
                self.describe,
                why,
                count,
            )

    def _shutdown_inner(self, **kwargs: Any) -> None:
        self.start_deadline()
        self._run(lambda: self.inner.shutdown(**kwargs), None, bool, report=False)


def _ignore(why: str) -> None:
    del why


def _is_power_of_ten(count: int) -> bool:
    while count % 10 == 0:
        count //= 10
    return count == 1


class BoundedSpanExporter(_Bounded, SpanExporter):
    """A span exporter whose exports at exit end by ``exit_timeout_ms``; see the module."""

    def __init__(self, inner: SpanExporter, exit_timeout_ms: float, describe: str) -> None:
        _Bounded.__init__(self, inner, exit_timeout_ms, describe)

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        return self._run(
            lambda: self.inner.export(spans),
            SpanExportResult.FAILURE,
            lambda result: result == SpanExportResult.SUCCESS,
        )

    def shutdown(self) -> None:
        self._shutdown_inner()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        result = self._run(
            lambda: self.inner.force_flush(timeout_millis), False, bool, report=False
        )
        return bool(result)


def bounded_metric_exporter(inner: Any, exit_timeout_ms: float, describe: str) -> Any:
    """``inner`` (an SDK ``MetricExporter``) wrapped like ``BoundedSpanExporter``."""
    from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult

    class BoundedMetricExporter(_Bounded, MetricExporter):
        def __init__(self) -> None:
            MetricExporter.__init__(
                self,
                preferred_temporality=getattr(inner, "_preferred_temporality", None),
                preferred_aggregation=getattr(inner, "_preferred_aggregation", None),
            )
            _Bounded.__init__(self, inner, exit_timeout_ms, describe)

        def export(self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any):
            return self._run(
                lambda: inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs),
                MetricExportResult.FAILURE,
                lambda result: result == MetricExportResult.SUCCESS,
            )

        def force_flush(self, timeout_millis: float = 10_000) -> bool:
            flush = lambda: inner.force_flush(timeout_millis)  # noqa: E731
            return bool(self._run(flush, False, bool, report=False))

        def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
            self._shutdown_inner(timeout_millis=timeout_millis, **kwargs)

    return BoundedMetricExporter()
