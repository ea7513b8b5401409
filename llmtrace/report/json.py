"""JSON report: one object a CI job or a dashboard can read without parsing text.

Shape: ``{"findings": [...], "total_monthly_savings_usd", "window", "rules", "errors",
"calls_scanned", "coverage"}`` with each finding as ``Finding.to_dict()``. Non-finite numbers (an infinite
ratio when the baseline had no reasoning) become ``null`` so the output is strict JSON.
"""

from __future__ import annotations

import json
import math
from typing import Any

from llmtrace.rules.engine import AuditResult


def _finite(value: Any) -> Any:
    """Replace NaN/inf anywhere in a JSON tree with None (json.dumps would write NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def as_dict(result: AuditResult) -> dict[str, Any]:
    """The report as plain data."""
    return _finite(
        {
            "findings": [finding.to_dict() for finding in result.findings],
            "total_monthly_savings_usd": round(result.total_monthly_savings_usd, 4),
            "window": result.window.to_dict(),
            "rules": list(result.rules_run),
            "errors": [error.to_dict() for error in result.errors],
            "calls_scanned": result.calls_scanned,
            "coverage": result.coverage.to_dict(),
        }
    )


def render(result: AuditResult) -> str:
    """The report as indented, strict JSON (dates and other objects as strings)."""
    return json.dumps(as_dict(result), indent=2, allow_nan=False, default=str) + "\n"
