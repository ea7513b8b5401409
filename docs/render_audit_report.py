"""Render docs/audit-report.html and docs/audit-savings.svg from the demo workload.

The HTML page is ``llmtrace audit --format html`` on a fresh demo store; the SVG is that page's
savings chart as a standalone image, so the README can show the picture inline.

    python docs/render_audit_report.py            # -> docs/audit-report.html, docs/audit-savings.svg
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

DOCS = Path(__file__).resolve().parent
SVG_NAMESPACE = "http://www.w3.org/2000/svg"


def llmtrace(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "llmtrace.cli", *args], check=True)


def standalone_savings_chart(page: str) -> str:
    """The page's first SVG (the savings chart) with the namespace a file needs on its own
    (inline SVG in HTML5 does without it)."""
    found = re.search(r"<svg\b.*?</svg>", page, re.S)
    if found is None:
        raise SystemExit("the report has no savings chart (no findings?)")
    chart = found.group(0).replace("<svg ", f'<svg xmlns="{SVG_NAMESPACE}" ', 1)
    style = "<style>text{font-family:system-ui,sans-serif;font-size:12px;fill:#212121}</style>"
    background = '<rect width="100%" height="100%" fill="#fff"/>'
    return re.sub(r"(</title>)", r"\1" + style + background, chart, count=1) + "\n"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = str(Path(tmp) / "store")
        llmtrace("demo", "--store", store)
        page_path = DOCS / "audit-report.html"
        llmtrace("audit", "--store", store, "--format", "html", "-o", str(page_path))
    page = page_path.read_text(encoding="utf-8")
    (DOCS / "audit-savings.svg").write_text(standalone_savings_chart(page), encoding="utf-8")
    print(f"wrote {page_path} and {DOCS / 'audit-savings.svg'}")


if __name__ == "__main__":
    main()
