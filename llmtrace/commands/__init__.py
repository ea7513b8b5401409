"""One module per CLI command; ``llmtrace.cli`` assembles them into the ``llmtrace`` group."""
