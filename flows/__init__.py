"""Prefect flows composing the tasks; each reads its own section of ``params.yaml``."""
