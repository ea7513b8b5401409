"""The loopback provider moved into the package (``llmtrace.loopback``: ``llmtrace demo --live``
uses it too); this name stays for tests and scripts that import it from here."""

from llmtrace.loopback import *  # noqa: F403
from llmtrace.loopback import LoopbackProvider, main

__all__ = ["LoopbackProvider", "main"]

if __name__ == "__main__":
    main()
