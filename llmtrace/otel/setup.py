"""``llmtrace.init()``: one call that makes every LLM call in the process carry its cost.

What it does, in order (each step guarded; a failing step is logged once and skipped):

1. Resolve settings from keywords, ``LLMTRACE_*`` and the standard ``OTEL_*`` variables.
2. Tracer provider: the one given, else the process's SDK provider if the app already set one,
   else a new one with the standard resource (``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``).
3. Add the ``CostSpanProcessor`` wrapping one batch processor per selected exporter.
4. Meter provider: the one given, else the app's SDK one, else a new one with the OTLP reader
   (when ``otlp`` is selected) and any ``metric_readers`` passed (e.g. a Prometheus reader);
   the cost and token instruments are created on it.
5. Install both as the global providers (unless ``set_global=False`` or already set), so the
   ``anthropic`` SDK's own spans and any other instrumentation land in the same pipeline.
6. Instrument the installed SDKs with the official OpenTelemetry GenAI instrumentations,
   passing the fingerprint completion hook: an SDK the app has imported at once, one it has
   not when it does (a post-import hook), and a part of one it has not used yet (the OpenAI
   Responses API) when it first does (``llmtrace.otel.deferred``). An app pays only for the
   instrumentation of what it uses, and not before it uses it.

The price data (genai-prices) is loaded when the first LLM call is priced, on the pricing
worker's thread (``llmtrace.otel.pricer``): an app that makes no LLM call never pays for it.

Nothing here touches the network at ``import llmtrace``; ``init()`` itself opens no connection
either (exporters connect when they first export). Calling ``init()`` again returns the same
handle.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from llmtrace.otel import _guard, deferred, lean
from llmtrace.otel.settings import LiveSettings, resolve

# SDK module -> (instrumentation module, instrumentor class)
INSTRUMENTORS: dict[str, tuple[str, str, str]] = {
    "openai": ("openai", "opentelemetry.instrumentation.genai.openai", "OpenAIInstrumentor"),
    "anthropic": (
        "anthropic",
        "opentelemetry.instrumentation.genai.anthropic",
        "AnthropicInstrumentor",
    ),
    "google_genai": (
        "google.genai",
        "opentelemetry.instrumentation.google_genai",
        "GoogleGenAiSdkInstrumentor",
    ),
}
CAPTURE_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"

_lock = threading.RLock()
_handle: LiveHandle | None = None


@dataclass
class LiveHandle:
    """What ``init()`` set up; ``shutdown()`` flushes and undoes it (tests, short scripts)."""

    settings: LiveSettings
    tracer_provider: Any
    meter_provider: Any
    processor: Any
    hook: Any
    metrics: Any = None
    instrumented: list[str] = field(default_factory=list)
    owns_tracer_provider: bool = False
    owns_meter_provider: bool = False

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Export everything pending (spans, then metrics)."""
        ok = True
        try:
            ok = self.processor.force_flush(timeout_millis)
            if self.meter_provider is not None and hasattr(self.meter_provider, "force_flush"):
                ok = self.meter_provider.force_flush(timeout_millis) and ok
        except Exception as exc:  # noqa: BLE001
            _guard.swallow("init.force_flush", exc)
            return False
        return ok

    def shutdown(self) -> None:
        """Flush, uninstrument, and shut down what ``init()`` created."""
        global _handle
        with _lock:
            try:
                from llmtrace.otel.bounded import begin_exit

                begin_exit()  # OTLP exports end by LLMTRACE_EXIT_TIMEOUT_MS from now
                self.force_flush()
                names = list(self.instrumented)
                self.instrumented.clear()  # first: a deferred part's hook then does nothing
                for name in names:
                    with deferred.unless_imported(deferred.deferrable(name)):
                        _instrumentor(name).uninstrument()
                lean.uninstall()
                if self.owns_tracer_provider:
                    self.tracer_provider.shutdown()
                else:
                    self.processor.shutdown()
                if self.owns_meter_provider and self.meter_provider is not None:
                    self.meter_provider.shutdown()
            except Exception as exc:  # noqa: BLE001
                _guard.swallow("init.shutdown", exc)
            if _handle is self:
                _handle = None


def current() -> LiveHandle | None:
    """The handle of the ``init()`` in force, if any."""
    return _handle


def init(
    *,
    tracer_provider: Any = None,
    meter_provider: Any = None,
    metric_readers: Sequence[Any] = (),
    span_exporters: Sequence[Any] = (),
    **kwargs: Any,
) -> LiveHandle | None:
    """Price every LLM call of this process; see the module docstring and ``LiveSettings``.

    Keywords are the ``LiveSettings`` fields (``service_name``, ``exporters``, ``store``,
    ``otlp_endpoint``, ``otlp_protocol``, ``otlp_headers``, ``metric_labels``,
    ``metric_allow``, ``metric_max_values``, ``capture_content``, ``instrument``, ``prices``,
    ``max_queue_size``, ``processing``, ``set_global``...), plus objects no variable can name:
    ``tracer_provider`` / ``meter_provider`` to use, extra ``metric_readers`` and extra
    ``span_exporters`` (each behind its own batch processor).

    Returns the handle, or None if set-up failed (logged once; the app runs on untraced).
    Unknown or invalid keywords raise ``ValueError``: that is a bug in the calling code.
    """
    global _handle
    with _lock:
        if _handle is not None:
            return _handle
        settings = resolve(**kwargs)
        try:
            _handle = _setup(
                settings, tracer_provider, meter_provider, metric_readers, span_exporters
            )
        except Exception as exc:  # noqa: BLE001 - never stop the app from starting
            _guard.swallow("init", exc)
            return None
        return _handle


def _resource(settings: LiveSettings) -> Any:
    from opentelemetry.sdk.resources import Resource

    attributes: dict[str, Any] = {}
    if settings.service_name:
        attributes["service.name"] = settings.service_name
    if settings.environment:
        attributes["deployment.environment.name"] = settings.environment
    return Resource.create(attributes)


def _tracer_provider(settings: LiveSettings, given: Any) -> tuple[Any, bool]:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    if given is not None:
        return given, False
    current_provider = trace.get_tracer_provider()
    if isinstance(current_provider, TracerProvider):
        return current_provider, False
    return TracerProvider(resource=_resource(settings)), True


def _meter_provider(settings: LiveSettings, given: Any, readers: list[Any]) -> tuple[Any, bool]:
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider

    if given is not None:
        return given, False
    current_provider = metrics.get_meter_provider()
    if isinstance(current_provider, MeterProvider):
        return current_provider, False
    return MeterProvider(resource=_resource(settings), metric_readers=readers), True


def _setup(
    settings: LiveSettings,
    tracer_provider: Any,
    meter_provider: Any,
    metric_readers: Sequence[Any],
    span_exporters: Sequence[Any],
) -> LiveHandle:
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from llmtrace.otel import exporters
    from llmtrace.otel.hook import FingerprintHook, load_other_hook
    from llmtrace.otel.metrics import CostMetrics
    from llmtrace.otel.processor import CostSpanProcessor, LazyPriceBook

    if settings.capture_content and not os.environ.get(CAPTURE_ENV):
        os.environ[CAPTURE_ENV] = "SPAN_ONLY"

    tracer_provider, owns_tp = _tracer_provider(settings, tracer_provider)
    readers = [*metric_readers, *exporters.metric_readers(settings)]
    meter_provider, owns_mp = _meter_provider(settings, meter_provider, readers)
    cost_metrics = CostMetrics(meter_provider, settings) if settings.metrics else None

    pricer = LazyPriceBook(settings.prices)
    downstream = exporters.span_processors(settings, pricer)
    downstream += [
        BatchSpanProcessor(e, max_queue_size=settings.max_queue_size) for e in span_exporters
    ]
    processor = CostSpanProcessor(
        downstream,
        pricer=pricer,
        on_calls=cost_metrics.record_many if cost_metrics is not None else None,
        on_actions=cost_metrics.record_actions if cost_metrics is not None else None,
        keep_content=settings.capture_content,
        max_queue_size=settings.max_queue_size,
        batch_delay_millis=settings.batch_delay_ms,
        inline_when_idle=settings.processing == "inline",
    )
    tracer_provider.add_span_processor(processor)

    if settings.set_global:
        if owns_tp:
            trace.set_tracer_provider(tracer_provider)
        if owns_mp:
            metrics.set_meter_provider(meter_provider)

    hook = FingerprintHook(then=load_other_hook(os.environ), sink=processor.stash_prompt)
    handle = LiveHandle(
        settings=settings,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        processor=processor,
        hook=hook,
        metrics=cost_metrics,
        owns_tracer_provider=owns_tp,
        owns_meter_provider=owns_mp,
    )
    for name in settings.instrument:
        _instrument_when_imported(handle, name)
    return handle


def _instrument_when_imported(handle: LiveHandle, name: str) -> None:
    """Instrument SDK ``name`` now if the app has imported it, else when it does.

    Importing an SDK and its instrumentation costs seconds (anthropic's types alone ~1 s): an
    app that never uses an installed SDK must not pay for it at ``init()``. A post-import hook
    (wrapt's, as OpenTelemetry's own instrumentations use) instruments it on first import.
    """
    sdk = INSTRUMENTORS[name][0]

    def instrument() -> None:
        if name not in handle.instrumented:
            _instrument(name, handle)

    def on_import(_module: Any) -> None:
        with _lock:
            if _handle is handle:  # not shut down (or replaced) meanwhile
                instrument()

    if sdk in sys.modules:
        instrument()
        return
    try:
        if importlib.util.find_spec(sdk.split(".")[0]) is None:
            return
        from wrapt.importer import register_post_import_hook
    except (ImportError, ValueError):
        return
    register_post_import_hook(_guard_hook(name, on_import), sdk)


def _guard_hook(name: str, hook: Any) -> Any:
    def guarded(module: Any) -> None:
        try:
            hook(module)
        except Exception as exc:  # noqa: BLE001 - runs inside the app's import statement
            _guard.swallow(f"instrument.{name}", exc)

    return guarded


def _instrumentor(name: str) -> Any:
    _, module, cls = INSTRUMENTORS[name]
    return getattr(importlib.import_module(module), cls)()


def _instrument(name: str, handle: LiveHandle) -> bool:
    """Instrument one SDK if both it and its official instrumentation are installed (and add
    it to ``handle.instrumented``); a part of the SDK the app has not imported yet is wrapped
    when it does (``deferred``)."""
    sdk, module, _ = INSTRUMENTORS[name]
    try:
        if importlib.util.find_spec(sdk.split(".")[0]) is None:
            return False
        if importlib.util.find_spec(module.rsplit(".", 1)[0]) is None:
            return False
        instrumentor = _instrumentor(name)
    except ImportError:
        return False
    options = {
        "tracer_provider": handle.tracer_provider,
        "meter_provider": handle.meter_provider,
        "completion_hook": handle.hook,
    }
    try:
        if instrumentor.is_instrumented_by_opentelemetry:
            return False  # someone (opentelemetry-instrument) already did it
        part = deferred.deferrable(name)
        with deferred.unless_imported(part) as shown:
            instrumentor.instrument(skip_dep_check=False, **options)
        if not instrumentor.is_instrumented_by_opentelemetry:
            return False
    except Exception as exc:  # noqa: BLE001
        _guard.swallow(f"instrument.{name}", exc)
        return False
    handle.instrumented.append(name)
    if name == "openai":
        try:  # the hook's message objects built lean while it is their only reader
            lean.install(handle.hook)
        except Exception as exc:  # noqa: BLE001
            _guard.swallow("instrument.lean", exc)
    if part is not None and not shown:

        def wrap_part(_module: Any) -> None:
            with _lock:
                if name in handle.instrumented:  # not uninstrumented (shutdown) meanwhile
                    deferred.wrap_part(part, instrumentor, **options)

        deferred.when_imported(part, _guard_hook(f"{name}.part", wrap_part))
    return True


class LlmtraceConfigurator:
    """``opentelemetry_configurator`` entry point for apps run with ``opentelemetry-instrument``.

    With ``OTEL_PYTHON_CONFIGURATOR=llmtrace`` (needed only when another configurator such as
    opentelemetry-distro's is installed), ``opentelemetry-instrument`` calls this instead of the
    SDK's configurator: it runs ``init(instrument=())`` - ``opentelemetry-instrument`` loads the
    instrumentors itself, right after - and points them at llmtrace's completion hook.
    """

    def configure(self, **kwargs: Any) -> None:
        try:
            if not os.environ.get("OTEL_INSTRUMENTATION_GENAI_COMPLETION_HOOK"):
                os.environ["OTEL_INSTRUMENTATION_GENAI_COMPLETION_HOOK"] = "llmtrace"
            init(instrument=())
        except Exception as exc:  # noqa: BLE001
            _guard.swallow("configurator", exc)
