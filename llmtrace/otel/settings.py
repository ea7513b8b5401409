"""Live-side settings: ``init(**kwargs)`` first, then ``LLMTRACE_*`` / ``OTEL_*`` variables.

The standard ``OTEL_*`` variables keep their meaning (service name, resource attributes, OTLP
endpoint, protocol, headers, timeouts): the OTLP exporters read most of them themselves, so this
module only decides what the SDK does not (which exporters, which protocol). What is ours is
``LLMTRACE_*``; every variable has an ``init()`` keyword of the same name in lower case without
the prefix, so ``llmtrace run`` (variables) and ``llmtrace.init()`` (keywords) configure the same
thing.

A bad variable never stops the app: it is reported once through the guard and its default used.
A bad keyword is a programming error at start-up and raises ``ValueError`` at once.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from llmtrace.otel import _guard

EXPORTER_NAMES = frozenset({"otlp", "store", "console", "none"})
PROTOCOLS = frozenset({"grpc", "http/protobuf"})
# Metric labels llmtrace can attach, by short name -> data-point attribute key.
METRIC_LABELS: dict[str, str] = {
    "model": "gen_ai.request.model",
    "provider": "gen_ai.provider.name",
    "operation": "gen_ai.operation.name",
    "service": "service.name",
    "prompt": "llmtrace.prompt",
    "action": "llmtrace.action",
    "agent": "gen_ai.agent.name",
}
DEFAULT_METRIC_LABELS = ("model", "provider", "operation", "service", "prompt", "action", "agent")
# SDKs llmtrace instruments with the official OpenTelemetry GenAI instrumentations.
INSTRUMENTABLE = ("openai", "anthropic", "google_genai")
# Where the live side prices an LLM span (``LLMTRACE_PROCESSING``): ``worker`` - always on its
# background thread, in batches; ``inline`` - on the app's thread inside ``span.end()`` when no
# other span is queued or being priced (else queued for the worker, in order)
PROCESSING_MODES = ("worker", "inline")


@dataclass(frozen=True)
class LiveSettings:
    """Everything ``init()`` needs, resolved. Field docs name the variable that sets each."""

    service_name: str | None = None  # OTEL_SERVICE_NAME (else the SDK's resource detection)
    environment: str | None = None  # LLMTRACE_ENVIRONMENT -> deployment.environment.name
    exporters: tuple[str, ...] = ("store",)  # LLMTRACE_EXPORTERS=otlp,store,console
    otlp_endpoint: str | None = None  # base URL; else the exporters read OTEL_EXPORTER_OTLP_*
    otlp_protocol: str = "http/protobuf"  # OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL
    otlp_headers: Mapping[str, str] | None = None  # OTEL_EXPORTER_OTLP_HEADERS (read by exporter)
    store: Path | None = None  # LLMTRACE_STORE (default ./.llmtrace)
    metrics: bool = True  # LLMTRACE_METRICS=false turns llmtrace's metrics off
    metric_interval_ms: int = 60_000  # OTEL_METRIC_EXPORT_INTERVAL
    metric_labels: tuple[str, ...] = DEFAULT_METRIC_LABELS  # LLMTRACE_METRIC_LABELS
    metric_allow: Mapping[str, frozenset[str]] = field(
        default_factory=dict
    )  # LLMTRACE_METRIC_ALLOW
    metric_max_values: int = 50  # LLMTRACE_METRIC_MAX_VALUES: distinct values kept per label
    capture_content: bool = False  # LLMTRACE_CAPTURE_CONTENT: let messages onto spans
    instrument: tuple[str, ...] = INSTRUMENTABLE  # LLMTRACE_INSTRUMENT=openai,anthropic | none
    prices: Path | None = None  # LLMTRACE_PRICES: a price-override file for pricing
    max_queue_size: int = 2048  # LLMTRACE_MAX_QUEUE_SIZE: bound of each export queue
    # LLMTRACE_BATCH_DELAY_MS: how long the pricing worker lets spans gather before it prices
    # them as one batch; longer = less CPU per span, later costs (exporters batch on their own)
    batch_delay_ms: float = 200.0
    # LLMTRACE_PROCESSING=worker|inline: where each LLM span is priced. ``worker``: on the
    # background thread, in batches. ``inline``: on the app's thread inside ``span.end()``
    # (tens of microseconds a call, spread evenly over calls) when no other span is queued or
    # being priced, else queued for the worker as in ``worker``; metrics are still recorded by
    # the worker once per batch, and the first call's price load stays on the worker
    processing: str = "worker"
    # LLMTRACE_EXIT_TIMEOUT_MS: the most an unreachable or silent OTLP endpoint may delay the
    # app's exit (or LiveHandle.shutdown()); spans not exported by then are dropped and counted
    exit_timeout_ms: float = 3000.0
    set_global: bool = True  # install the providers as the process-wide ones

    def label_keys(self) -> tuple[str, ...]:
        """Data-point attribute keys of the chosen metric labels."""
        return tuple(METRIC_LABELS[name] for name in self.metric_labels)


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.replace(";", ",").split(",") if part.strip()]


def _bool(value: str | bool) -> bool:
    if isinstance(value, bool):
        return value
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _exporters(value: str | Sequence[str]) -> tuple[str, ...]:
    names = _split(value) if isinstance(value, str) else [str(v).strip() for v in value]
    unknown = sorted(set(names) - EXPORTER_NAMES)
    if unknown:
        raise ValueError(f"unknown exporter(s) {unknown}; choose from {sorted(EXPORTER_NAMES)}")
    return tuple(n for n in dict.fromkeys(names) if n != "none")


def _labels(value: str | Sequence[str]) -> tuple[str, ...]:
    names = _split(value) if isinstance(value, str) else list(value)
    unknown = sorted(set(names) - set(METRIC_LABELS))
    if unknown:
        raise ValueError(f"unknown metric label(s) {unknown}; choose from {sorted(METRIC_LABELS)}")
    return tuple(dict.fromkeys(names))


def _allow(value: str | Mapping[str, Any]) -> dict[str, frozenset[str]]:
    """``model=gpt-4o|o3;prompt=checkout`` (or a mapping) -> {label: allowed values}."""
    if isinstance(value, Mapping):
        items = {k: [value[k]] if isinstance(value[k], str) else list(value[k]) for k in value}
    else:
        items = {}
        for entry in [p for p in value.split(";") if p.strip()]:
            label, sep, values = entry.partition("=")
            if not sep:
                raise ValueError(f"expected label=value|value, got {entry!r}")
            items[label.strip()] = [v.strip() for v in values.split("|") if v.strip()]
    unknown = sorted(set(items) - set(METRIC_LABELS))
    if unknown:
        raise ValueError(f"unknown metric label(s) {unknown}; choose from {sorted(METRIC_LABELS)}")
    return {label: frozenset(values) for label, values in items.items()}


def _instrument(value: str | bool | Sequence[str]) -> tuple[str, ...]:
    if value is True:
        return INSTRUMENTABLE
    if value is False:
        return ()
    names = _split(value) if isinstance(value, str) else list(value)
    if names in (["auto"], ["all"], ["true"]):
        return INSTRUMENTABLE
    if names in (["none"], ["false"], []):
        return ()
    unknown = sorted(set(names) - set(INSTRUMENTABLE))
    if unknown:
        raise ValueError(f"unknown SDK(s) {unknown}; choose from {list(INSTRUMENTABLE)}")
    return tuple(names)


def _protocol(value: str) -> str:
    if value not in PROTOCOLS:
        raise ValueError(f"unknown OTLP protocol {value!r}; choose from {sorted(PROTOCOLS)}")
    return value


def _headers(value: str | Mapping[str, str]) -> dict[str, str]:
    if isinstance(value, Mapping):
        return {str(k): str(v) for k, v in value.items()}
    headers = {}
    for pair in _split(value):
        key, sep, val = pair.partition("=")
        if not sep:
            raise ValueError(f"expected key=value, got {pair!r}")
        headers[key.strip()] = val.strip()
    return headers


def _delay_ms(value: str | float) -> float:
    number = float(value)
    if not 0 <= number <= 60_000:
        raise ValueError(f"expected milliseconds from 0 to 60000, got {value!r}")
    return number


def _processing(value: str) -> str:
    mode = str(value).strip().lower()
    if mode not in PROCESSING_MODES:
        raise ValueError(f"unknown processing mode {value!r}; choose from {list(PROCESSING_MODES)}")
    return mode


def _positive_int(value: str | int) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError(f"expected a positive integer, got {value!r}")
    return number


# keyword -> (environment variables in order of precedence, parser)
_SOURCES: dict[str, tuple[tuple[str, ...], Any]] = {
    "service_name": (("OTEL_SERVICE_NAME",), str),
    "environment": (("LLMTRACE_ENVIRONMENT",), str),
    "exporters": (("LLMTRACE_EXPORTERS",), _exporters),
    # The exporters read OTEL_EXPORTER_OTLP_[TRACES_|METRICS_]ENDPOINT themselves (a signal's own
    # variable is a full URL, the shared one a base): only init(otlp_endpoint=...) is passed on.
    "otlp_endpoint": ((), str),
    "otlp_protocol": (
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"),
        _protocol,
    ),
    "otlp_headers": ((), _headers),  # the exporters read OTEL_EXPORTER_OTLP_*HEADERS themselves
    "store": (("LLMTRACE_STORE",), Path),
    "metrics": (("LLMTRACE_METRICS",), _bool),
    "metric_interval_ms": (("OTEL_METRIC_EXPORT_INTERVAL",), _positive_int),
    "metric_labels": (("LLMTRACE_METRIC_LABELS",), _labels),
    "metric_allow": (("LLMTRACE_METRIC_ALLOW",), _allow),
    "metric_max_values": (("LLMTRACE_METRIC_MAX_VALUES",), _positive_int),
    "capture_content": (("LLMTRACE_CAPTURE_CONTENT",), _bool),
    "instrument": (("LLMTRACE_INSTRUMENT",), _instrument),
    "prices": (("LLMTRACE_PRICES",), Path),
    "max_queue_size": (("LLMTRACE_MAX_QUEUE_SIZE",), _positive_int),
    "batch_delay_ms": (("LLMTRACE_BATCH_DELAY_MS",), _delay_ms),
    "processing": (("LLMTRACE_PROCESSING",), _processing),
    "exit_timeout_ms": (("LLMTRACE_EXIT_TIMEOUT_MS",), _delay_ms),
    "set_global": ((), bool),
}

_ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")

ENV_VARS: tuple[str, ...] = tuple(
    dict.fromkeys(var for names, _ in _SOURCES.values() for var in names)
)


def resolve(environ: Mapping[str, str] | None = None, **kwargs: Any) -> LiveSettings:
    """Settings from keywords, else environment variables, else defaults.

    Without ``LLMTRACE_EXPORTERS`` the exporters are ``store``, plus ``otlp`` when an OTLP
    endpoint is configured: a plain ``init()`` then costs locally and also ships to the backend
    the standard variables name.
    """
    env = os.environ if environ is None else environ
    valid = {f.name for f in fields(LiveSettings)}
    unknown = sorted(set(kwargs) - valid)
    if unknown:
        raise ValueError(f"llmtrace.init() got unknown keyword(s) {unknown}")
    values: dict[str, Any] = {}
    for name, (variables, parse) in _SOURCES.items():
        if name in kwargs and kwargs[name] is not None:
            try:
                values[name] = parse(kwargs[name]) if parse is not str else str(kwargs[name])
            except (TypeError, ValueError) as exc:
                raise ValueError(f"llmtrace.init({name}=...): {exc}") from None
            continue
        for variable in variables:
            raw = env.get(variable)
            if raw is None or raw.strip() == "":
                continue
            try:
                values[name] = parse(raw)
            except (TypeError, ValueError) as exc:
                _guard.swallow(f"settings:{variable}", ValueError(f"{variable}={raw!r}: {exc}"))
            break
    settings = replace(LiveSettings(), **values)
    endpoint_env = any(env.get(v) for v in _ENDPOINT_VARS)
    if "exporters" not in values and (settings.otlp_endpoint or endpoint_env):
        settings = replace(settings, exporters=("store", "otlp"))
    return settings


def environment_problems(environ: Mapping[str, str]) -> list[str]:
    """Each ``LLMTRACE_*`` / ``OTEL_*`` setting in ``environ`` that ``resolve`` would skip as
    invalid, as ``VAR='value': why``. ``llmtrace run`` refuses to start the app with these (a
    live ``init()`` only logs them, because it must never break the app)."""
    problems: list[str] = []
    for variables, parse in _SOURCES.values():
        for variable in variables:
            raw = environ.get(variable)
            if raw is None or raw.strip() == "":
                continue
            try:
                parse(raw)
            except (TypeError, ValueError) as exc:
                problems.append(f"{variable}={raw!r}: {exc}")
            break
    return problems
