"""Holds the ``sitecustomize`` module ``llmtrace run`` puts first on PYTHONPATH."""
