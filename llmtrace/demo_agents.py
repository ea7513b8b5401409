"""The demo's coding-agent workload: Claude Code and Codex transcripts, written as the tools do.

``llmtrace demo`` writes these files under the store (``<store>/demo-transcripts``) and imports
them with ``import claude-code`` / ``import codex``, so the demo shows what a coding agent
costs through the same path a user's own ``~/.claude/projects`` takes, and the files stay
there to be read, or summed by hand, next to llmtrace's totals.

What is in them (deterministic for a seed and end time):

* Claude Code sessions in two projects (``shop``, ``billing``): turns of 3-9 requests that
  read, grep, edit and run commands, each response streamed as several entries; the system
  prompt and tools written to the cache with a 1-hour lifetime on a session's first request,
  the growing history read from the cache and its new tail written with 5 minutes; some
  turns delegate to a Haiku subagent (``<session>/subagents/agent-*.jsonl``).
* Codex rollouts in a third project (``api``): running token totals, a re-emitted count and
  an ``info: null`` first count per turn, as Codex writes them.
* ``LOOP_SESSION``: a planted stuck loop -- the agent runs the same failing test nine times
  and reads the same failure each time (LT503 must find it), and ``NEAR_MISS_SESSION``: a
  test rerun once and a user typing "continue" three times (LT503 must not).
"""

from __future__ import annotations

import json
import os
import random
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

SONNET = "claude-sonnet-4-5-20250929"
OPUS = "claude-opus-4-1-20250805"
HAIKU = "claude-haiku-4-5-20251001"
CODEX_MODEL = "gpt-5-codex"
SYSTEM_TOKENS = 14_200  # Claude Code's system prompt and tool definitions
SUBAGENT_SYSTEM_TOKENS = 6_100
VERSION = "2.1.233"

_PROMPTS = [
    "fix the failing checkout test",
    "add a discount code field to the cart",
    "why is the invoice total off by a cent?",
    "refactor the price rounding into one helper",
    "write tests for the refund flow",
    "update the README with the new env vars",
    "the CSV export drops the last row, fix it",
    "add type hints to orders.py",
]
_TOOLS = [
    ("Read", {"file_path": "src/cart.py"}),
    ("Grep", {"pattern": "round(", "path": "src"}),
    ("Edit", {"file_path": "src/cart.py", "old_string": "x", "new_string": "y"}),
    ("Bash", {"command": "pytest -q"}),
    ("Glob", {"pattern": "tests/**/*.py"}),
]

LOOP_SESSION = "5e55a0b1-0000-4000-8000-00000000100b"
NEAR_MISS_SESSION = "5e55a0b1-0000-4000-8000-0000000000c1"
LOOP_PROJECT = "shop"


def _id(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


class _Session:
    """Writes one Claude Code session: the main file and its subagent files."""

    def __init__(self, root: Path, project: str, sid: str, rng: random.Random, at: datetime):
        self.root, self.project, self.sid, self.rng, self.at = root, project, sid, rng, at
        self.cwd = f"/home/dev/{project}"
        self.lines: list[dict[str, Any]] = []
        self.parent: str | None = None
        self.context = 0  # tokens in the conversation after the system prompt
        self.fresh = True  # the next request writes the system prompt to the cache
        self.pending = 8  # tokens added since the last request (the prompt or a tool result)
        self.requests = 0
        self.model = SONNET

    def _base(self, kind: str, side: bool = False) -> dict[str, Any]:
        entry_id = _id(self.rng)
        entry = {
            "parentUuid": self.parent,
            "isSidechain": side,
            "userType": "external",
            "cwd": self.cwd,
            "sessionId": self.sid,
            "version": VERSION,
            "gitBranch": "main",
            "type": kind,
            "uuid": entry_id,
            "timestamp": _iso(self.at),
        }
        self.parent = entry_id
        return entry

    def prompt(self, text: str) -> None:
        self.at += timedelta(minutes=self.rng.uniform(1, 6))
        entry = self._base("user")
        entry["message"] = {"role": "user", "content": text}
        self.lines.append(entry)
        self.pending += 20 + len(text) // 4

    def request(self, tool: tuple[str, dict[str, Any]] | None, output: int) -> str | None:
        """One streamed response: 2-3 entries, partial output counts on the first ones."""
        self.at += timedelta(seconds=self.rng.uniform(3, 12))
        if self.fresh:
            usage = _usage(
                raw=3,
                write=SYSTEM_TOKENS + self.pending,
                read=0,
                output=output,
                write_1h=SYSTEM_TOKENS,
            )
            self.fresh = False
        else:
            usage = _usage(
                raw=self.rng.randint(1, 9),
                write=self.pending,
                read=SYSTEM_TOKENS + self.context,
                output=output,
            )
        self.context += self.pending + output
        self.pending = 0
        message_id = "msg_01" + uuid.UUID(int=self.rng.getrandbits(128)).hex[:22]
        request_id = "req_011" + uuid.UUID(int=self.rng.getrandbits(128)).hex[:21]
        blocks: list[dict[str, Any]] = [{"type": "text", "text": "..."}]
        tool_id = None
        if tool is not None:
            tool_id = "toolu_01" + uuid.UUID(int=self.rng.getrandbits(128)).hex[:22]
            blocks.append({"type": "tool_use", "id": tool_id, "name": tool[0], "input": tool[1]})
        if self.rng.random() < 0.5:
            blocks.insert(0, {"type": "thinking", "thinking": "", "signature": "demo"})
        for i, block in enumerate(blocks):
            partial = dict(usage)
            if i < len(blocks) - 1:
                partial["output_tokens"] = min(output, 1 + i * 7)
            entry = self._base("assistant")
            entry["requestId"] = request_id
            entry["message"] = {
                "model": self.model,
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "content": [block],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": partial,
            }
            entry["timestamp"] = _iso(self.at + timedelta(milliseconds=40 * i))
            self.lines.append(entry)
        self.requests += 1
        return tool_id

    def result(self, tool_id: str, content: str, tokens: int) -> None:
        self.at += timedelta(seconds=self.rng.uniform(1, 20))
        entry = self._base("user")
        entry["message"] = {
            "role": "user",
            "content": [{"tool_use_id": tool_id, "type": "tool_result", "content": content}],
        }
        entry["toolUseResult"] = {"stdout": content, "stderr": ""}
        self.lines.append(entry)
        self.pending += tokens

    def subagent(self, task_id: str) -> None:
        """A Haiku subagent run in its own file, then its answer as the Task's result."""
        agent_id = uuid.UUID(int=self.rng.getrandbits(128)).hex[:16]
        sub = _Session(self.root, self.project, self.sid, self.rng, self.at)
        sub.context, sub.pending = 0, 60
        entry = sub._base("user", side=True)
        entry["message"] = {"role": "user", "content": "search the code base for the cause"}
        entry["agentId"] = agent_id
        sub.lines.append(entry)
        for step in range(self.rng.randint(3, 6)):
            sub.at += timedelta(seconds=self.rng.uniform(2, 6))
            usage = _usage(
                raw=4,
                write=(SUBAGENT_SYSTEM_TOKENS if step == 0 else 0) + sub.pending,
                read=0 if step == 0 else SUBAGENT_SYSTEM_TOKENS + sub.context,
                output=self.rng.randint(60, 400),
            )
            sub.context += sub.pending + usage["output_tokens"]
            sub.pending = self.rng.randint(300, 2500)
            side = sub._base("assistant", side=True)
            side["agentId"] = agent_id
            side["requestId"] = "req_011" + uuid.UUID(int=self.rng.getrandbits(128)).hex[:21]
            side["message"] = {
                "model": HAIKU,
                "id": "msg_01" + uuid.UUID(int=self.rng.getrandbits(128)).hex[:22],
                "type": "message",
                "role": "assistant",
                "content": [{"type": "text", "text": "..."}],
                "usage": usage,
            }
            sub.lines.append(side)
        folder = self.root / self.project_dir / self.sid / "subagents"
        folder.mkdir(parents=True, exist_ok=True)
        _write(folder / f"agent-{agent_id}.jsonl", sub.lines)
        self.at = sub.at
        self.result(task_id, f"Found it: report {self.rng.getrandbits(32):08x}", 180)

    @property
    def project_dir(self) -> str:
        return "-home-dev-" + self.project

    def save(self) -> None:
        folder = self.root / self.project_dir
        folder.mkdir(parents=True, exist_ok=True)
        _write(folder / f"{self.sid}.jsonl", self.lines)


def _usage(*, raw: int, write: int, read: int, output: int, write_1h: int = 0) -> dict[str, Any]:
    return {
        "input_tokens": raw,
        "cache_creation_input_tokens": write,
        "cache_read_input_tokens": read,
        "output_tokens": output,
        "service_tier": "standard",
        "cache_creation": {
            "ephemeral_5m_input_tokens": write - write_1h,
            "ephemeral_1h_input_tokens": write_1h,
        },
    }


def _write(path: Path, lines: list[dict[str, Any]]) -> None:
    """Write a transcript and date it like the agent would have: last modified at its last
    entry (never later than two minutes ago), so an import does not take a finished demo
    session for one still being written (``import_transcripts``' settle period)."""
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    stamps = [line["timestamp"] for line in lines if isinstance(line.get("timestamp"), str)]
    if stamps:
        last = datetime.fromisoformat(max(stamps).replace("Z", "+00:00")).timestamp()
        when = min(last, time.time() - 120)
        os.utime(path, (when, when))


def _turn(s: _Session, prompt: str) -> None:
    s.prompt(prompt)
    for _ in range(s.rng.randint(3, 8)):
        if s.rng.random() < 0.12:
            task = s.request(("Task", {"description": "investigate", "prompt": prompt}), 150)
            assert task is not None
            s.subagent(task)
            continue
        tool = s.rng.choice(_TOOLS)
        call = s.request(tool, s.rng.randint(80, 700))
        assert call is not None
        s.result(call, f"output of {tool[0]} #{s.rng.getrandbits(32)}", s.rng.randint(200, 3500))
    s.request(None, s.rng.randint(150, 900))


def _loop_session(root: Path, rng: random.Random, at: datetime) -> None:
    """The planted stuck loop: the same failing test, run and read nine times."""
    s = _Session(root, LOOP_PROJECT, LOOP_SESSION, rng, at)
    s.model = OPUS
    s.prompt("make the cart total test pass")
    for tool, output, size in (_TOOLS[0], 300, 24_000), (_TOOLS[2], 500, 1_200):
        call = s.request(tool, output)
        assert call is not None
        s.result(call, f"{tool[0]} done", size)
    failing = ("Bash", {"command": "pytest tests/test_cart.py -q"})
    for _ in range(9):
        call = s.request(failing, 260)
        assert call is not None
        s.result(call, "FAILED tests/test_cart.py::test_total - assert 10.0 == 9.99", 3_800)
    s.request(None, 400)
    s.save()


def _near_miss_session(root: Path, rng: random.Random, at: datetime) -> None:
    """Looks like a loop and is not: one rerun, and "continue" typed three times."""
    s = _Session(root, LOOP_PROJECT, NEAR_MISS_SESSION, rng, at)
    s.prompt("fix the flaky refund test")
    failing = ("Bash", {"command": "pytest tests/test_refund.py -q"})
    for result in ("FAILED test_refund - timeout", "FAILED test_refund - timeout", "1 passed"):
        call = s.request(failing, 240)
        assert call is not None
        s.result(call, result, 700)
    s.request(None, 300)
    for _ in range(3):
        s.prompt("continue")
        call = s.request(_TOOLS[0], 200)
        assert call is not None
        s.result(call, f"file {s.rng.getrandbits(32)}", 600)
        s.request(None, 250)
    s.save()


def _codex_rollouts(root: Path, rng: random.Random, start: datetime, end: datetime, count: int):
    for _ in range(count):
        sid = _id(rng)
        at = start + (end - start) * rng.uniform(0.02, 0.92)
        folder = root / f"{at:%Y}" / f"{at:%m}" / f"{at:%d}"
        folder.mkdir(parents=True, exist_ok=True)
        lines: list[dict[str, Any]] = [
            {
                "timestamp": _iso(at),
                "type": "session_meta",
                "payload": {
                    "id": sid,
                    "timestamp": _iso(at),
                    "cwd": "/home/dev/api",
                    "originator": "codex_cli_rs",
                    "cli_version": "0.58.0",
                },
            },
        ]
        total = dict.fromkeys(
            (
                "input_tokens",
                "cached_input_tokens",
                "output_tokens",
                "reasoning_output_tokens",
                "total_tokens",
            ),
            0,
        )
        context = 9_800
        for turn in range(rng.randint(1, 3)):
            at += timedelta(minutes=rng.uniform(1, 8))
            lines.append(
                {
                    "timestamp": _iso(at),
                    "type": "turn_context",
                    "payload": {
                        "cwd": "/home/dev/api",
                        "model": CODEX_MODEL,
                        "effort": "medium",
                        "summary": "auto",
                    },
                }
            )
            lines.append(
                {
                    "timestamp": _iso(at),
                    "type": "event_msg",
                    "payload": {"type": "user_message", "message": _PROMPTS[turn]},
                }
            )
            lines.append(
                {
                    "timestamp": _iso(at),
                    "type": "event_msg",
                    "payload": {"type": "token_count", "info": None},
                }
            )
            for step in range(rng.randint(2, 6)):
                at += timedelta(seconds=rng.uniform(4, 25))
                call_id = f"call_{rng.getrandbits(48):012x}"
                lines.append(
                    {
                        "timestamp": _iso(at),
                        "type": "response_item",
                        "payload": {
                            "type": "function_call",
                            "name": "shell",
                            "arguments": json.dumps({"command": ["rg", "todo"]}),
                            "call_id": call_id,
                        },
                    }
                )
                lines.append(
                    {
                        "timestamp": _iso(at),
                        "type": "response_item",
                        "payload": {
                            "type": "function_call_output",
                            "call_id": call_id,
                            "output": f"{rng.getrandbits(24)} matches",
                        },
                    }
                )
                reasoning = rng.randint(0, 600)
                last = {
                    "input_tokens": context,
                    "cached_input_tokens": (context - rng.randint(300, 2000)) if step else 0,
                    "output_tokens": rng.randint(60, 500) + reasoning,
                    "reasoning_output_tokens": reasoning,
                }
                last["cached_input_tokens"] = max(0, last["cached_input_tokens"])
                last["total_tokens"] = last["input_tokens"] + last["output_tokens"]
                context += last["output_tokens"] + rng.randint(300, 2500)
                total = {k: total[k] + last[k] for k in total}
                count_line = {
                    "timestamp": _iso(at),
                    "type": "event_msg",
                    "payload": {
                        "type": "token_count",
                        "info": {
                            "total_token_usage": dict(total),
                            "last_token_usage": last,
                            "model_context_window": 272000,
                        },
                    },
                }
                lines.append(count_line)
                if rng.random() < 0.3:  # Codex re-emits an unchanged count
                    lines.append(json.loads(json.dumps(count_line)))
        _write(folder / f"rollout-{at:%Y-%m-%dT%H-%M-%S}-{sid}.jsonl", lines)


def write_transcripts(root: Path, *, end: datetime, days: int, seed: int) -> dict[str, Path]:
    """Write the demo's transcripts under ``root``; returns the folder of each source."""
    rng = random.Random(f"{seed}/{end.isoformat()}/agents")
    claude = root / "claude-code" / "projects"
    codex = root / "codex" / "sessions"
    start = end - timedelta(days=days)
    sessions = max(6, 3 * days)
    for i in range(sessions):
        project = "shop" if i % 3 else "billing"
        at = start + (end - start) * (i + rng.uniform(0.05, 0.6)) / sessions
        s = _Session(claude, project, _id(rng), rng, at)
        for _ in range(rng.randint(1, 4)):
            _turn(s, rng.choice(_PROMPTS))
        s.save()
    recent = end - timedelta(days=min(days, 7) * 0.5)
    _loop_session(claude, rng, recent)
    _near_miss_session(claude, rng, recent + timedelta(hours=2))
    _codex_rollouts(codex, rng, start, end, max(3, days))
    return {"claude-code": claude, "codex": codex}
