"""Render the README's sample outputs and the audit pictures from one seeded demo store.

Every fenced block in README.md preceded by a marker line

    <!-- render: llmtrace costs --by model --since 2026-10-21 --until 2026-11-20 -->

is replaced by what that command prints (``$ command`` on its first line), run against a demo
store made by ``llmtrace demo --end 2026-11-20`` (seed 7): the same calls, the same dates and
the same figures on every machine, because the windows are explicit. ``<!-- render: COLUMNS=150
llmtrace ... -->`` sets the terminal width rich lays the table out for (default 100). The
pictures (docs/audit-report.html, docs/audit-savings.svg) come from the same store with
``SOURCE_DATE_EPOCH`` fixing the report's "generated at". tests/test_readme.py fails when the
README differs from what this produces.

    python docs/render_readme.py            # rewrite README.md and the pictures
    python docs/render_readme.py --check    # exit 1 and show the difference if out of date

docs/cost-overview.png needs Prometheus and matplotlib: docs/render_cost_overview.py.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
README = ROOT / "README.md"
DEMO_END = "2026-11-20"
# 2026-11-20 00:00 UTC: the report's "generated at", so the pictures do not change every run
SOURCE_DATE_EPOCH = "1795132800"
DEFAULT_COLUMNS = 100
MARKER = re.compile(r"^<!-- render: (?P<command>.+?) -->\n```[^\n]*\n.*?^```\n", re.M | re.S)

sys.path.insert(0, str(DOCS))
from render_audit_report import standalone_savings_chart  # noqa: E402


def environment(columns: int) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LLMTRACE_", "OTEL_", "LANGFUSE_", "OPENAI_", "ANTHROPIC_"))
    }
    env.update(
        COLUMNS=str(columns),
        LINES="50",
        TERM="dumb",
        NO_COLOR="1",
        SOURCE_DATE_EPOCH=SOURCE_DATE_EPOCH,
        PYTHONPATH=str(ROOT),
    )
    env.pop("FORCE_COLOR", None)
    return env


def run(words: list[str], workdir: Path, columns: int = DEFAULT_COLUMNS) -> str:
    """``llmtrace WORDS`` in ``workdir`` (whose ./.llmtrace is the demo store): its stdout."""
    done = subprocess.run(
        [sys.executable, "-m", "llmtrace.cli", *words],
        cwd=workdir,
        env=environment(columns),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode not in (0, 1):
        raise SystemExit(f"llmtrace {shlex.join(words)} failed: {done.stderr}")
    return done.stdout


def make_store(workdir: Path) -> None:
    """The seeded demo store every sample reads (./.llmtrace in ``workdir``)."""
    run(["demo", "--end", DEMO_END], workdir)


def block(command: str, workdir: Path) -> str:
    """The fenced block for one marker's command."""
    words = shlex.split(command)
    columns = DEFAULT_COLUMNS
    if words and words[0].startswith("COLUMNS="):
        columns = int(words.pop(0).split("=", 1)[1])
    if not words or words[0] != "llmtrace":
        raise SystemExit(f"a render marker must run llmtrace, not {command!r}")
    output = run(words[1:], workdir, columns)
    lines = [line.rstrip() for line in output.rstrip("\n").splitlines()]
    shown = shlex.join(words)
    return "```\n$ " + shown + "\n" + "\n".join(lines) + "\n```\n"


def rendered_readme(text: str, workdir: Path) -> str:
    """``text`` (the README) with every marked block replaced by its command's output."""

    def replace(match: re.Match[str]) -> str:
        command = match.group("command")
        return f"<!-- render: {command} -->\n" + block(command, workdir)

    return MARKER.sub(replace, text)


def pictures(workdir: Path) -> dict[Path, str]:
    """docs/audit-report.html and docs/audit-savings.svg from the demo store."""
    page = run(["audit", "--until", DEMO_END, "--format", "html"], workdir)
    return {
        DOCS / "audit-report.html": page,
        DOCS / "audit-savings.svg": standalone_savings_chart(page),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if anything is out of date")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        make_store(workdir)
        outputs = {README: rendered_readme(README.read_text(encoding="utf-8"), workdir)}
        outputs.update(pictures(workdir))
    stale = 0
    for path, text in outputs.items():
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if current == text:
            continue
        stale += 1
        if args.check:
            diff = difflib.unified_diff(
                current.splitlines(), text.splitlines(), str(path), "rendered", lineterm=""
            )
            print("\n".join(list(diff)[:80]))
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(ROOT)}")
    if args.check and stale:
        raise SystemExit(f"{stale} file(s) out of date: run python docs/render_readme.py")


if __name__ == "__main__":
    main()
