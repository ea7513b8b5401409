"""Audit results as metrics, for the *Cost audit* dashboard and Grafana alerts.

``llmtrace audit --push-metrics`` publishes, once per run, every finding's estimated monthly
saving and the run's totals. Findings are the output of a batch job (a nightly audit), so there
are two ways out, each the standard one for its backend:

* **OTLP** (``otlp``, or ``otlp=URL`` for an explicit base endpoint): gauges exported once with
  the SDK's OTLP exporter, configured by the standard ``OTEL_EXPORTER_OTLP_*`` variables like the
  live side. Through the Collector of ``collectors/`` they reach Prometheus by remote write as
  one sample per run, which is why the dashboard reads them with ``last_over_time``.
* **Prometheus Pushgateway** (``pushgateway=URL``): the text exposition format ``PUT`` to
  ``/metrics/job/<service>[/deployment_environment_name/<env>]``. A ``PUT`` replaces the whole
  group, so a finding that is gone from tonight's audit disappears from Prometheus too.

Both paths give Prometheus the same names: the OTel instrument name and unit normalised as the
Collector (and the SDK's Prometheus exporter) does, e.g. ``llmtrace.audit.savings`` in ``USD/mo``
becomes ``llmtrace_audit_savings_USD_per_month``. ``AUDIT_METRICS`` lists them all.

The service and environment come from the standard resource variables (``OTEL_SERVICE_NAME``,
``OTEL_RESOURCE_ATTRIBUTES``) and ``LLMTRACE_ENVIRONMENT`` as on the live side; the service
defaults to ``llmtrace-audit`` and becomes the Pushgateway ``job``.
"""

from __future__ import annotations

import base64
import math
import os
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # the SDK is imported only when pushing: `llmtrace audit` stays fast
    from opentelemetry.sdk.resources import Resource

    from llmtrace.rules.engine import AuditResult

DEFAULT_SERVICE = "llmtrace-audit"
ENVIRONMENT_ENV = "LLMTRACE_ENVIRONMENT"
# Resource attribute -> Prometheus label, as the Collector config of collectors/ promotes them.
ENVIRONMENT_ATTRIBUTE = "deployment.environment.name"
ENVIRONMENT_LABEL = "deployment_environment_name"
# Labels of each finding's saving: what a dashboard groups by and an alert routes on.
FINDING_LABELS = ("rule", "rule_name", "prompt", "model", "service", "severity")


class PushError(Exception):
    """The metrics could not be published (bad target, backend unreachable or refusing)."""


@dataclass(frozen=True)
class AuditMetric:
    """One published metric: OTel instrument name and unit, and the name Prometheus shows."""

    name: str
    unit: str
    description: str
    prometheus: str


SAVINGS = AuditMetric(
    "llmtrace.audit.savings",
    "USD/mo",
    "Estimated monthly saving of one audit finding, in USD per month",
    "llmtrace_audit_savings_USD_per_month",
)
TOTAL_SAVINGS = AuditMetric(
    "llmtrace.audit.total_savings",
    "USD/mo",
    "Estimated monthly saving of all findings of the audit run, in USD per month",
    "llmtrace_audit_total_savings_USD_per_month",
)
FINDINGS = AuditMetric(
    "llmtrace.audit.findings",
    "{finding}",
    "Number of findings of the audit run",
    "llmtrace_audit_findings",
)
CALLS_SCANNED = AuditMetric(
    "llmtrace.audit.calls_scanned",
    "{call}",
    "LLM calls in the audit run's window",
    "llmtrace_audit_calls_scanned",
)
RULE_ERRORS = AuditMetric(
    "llmtrace.audit.rule_errors",
    "{error}",
    "Rules (or rule files) that failed in the audit run; their findings are missing",
    "llmtrace_audit_rule_errors",
)
RUN_TIMESTAMP = AuditMetric(
    "llmtrace.audit.run.timestamp",
    "s",
    "When the audit ran, in seconds since the Unix epoch",
    "llmtrace_audit_run_timestamp_seconds",
)
WINDOW = AuditMetric(
    "llmtrace.audit.window.duration",
    "s",
    "Length of the audited window, in seconds (savings are scaled from it to a month)",
    "llmtrace_audit_window_duration_seconds",
)
AUDIT_METRICS: tuple[AuditMetric, ...] = (
    SAVINGS,
    TOTAL_SAVINGS,
    FINDINGS,
    CALLS_SCANNED,
    RULE_ERRORS,
    RUN_TIMESTAMP,
    WINDOW,
)

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Sample:
    """One value to publish: a metric, its labels (sorted, no empty values) and the value."""

    metric: AuditMetric
    labels: Labels
    value: float


@dataclass(frozen=True)
class PushTarget:
    """Where ``--push-metrics`` sends: ``otlp`` (url: base endpoint or None) or ``pushgateway``."""

    kind: Literal["otlp", "pushgateway"]
    url: str | None = None

    def describe(self) -> str:
        if self.kind == "pushgateway":
            return f"the Pushgateway at {self.url}"
        return f"OTLP {self.url}" if self.url else "OTLP (OTEL_EXPORTER_OTLP_* settings)"


TARGET_HELP = "otlp | otlp=URL | pushgateway=URL"


def parse_target(text: str) -> PushTarget:
    """``otlp``, ``otlp=http://collector:4318`` or ``pushgateway=http://host:9091``.

    The kind is always named: a bare URL could be a Collector or a Pushgateway, and guessing
    wrong would publish nothing without an error.
    """
    kind, sep, url = text.strip().partition("=")
    kind, url = kind.strip().lower(), url.strip()
    if kind not in ("otlp", "pushgateway"):
        raise ValueError(f"expected {TARGET_HELP}, got {text!r}")
    if kind == "otlp" and not sep:
        return PushTarget("otlp")
    if not url:
        raise ValueError(f"{kind}= needs a URL, e.g. {kind}=http://localhost:{_port(kind)}")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"{kind} URL must start with http:// or https://, got {url!r}")
    return PushTarget(kind, url.rstrip("/"))  # type: ignore[arg-type]


def _port(kind: str) -> int:
    return 9091 if kind == "pushgateway" else 4318


# -- samples -------------------------------------------------------------------------------------


def _labels(pairs: Iterable[tuple[str, Any]]) -> Labels:
    """Label pairs without missing values (Prometheus treats an empty label as absent)."""
    return tuple(sorted((k, str(v)) for k, v in pairs if v is not None and str(v) != ""))


def audit_samples(result: AuditResult, *, now: datetime | None = None) -> list[Sample]:
    """The values one audit run publishes.

    Findings with the same labels (the same rule, prompt, model, service and severity, found
    for keys the labels do not show) are summed: one series each, and the total stays right.
    """
    savings: dict[Labels, float] = {}
    for finding in result.findings:
        labels = _labels(
            zip(
                FINDING_LABELS,
                (
                    finding.rule,
                    finding.name,
                    finding.prompt,
                    finding.model,
                    finding.service,
                    finding.severity,
                ),
                strict=True,
            )
        )
        savings[labels] = savings.get(labels, 0.0) + float(finding.monthly_savings_usd)
    ran = (now or datetime.now(UTC)).timestamp()
    window = (result.window.until - result.window.since).total_seconds()
    samples = [Sample(SAVINGS, labels, value) for labels, value in savings.items()]
    samples += [
        Sample(TOTAL_SAVINGS, (), float(result.total_monthly_savings_usd)),
        Sample(FINDINGS, (), float(len(result.findings))),
        Sample(CALLS_SCANNED, (), float(result.calls_scanned)),
        Sample(RULE_ERRORS, (), float(len(result.errors))),
        Sample(RUN_TIMESTAMP, (), ran),
        Sample(WINDOW, (), window),
    ]
    return [s for s in samples if math.isfinite(s.value)]


# -- where: resource -----------------------------------------------------------------------------


def audit_resource(environ: Mapping[str, str] | None = None) -> Resource:
    """The audit job's resource: standard variables, ``llmtrace-audit`` unless a name is set."""
    from opentelemetry.sdk.resources import Resource

    env = os.environ if environ is None else environ
    resource = Resource.create()
    extra: dict[str, str] = {}
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        extra["service.name"] = DEFAULT_SERVICE
    if env.get(ENVIRONMENT_ENV, "").strip():
        extra[ENVIRONMENT_ATTRIBUTE] = env[ENVIRONMENT_ENV].strip()
    return resource.merge(Resource(extra))


# -- Pushgateway ---------------------------------------------------------------------------------


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    return repr(float(value))


def exposition(samples: Sequence[Sample]) -> str:
    """Samples in the Prometheus text format (0.0.4), one family per metric, no timestamps."""
    lines: list[str] = []
    for metric in AUDIT_METRICS:
        family = [s for s in samples if s.metric == metric]
        if not family:
            continue
        lines.append(f"# HELP {metric.prometheus} {_escape_help(metric.description)}")
        lines.append(f"# TYPE {metric.prometheus} gauge")
        for sample in family:
            labels = ",".join(f'{k}="{_escape_label(v)}"' for k, v in sample.labels)
            selector = f"{metric.prometheus}{{{labels}}}" if labels else metric.prometheus
            lines.append(f"{selector} {_number(sample.value)}")
    return "\n".join(lines) + "\n"


def _b64(value: str) -> str:
    return base64.urlsafe_b64encode(value.encode()).decode() or "="


def pushgateway_url(base: str, job: str, grouping: Mapping[str, str]) -> str:
    """The group's URL; values base64-encoded (``@base64``) so ``/`` or empty values are safe."""
    path = f"/metrics/job@base64/{_b64(job)}"
    for label, value in grouping.items():
        path += f"/{label}@base64/{_b64(value)}"
    return base.rstrip("/") + path


def push_pushgateway(
    samples: Sequence[Sample],
    base_url: str,
    *,
    job: str,
    grouping: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> str:
    """``PUT`` the samples as the group (job + grouping labels), replacing its previous run."""
    url = pushgateway_url(base_url, job, grouping or {})
    body = exposition(samples).encode()
    request = urllib.request.Request(
        url,
        data=body,
        method="PUT",
        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace").strip()
        raise PushError(f"the Pushgateway at {base_url} answered {exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise PushError(f"cannot reach the Pushgateway at {base_url}: {reason}") from None
    return url


# -- OTLP ----------------------------------------------------------------------------------------


def metrics_data(samples: Sequence[Sample], resource: Resource) -> Any:
    """The samples as OTel gauges, collected into SDK ``MetricsData`` ready to export."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from llmtrace import __version__

    reader = InMemoryMetricReader()
    provider = MeterProvider(resource=resource, metric_readers=[reader])
    try:
        meter = provider.get_meter("llmtrace.audit", __version__)
        gauges = {
            m: meter.create_gauge(m.name, unit=m.unit, description=m.description)
            for m in AUDIT_METRICS
        }
        for sample in samples:
            gauges[sample.metric].set(sample.value, dict(sample.labels))
        return reader.get_metrics_data()
    finally:
        provider.shutdown()


def push_otlp(samples: Sequence[Sample], resource: Resource, endpoint: str | None) -> None:
    """Export once with the SDK's OTLP exporter (protocol, headers... from ``OTEL_*``)."""
    from opentelemetry.sdk.metrics.export import MetricExportResult

    from llmtrace.otel.exporters import otlp_metric_exporter
    from llmtrace.otel.settings import resolve

    settings = resolve(otlp_endpoint=endpoint, exporters="otlp")
    exporter = otlp_metric_exporter(settings)
    try:
        outcome = exporter.export(metrics_data(samples, resource))
    finally:
        exporter.shutdown()
    if outcome != MetricExportResult.SUCCESS:
        where = endpoint or "the OTEL_EXPORTER_OTLP_* endpoint"
        raise PushError(f"OTLP export to {where} failed (see the exporter's log above)")


# -- entry point ---------------------------------------------------------------------------------


def push_audit_metrics(
    result: AuditResult,
    target: PushTarget | str,
    *,
    resource: Resource | None = None,
    now: datetime | None = None,
    timeout: float = 10.0,
) -> list[Sample]:
    """Publish one audit run's findings and totals; returns what was sent.

    Raises ``PushError`` (or ``ValueError`` for a malformed target string) when nothing could be
    published; the caller decides the exit code.
    """
    if isinstance(target, str):
        target = parse_target(target)
    resource = resource if resource is not None else audit_resource()
    samples = audit_samples(result, now=now)
    if target.kind == "pushgateway":
        assert target.url is not None
        attrs = resource.attributes
        grouping = {}
        if attrs.get(ENVIRONMENT_ATTRIBUTE):
            grouping[ENVIRONMENT_LABEL] = str(attrs[ENVIRONMENT_ATTRIBUTE])
        job = str(attrs.get("service.name") or DEFAULT_SERVICE)
        push_pushgateway(samples, target.url, job=job, grouping=grouping, timeout=timeout)
    else:
        push_otlp(samples, resource, target.url)
    return samples
