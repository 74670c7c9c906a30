"""``python -m cli``: the ``medunlearn`` command."""

from cli.main import run

run()
