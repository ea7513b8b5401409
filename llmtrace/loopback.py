"""A loopback LLM provider: answers OpenAI and Anthropic requests in their real response shapes.

``llmtrace demo --live`` starts one so a user without API keys sees live pricing offline
(``llmtrace.demo_live``), and the live tests drive the real ``openai`` and ``anthropic`` SDKs
(and through them the official OpenTelemetry instrumentations and the Anthropic SDK's own
spans) against this server, so the usage numbers that reach llmtrace come through every real
parsing layer. Usage per model is a
table the test can change; the shapes (including ``prompt_tokens_details.cached_tokens``,
``completion_tokens_details.reasoning_tokens``, Anthropic ``cache_creation_input_tokens``,
``cache_read_input_tokens``, ``cache_creation.ephemeral_*`` and
``output_tokens_details.thinking_tokens``, thinking blocks, and SSE streaming for both) follow
the providers' API references and the SDKs' type definitions; the OpenAI Responses API
(``/v1/responses``, plain and streamed) reports the same usage table in its own shape.

Run standalone (``python -m llmtrace.loopback``) it prints its base URL and serves until
killed; the benchmark uses it that way.
"""

from __future__ import annotations

import copy
import itertools
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# Usage the server reports, by model. Numbers are the research notes' real-world shapes.
OPENAI_USAGE: dict[str, dict[str, Any]] = {
    "gpt-4o": {
        "prompt_tokens": 1149,
        "completion_tokens": 50,
        "total_tokens": 1199,
        "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    },
    "o4-mini": {
        "prompt_tokens": 1000,
        "completion_tokens": 228,
        "total_tokens": 1228,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 192, "audio_tokens": 0},
    },
}
# The model id the API answers with for a request alias (the API pins a dated snapshot).
OPENAI_RESPONSE_MODEL = {"gpt-4o": "gpt-4o-2024-08-06", "o4-mini": "o4-mini-2025-04-16"}

ANTHROPIC_USAGE: dict[str, dict[str, Any]] = {
    "claude-sonnet-4-5": {
        "input_tokens": 4,
        "cache_creation_input_tokens": 1163,
        "cache_read_input_tokens": 5000,
        "cache_creation": {"ephemeral_5m_input_tokens": 1163, "ephemeral_1h_input_tokens": 0},
        "output_tokens": 500,
        "output_tokens_details": {"thinking_tokens": 300},
        "service_tier": "standard",
    },
}
ANTHROPIC_RESPONSE_MODEL = {"claude-sonnet-4-5": "claude-sonnet-4-5-20250929"}

DEFAULT_OPENAI = "gpt-4o"
DEFAULT_ANTHROPIC = "claude-sonnet-4-5"


def _served_tier(body: dict[str, Any]) -> str:
    """The tier OpenAI answers with: the one requested, "default" for none or "auto"."""
    requested = body.get("service_tier")
    return "default" if requested in (None, "auto") else str(requested)


class LoopbackProvider:
    """A threaded HTTP server on 127.0.0.1 speaking enough of both APIs for the SDKs.

    ``requests`` keeps every decoded request body (path, body) so tests can check what the app
    sent; ``openai_usage`` / ``anthropic_usage`` are per-instance copies of the usage tables.
    """

    def __init__(self, port: int = 0) -> None:
        self.openai_usage = copy.deepcopy(OPENAI_USAGE)
        self.anthropic_usage = copy.deepcopy(ANTHROPIC_USAGE)
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        handler = _make_handler(self)
        self.server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.url

    def start(self) -> LoopbackProvider:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def next_id(self) -> int:
        with self._lock:
            return next(self._ids)

    # -- OpenAI ---------------------------------------------------------------------------------

    def openai_usage_for(self, model: str) -> dict[str, Any]:
        return copy.deepcopy(self.openai_usage.get(model, self.openai_usage[DEFAULT_OPENAI]))

    def openai_chat(self, body: dict[str, Any]) -> dict[str, Any]:
        model = body.get("model", DEFAULT_OPENAI)
        return {
            "id": f"chatcmpl-loop{self.next_id()}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": OPENAI_RESPONSE_MODEL.get(model, model),
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": "Hello from the loopback.",
                        "refusal": None,
                        "annotations": [],
                    },
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": self.openai_usage_for(model),
            "service_tier": _served_tier(body),
            "system_fingerprint": "fp_loopback",
        }

    def openai_chat_stream(self, body: dict[str, Any]) -> list[str]:
        """SSE data lines; the usage chunk only when ``stream_options.include_usage`` asks."""
        model = body.get("model", DEFAULT_OPENAI)
        base = {
            "id": f"chatcmpl-loop{self.next_id()}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": OPENAI_RESPONSE_MODEL.get(model, model),
            "service_tier": _served_tier(body),
            "system_fingerprint": "fp_loopback",
        }
        pieces = ["Hello", " from", " the loopback."]
        chunks = [
            {
                **base,
                "choices": [
                    {
                        "index": 0,
                        "delta": {"role": "assistant", "content": "", "refusal": None},
                        "logprobs": None,
                        "finish_reason": None,
                    }
                ],
                "usage": None,
            }
        ]
        for piece in pieces:
            chunks.append(
                {
                    **base,
                    "choices": [
                        {
                            "index": 0,
                            "delta": {"content": piece},
                            "logprobs": None,
                            "finish_reason": None,
                        }
                    ],
                    "usage": None,
                }
            )
        chunks.append(
            {
                **base,
                "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}],
                "usage": None,
            }
        )
        if (body.get("stream_options") or {}).get("include_usage"):
            chunks.append({**base, "choices": [], "usage": self.openai_usage_for(model)})
        return [json.dumps(chunk) for chunk in chunks] + ["[DONE]"]

    # -- OpenAI Responses API ---------------------------------------------------------------------

    def openai_responses_usage(self, model: str) -> dict[str, Any]:
        """The chat usage table in the Responses API's shape (``input_tokens_details``...)."""
        usage = self.openai_usage_for(model)
        return {
            "input_tokens": usage["prompt_tokens"],
            "input_tokens_details": {
                "cached_tokens": (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
            },
            "output_tokens": usage["completion_tokens"],
            "output_tokens_details": {
                "reasoning_tokens": (usage.get("completion_tokens_details") or {}).get(
                    "reasoning_tokens", 0
                )
            },
            "total_tokens": usage["total_tokens"],
        }

    def openai_response(self, body: dict[str, Any], status: str = "completed") -> dict[str, Any]:
        """A ``response`` object; ``status`` other than completed (a stream's first events)
        carries no output and no usage, as the API sends it."""
        model = body.get("model", DEFAULT_OPENAI)
        done = status == "completed"
        output: list[dict[str, Any]] = []
        if done:
            if body.get("reasoning"):
                output.append({"id": "rs_loop", "type": "reasoning", "summary": []})
            output.append(
                {
                    "id": "msg_loop_out",
                    "type": "message",
                    "status": "completed",
                    "role": "assistant",
                    "content": [
                        {
                            "type": "output_text",
                            "text": "Hello from the loopback.",
                            "annotations": [],
                        }
                    ],
                }
            )
        return {
            "id": body.get("_id") or f"resp_loop{self.next_id()}",
            "object": "response",
            "created_at": int(time.time()),
            "status": status,
            "model": OPENAI_RESPONSE_MODEL.get(model, model),
            "output": output,
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "reasoning": body.get("reasoning") or {"effort": None, "summary": None},
            "service_tier": "default",
            "text": {"format": {"type": "text"}},
            "usage": self.openai_responses_usage(model) if done else None,
        }

    def openai_response_stream(self, body: dict[str, Any]) -> list[tuple[str, str]]:
        """(event, data) pairs of a streamed Responses API answer, usage in the last one."""
        body = {**body, "_id": f"resp_loop{self.next_id()}"}
        text = "Hello from the loopback."
        events: list[dict[str, Any]] = [
            {"type": "response.created", "response": self.openai_response(body, "in_progress")},
            {"type": "response.in_progress", "response": self.openai_response(body, "in_progress")},
            {
                "type": "response.output_item.added",
                "output_index": 0,
                "item": {
                    "id": "msg_loop_out",
                    "type": "message",
                    "status": "in_progress",
                    "role": "assistant",
                    "content": [],
                },
            },
            {
                "type": "response.content_part.added",
                "item_id": "msg_loop_out",
                "output_index": 0,
                "content_index": 0,
                "part": {"type": "output_text", "text": "", "annotations": []},
            },
            {
                "type": "response.output_text.delta",
                "item_id": "msg_loop_out",
                "output_index": 0,
                "content_index": 0,
                "delta": text,
                "logprobs": [],
            },
            {
                "type": "response.output_text.done",
                "item_id": "msg_loop_out",
                "output_index": 0,
                "content_index": 0,
                "text": text,
                "logprobs": [],
            },
            {"type": "response.completed", "response": self.openai_response(body)},
        ]
        for number, event in enumerate(events):
            event["sequence_number"] = number
        return [(event["type"], json.dumps(event)) for event in events]

    # -- Anthropic ------------------------------------------------------------------------------

    def anthropic_usage_for(self, model: str) -> dict[str, Any]:
        table = self.anthropic_usage
        return copy.deepcopy(table.get(model, table[DEFAULT_ANTHROPIC]))

    def _anthropic_content(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        content: list[dict[str, Any]] = []
        if (body.get("thinking") or {}).get("type") in ("enabled", "adaptive"):
            content.append(
                {"type": "thinking", "thinking": "Let me think.", "signature": "c2lnbmF0dXJl"}
            )
        content.append({"type": "text", "text": "Hello from the loopback.", "citations": None})
        return content

    def anthropic_message(self, body: dict[str, Any]) -> dict[str, Any]:
        model = body.get("model", DEFAULT_ANTHROPIC)
        return {
            "id": f"msg_loop{self.next_id()}",
            "type": "message",
            "role": "assistant",
            "model": ANTHROPIC_RESPONSE_MODEL.get(model, model),
            "content": self._anthropic_content(body),
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": self.anthropic_usage_for(model),
        }

    def anthropic_stream(self, body: dict[str, Any]) -> list[tuple[str, str]]:
        """(event, data) pairs in the order the Messages streaming API sends them."""
        model = body.get("model", DEFAULT_ANTHROPIC)
        usage = self.anthropic_usage_for(model)
        start_usage = {
            "input_tokens": usage["input_tokens"],
            "cache_creation_input_tokens": usage.get("cache_creation_input_tokens"),
            "cache_read_input_tokens": usage.get("cache_read_input_tokens"),
            "cache_creation": usage.get("cache_creation"),
            "output_tokens": 1,
            "service_tier": usage.get("service_tier"),
        }
        message = {
            "id": f"msg_loop{self.next_id()}",
            "type": "message",
            "role": "assistant",
            "model": ANTHROPIC_RESPONSE_MODEL.get(model, model),
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": start_usage,
        }
        events: list[tuple[str, dict[str, Any]]] = [
            ("message_start", {"type": "message_start", "message": message}),
        ]
        for index, block in enumerate(self._anthropic_content(body)):
            if block["type"] == "thinking":
                events += [
                    (
                        "content_block_start",
                        {
                            "type": "content_block_start",
                            "index": index,
                            "content_block": {"type": "thinking", "thinking": "", "signature": ""},
                        },
                    ),
                    (
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": index,
                            "delta": {"type": "thinking_delta", "thinking": block["thinking"]},
                        },
                    ),
                    (
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": index,
                            "delta": {"type": "signature_delta", "signature": block["signature"]},
                        },
                    ),
                ]
            else:
                events += [
                    (
                        "content_block_start",
                        {
                            "type": "content_block_start",
                            "index": index,
                            "content_block": {"type": "text", "text": ""},
                        },
                    ),
                    (
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": index,
                            "delta": {"type": "text_delta", "text": block["text"]},
                        },
                    ),
                ]
            events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
        final_usage = {
            "input_tokens": usage["input_tokens"],
            "cache_creation_input_tokens": usage.get("cache_creation_input_tokens"),
            "cache_read_input_tokens": usage.get("cache_read_input_tokens"),
            "output_tokens": usage["output_tokens"],
            "output_tokens_details": usage.get("output_tokens_details"),
        }
        events += [
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": final_usage,
                },
            ),
            ("message_stop", {"type": "message_stop"}),
        ]
        return [(name, json.dumps(data)) for name, data in events]


def _make_handler(provider: LoopbackProvider) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms stalls

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet server
            return

        def _body(self) -> dict[str, Any]:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b"{}"
            return json.loads(raw or b"{}")

        def _send_json(self, payload: dict[str, Any], status: int = 200) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.send_header("request-id", f"req_loop{provider.next_id()}")
            self.end_headers()
            self.wfile.write(data)

        def _send_sse(self, frames: list[bytes]) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("cache-control", "no-cache")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            for frame in frames:
                self.wfile.write(f"{len(frame):x}\r\n".encode() + frame + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self._body()
            path = self.path.split("?")[0]
            provider.requests.append((path, body))
            if path.endswith("/chat/completions"):
                if body.get("stream"):
                    lines = provider.openai_chat_stream(body)
                    self._send_sse([f"data: {line}\n\n".encode() for line in lines])
                else:
                    self._send_json(provider.openai_chat(body))
            elif path.endswith("/responses"):
                if body.get("stream"):
                    events = provider.openai_response_stream(body)
                    self._send_sse([f"event: {e}\ndata: {d}\n\n".encode() for e, d in events])
                else:
                    self._send_json(provider.openai_response(body))
            elif path.endswith("/messages"):
                if body.get("stream"):
                    events = provider.anthropic_stream(body)
                    self._send_sse([f"event: {e}\ndata: {d}\n\n".encode() for e, d in events])
                else:
                    self._send_json(provider.anthropic_message(body))
            else:
                self._send_json(
                    {"error": {"type": "not_found", "message": f"no route {path}"}}, 404
                )

    return Handler


def main() -> None:
    """Serve until killed, printing the base URL (used by bench/bench_overhead.py)."""
    provider = LoopbackProvider().start()
    print(provider.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        provider.stop()


if __name__ == "__main__":
    main()
