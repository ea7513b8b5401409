"""OTLP in, Prometheus out: a stand-in for the Collector of ``collectors/otelcol.yaml``.

No Collector binary runs here, and Prometheus 2.42 has no OTLP receiver, so the tests put this
bridge where the Collector would be: apps (``llmtrace.init``, ``llmtrace audit --push-metrics``)
export real OTLP/HTTP to it (tests/live's ``OtlpReceiver`` decodes it), and Prometheus scrapes
``/metrics``. What Prometheus stores is what the Collector's remote write would send:

* names normalised like the Collector's Prometheus translator: ``.`` and other characters to
  ``_``, the unit appended (``USD``; ``s`` -> ``seconds``; ``USD/mo`` -> ``USD_per_month``;
  ``{...}`` annotations dropped), ``_total`` on monotonic sums, ``_bucket/_sum/_count`` for
  histograms with ``le`` formatted like Go's ``FormatFloat(f, 'f', -1)``;
* only cumulative sums and histograms (remote write drops delta ones);
* the ``transform/promote`` processor of the config: ``service.name`` and
  ``deployment.environment.name`` copied from the resource onto data points that lack them;
  ``job``/``instance`` from ``service.name``/``service.instance.id``, and the scope as
  ``otel_scope_name``/``otel_scope_version`` labels;
* each sample carries its data point's own timestamp, as remote write does: a value exported
  once (an audit run) is one sample, not a series that lives on in every scrape.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
from live.receiver import OtlpReceiver, any_value

PROMOTED = ("service.name", "deployment.environment.name")
CUMULATIVE = 2  # AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
UNITS = {
    "d": "days", "h": "hours", "min": "minutes", "s": "seconds", "ms": "milliseconds",
    "us": "microseconds", "ns": "nanoseconds", "By": "bytes", "KiBy": "kibibytes",
    "MiBy": "mebibytes", "GiBy": "gibibytes", "m": "meters", "V": "volts", "A": "amperes",
    "J": "joules", "W": "watts", "g": "grams", "Cel": "celsius", "Hz": "hertz", "%": "percent",
}  # fmt: skip
PER_UNITS = {"s": "second", "m": "minute", "h": "hour", "d": "day", "w": "week", "mo": "month",
             "y": "year"}  # fmt: skip


def _tokens(text: str) -> list[str]:
    return [t for t in re.split(r"[^a-zA-Z0-9]+", text) if t]


def unit_suffix(unit: str) -> list[str]:
    """Name tokens a unit adds (``{token}`` none, ``USD/mo`` ``USD_per_month``)."""
    unit = re.sub(r"\{[^}]*\}", "", unit).strip()
    if not unit or unit == "1":
        return []
    main, _, per = unit.partition("/")
    tokens = _tokens(UNITS.get(main, main))
    if per:
        tokens += ["per", *_tokens(PER_UNITS.get(per, per))]
    return tokens


def metric_name(name: str, unit: str, *, counter: bool = False) -> str:
    """The Collector's Prometheus name for an OTLP metric (with metric suffixes on)."""
    tokens = _tokens(name)
    for token in unit_suffix(unit):
        if token not in tokens:
            tokens.append(token)
    if counter and tokens[-1] != "total":
        tokens.append("total")
    return "_".join(tokens)


def label_name(key: str) -> str:
    label = re.sub(r"[^a-zA-Z0-9_]", "_", key)
    return f"key_{label}" if label[:1].isdigit() else label


def go_float(value: float) -> str:
    """Go's ``strconv.FormatFloat(v, 'f', -1, 64)``: ``0.01``, ``1``, ``0.00001``."""
    if value == float("inf"):
        return "+Inf"
    return np.format_float_positional(value, trim="-")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


Series = tuple[str, tuple[tuple[str, str], ...]]


class PrometheusBridge:
    """An OTLP/HTTP receiver plus a ``/metrics`` endpoint in the Collector's naming."""

    def __init__(self) -> None:
        self.receiver = OtlpReceiver()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def otlp_endpoint(self) -> str:
        return self.receiver.endpoint

    @property
    def scrape_target(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{host}:{port}"

    def start(self) -> PrometheusBridge:
        self.receiver.start()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self.receiver.stop()

    def samples(self) -> dict[Series, tuple[float, int]]:
        """Latest (value, timestamp ms) of every series received so far."""
        latest: dict[Series, tuple[float, int]] = {}
        for request in list(self.receiver.metric_requests):
            for rm in request.resource_metrics:
                resource = {kv.key: any_value(kv.value)[0] for kv in rm.resource.attributes}
                for sm in rm.scope_metrics:
                    scope = {"otel_scope_name": sm.scope.name}
                    if sm.scope.version:
                        scope["otel_scope_version"] = sm.scope.version
                    for metric in sm.metrics:
                        for series, sample in _translate(metric, resource, scope):
                            if series not in latest or latest[series][1] <= sample[1]:
                                latest[series] = sample
        return latest

    def exposition(self) -> str:
        lines = []
        for (name, labels), (value, ms) in sorted(self.samples().items()):
            rendered = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
            lines.append(f"{name}{{{rendered}}} {float(value)!r} {ms}")
        return "\n".join(lines) + "\n"


def _labels(attributes: Mapping[str, Any], resource: Mapping[str, Any], **extra: str) -> Any:
    attrs = dict(attributes)
    for key in PROMOTED:  # transform/promote of collectors/otelcol.yaml
        if key not in attrs and key in resource:
            attrs[key] = resource[key]
    labels = {label_name(k): str(v) for k, v in attrs.items() if v is not None and str(v) != ""}
    if "service.name" in resource:
        labels["job"] = str(resource["service.name"])
    if "service.instance.id" in resource:
        labels["instance"] = str(resource["service.instance.id"])
    labels.update(extra)
    return tuple(sorted(labels.items()))


def _translate(
    metric: Any, resource: Mapping[str, Any], scope: Mapping[str, str]
) -> list[tuple[Series, tuple[float, int]]]:
    kind = metric.WhichOneof("data")
    data = getattr(metric, kind)
    out: list[tuple[Series, tuple[float, int]]] = []
    if kind in ("sum", "histogram") and data.aggregation_temporality != CUMULATIVE:
        return out  # prometheus_remote_write drops delta sums and histograms
    for dp in data.data_points:
        attrs = {kv.key: any_value(kv.value)[0] for kv in dp.attributes}

        def labels(attrs: Mapping[str, Any] = attrs, **extra: str) -> Any:
            return _labels(attrs, resource, **scope, **extra)

        ms = dp.time_unix_nano // 1_000_000
        if kind == "histogram":
            base = metric_name(metric.name, metric.unit)
            running = 0
            bounds = [*dp.explicit_bounds, float("inf")]
            for bound, count in zip(bounds, dp.bucket_counts, strict=False):
                running += count
                out.append(((f"{base}_bucket", labels(le=go_float(bound))), (float(running), ms)))
            out.append(((f"{base}_sum", labels()), (dp.sum, ms)))
            out.append(((f"{base}_count", labels()), (float(dp.count), ms)))
        elif kind in ("sum", "gauge"):
            counter = kind == "sum" and data.is_monotonic
            value = getattr(dp, dp.WhichOneof("value") or "as_double")
            name = metric_name(metric.name, metric.unit, counter=counter)
            out.append(((name, labels()), (float(value), ms)))
    return out


def _handler(bridge: PrometheusBridge) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet server
            return

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if self.path.startswith("/metrics"):
                body = bridge.exposition().encode()
                self.send_response(200)
                self.send_header("content-type", "text/plain; version=0.0.4")
            else:
                body = b"not found"
                self.send_response(404)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler
