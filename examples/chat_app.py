"""A small app with no telemetry code of its own: run it under ``llmtrace run``.

    llmtrace run -- python examples/chat_app.py
    llmtrace costs --since 1h

It makes four LLM calls with the real ``openai`` and ``anthropic`` SDKs: a chat completion and a
streamed one (gpt-4o), a message with extended thinking and a streamed one
(claude-sonnet-4-5). The SDKs read their endpoints from ``OPENAI_BASE_URL`` /
``ANTHROPIC_BASE_URL`` and keys from ``OPENAI_API_KEY`` / ``ANTHROPIC_API_KEY``; the tests point
them at a loopback server. ``--only openai`` or ``--only anthropic`` limits it to one provider.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

SYSTEM = "You are a terse assistant for an online shop. Answer in one sentence."
QUESTION = "Which of our plans includes priority support?"


def ask_openai() -> None:
    import openai

    client = openai.OpenAI(api_key=os.environ.get("OPENAI_API_KEY", "sk-example"))
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]
    reply = client.chat.completions.create(model="gpt-4o", messages=messages)
    print("openai:", reply.choices[0].message.content)
    stream = client.chat.completions.create(
        model="gpt-4o",
        messages=messages,
        stream=True,
        stream_options={"include_usage": True},
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    print("openai (stream):", text)


def ask_anthropic() -> None:
    import anthropic

    client = anthropic.Anthropic(api_key=os.environ.get("ANTHROPIC_API_KEY", "sk-ant-example"))
    request = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 2048,
        "system": [{"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": QUESTION}],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
    }
    message = client.messages.create(**request)
    print("anthropic:", next(b.text for b in message.content if b.type == "text"))
    with client.messages.stream(**request) as stream:
        text = "".join(stream.text_stream)
    print("anthropic (stream):", text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("openai", "anthropic"), default=None)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # model deprecation notices
    if args.only in (None, "openai"):
        ask_openai()
    if args.only in (None, "anthropic"):
        ask_anthropic()
    return 0


if __name__ == "__main__":
    sys.exit(main())
