"""Thin Prefect tasks, one module per pipeline step; each calls ``medunlearn`` (the core)."""
