"""``llmtrace import``: one verb, one subcommand per source, each loaded only when it runs.

Adding a source is one line in ``IMPORTERS`` (``llmtrace.commands.lazy``).
"""

from __future__ import annotations

import click

from llmtrace.commands.lazy import Entry, LazyGroup

IMPORTERS: dict[str, Entry] = {
    "otlp": Entry(
        "llmtrace.commands.importing:otlp_command",
        "Import LLM calls from OTLP trace files: JSON lines, JSON, protobuf, .gz, directories.",
    ),
    "langfuse": Entry(
        "llmtrace.commands.import_langfuse:langfuse_command",
        "Import generations and embeddings from Langfuse, with their scores and prompt versions.",
    ),
    "claude-code": Entry(
        "llmtrace.commands.import_agents:claude_code_command",
        "Import Claude Code sessions (default ~/.claude/projects): one call per model request.",
    ),
    "codex": Entry(
        "llmtrace.commands.import_agents:codex_command",
        "Import OpenAI Codex CLI rollouts (default ~/.codex/sessions): one call per request.",
    ),
}


@click.group("import", cls=LazyGroup, lazy=IMPORTERS)
def import_group() -> None:
    """Import LLM calls from telemetry files or services into the store.

    \b
    Example:
      llmtrace import otlp traces.jsonl && llmtrace costs --by model
    """
