"""Thin HTTP handlers, one module per resource of the wire contract."""
