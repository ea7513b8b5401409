"""The README cannot drift: its sample outputs are what docs/render_readme.py makes them.

Regenerates every marked text block (and the savings picture) from the seeded demo store and
compares; on a difference, run ``python docs/render_readme.py`` and commit the result.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs"))

import render_readme  # noqa: E402


@pytest.fixture(scope="module")
def workdir() -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp)
        render_readme.make_store(path)
        yield path


def test_readme_samples_are_what_the_commands_print(workdir: Path) -> None:
    readme = render_readme.README.read_text(encoding="utf-8")
    assert readme.count("<!-- render: ") >= 5
    # reprice, the service-tier table and both reconcile samples are real runs too
    for scene in render_readme.SCENES:
        assert f"<!-- render[{scene}]: " in readme
    rendered = render_readme.rendered_readme(readme, workdir)
    assert same(rendered) == same(readme), "README.md is out of date: run docs/render_readme.py"


def same(text: str) -> str:
    """The text with the installed genai-prices version left out (a new release of the price
    data, pinned to <0.3, must not fail this test unless a price it shows changed) and long
    floats cut to 10 significant digits."""
    text = re.sub(r"genai-prices \d+(\.\d+)+", "genai-prices X", text)
    # Floats printed at full precision (JSON samples: a statistic such as cost_cv) may differ in
    # their last digits from run to run, as Polars sums in parallel: compare 10 significant ones.
    return re.sub(r"-?\d+\.\d{10,}", lambda m: f"{float(m.group()):.10g}", text)


def test_the_savings_picture_matches_the_report(workdir: Path) -> None:
    svg = render_readme.DOCS / "audit-savings.svg"
    assert same(render_readme.pictures(workdir)[svg]) == same(svg.read_text(encoding="utf-8")), (
        "docs/audit-savings.svg is out of date: run python docs/render_readme.py"
    )
