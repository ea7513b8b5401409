"""Loopback servers for the live-side tests: an LLM provider and an OTLP/HTTP receiver."""
