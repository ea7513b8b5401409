"""The audit: a rule engine over call records and the built-in rules (one module each)."""
