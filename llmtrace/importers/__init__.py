"""Importers: each turns one kind of source into call-record batches."""
