"""A loopback OTLP/HTTP receiver: decodes protobuf trace and metric exports for assertions.

The live tests export over real OTLP/HTTP (the SDK's ``OTLPSpanExporter`` /
``OTLPMetricExporter``) to this server and check what arrived, so what is asserted is what a
Collector, Tempo or Langfuse would receive, including each attribute's wire type (a cost must
arrive as ``double_value``, never ``int_value``).
"""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue


@dataclass
class ReceivedSpan:
    """One decoded span: ids as hex, attributes as Python values and their OTLP wire types."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    scope: str
    resource: dict[str, Any]
    attributes: dict[str, Any]
    types: dict[str, str]
    start_time_unix_nano: int
    end_time_unix_nano: int


@dataclass
class ReceivedPoint:
    """One metric data point: name, unit, attributes and its value (sum, count, buckets)."""

    name: str
    unit: str
    kind: str
    attributes: dict[str, Any]
    value: float | None = None
    count: int | None = None
    sum: float | None = None
    bounds: list[float] = field(default_factory=list)
    bucket_counts: list[int] = field(default_factory=list)


def any_value(value: AnyValue) -> tuple[Any, str]:
    """A protobuf AnyValue as a Python value, with the name of the field that was set."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None, "empty"
    raw = getattr(value, kind)
    if kind == "array_value":
        return [any_value(v)[0] for v in raw.values], kind
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value)[0] for kv in raw.values}, kind
    return raw, kind


def _attributes(pairs: Any) -> tuple[dict[str, Any], dict[str, str]]:
    values: dict[str, Any] = {}
    types: dict[str, str] = {}
    for kv in pairs:
        values[kv.key], types[kv.key] = any_value(kv.value)
    return values, types


class OtlpReceiver:
    """OTLP/HTTP protobuf endpoints ``/v1/traces`` and ``/v1/metrics`` on 127.0.0.1."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.metric_requests: list[ExportMetricsServiceRequest] = []
        self.trace_messages: list[ExportTraceServiceRequest] = []  # as received, for recording
        self.trace_requests = 0
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def clear(self) -> None:
        with self._lock:
            self.spans.clear()
            self.metric_requests.clear()
            self.trace_messages.clear()

    # -- decoding -------------------------------------------------------------------------------

    def add_traces(self, request: ExportTraceServiceRequest) -> None:
        decoded: list[ReceivedSpan] = []
        for resource_spans in request.resource_spans:
            resource, _ = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    attributes, types = _attributes(span.attributes)
                    decoded.append(
                        ReceivedSpan(
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            scope=scope_spans.scope.name,
                            resource=resource,
                            attributes=attributes,
                            types=types,
                            start_time_unix_nano=span.start_time_unix_nano,
                            end_time_unix_nano=span.end_time_unix_nano,
                        )
                    )
        with self._lock:
            self.spans.extend(decoded)
            self.trace_messages.append(request)
            self.trace_requests += 1

    def add_metrics(self, request: ExportMetricsServiceRequest) -> None:
        with self._lock:
            self.metric_requests.append(request)

    def points(self, name: str | None = None) -> list[ReceivedPoint]:
        """Data points of the latest export of each metric (cumulative temporality)."""
        latest: dict[str, list[ReceivedPoint]] = {}
        with self._lock:
            requests = list(self.metric_requests)
        for request in requests:
            for resource_metrics in request.resource_metrics:
                for scope_metrics in resource_metrics.scope_metrics:
                    for metric in scope_metrics.metrics:
                        key = f"{scope_metrics.scope.name}/{metric.name}"
                        latest[key] = _metric_points(metric)
        out = [p for points in latest.values() for p in points]
        return [p for p in out if name is None or p.name == name]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        """Poll until ``predicate()`` holds (exports are asynchronous); False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.02)
        return predicate()


def _metric_points(metric: Any) -> list[ReceivedPoint]:
    kind = metric.WhichOneof("data")
    points: list[ReceivedPoint] = []
    data = getattr(metric, kind)
    for dp in data.data_points:
        attributes, _ = _attributes(dp.attributes)
        point = ReceivedPoint(name=metric.name, unit=metric.unit, kind=kind, attributes=attributes)
        if kind == "histogram":
            point.count, point.sum = dp.count, dp.sum
            point.bounds, point.bucket_counts = list(dp.explicit_bounds), list(dp.bucket_counts)
        else:
            which = dp.WhichOneof("value")
            point.value = getattr(dp, which) if which else None
        points.append(point)
    return points


def _make_handler(receiver: OtlpReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms stalls

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet server
            return

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length)
            encoding = (self.headers.get("content-encoding") or "").lower()
            if encoding == "gzip":
                raw = gzip.decompress(raw)
            elif encoding == "deflate":
                raw = zlib.decompress(raw)
            if self.path.startswith("/v1/traces"):
                request = ExportTraceServiceRequest()
                request.ParseFromString(raw)
                receiver.add_traces(request)
                reply = ExportTraceServiceResponse().SerializeToString()
            elif self.path.startswith("/v1/metrics"):
                request = ExportMetricsServiceRequest()
                request.ParseFromString(raw)
                receiver.add_metrics(request)
                reply = ExportMetricsServiceResponse().SerializeToString()
            else:
                self.send_response(404)
                self.send_header("content-length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

    return Handler
