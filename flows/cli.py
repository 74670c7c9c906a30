"""The ``medunlearn`` command: one entry point to the pipeline's flows and files.

    medunlearn prepare [--params params.yaml]      # flows.prepare
    medunlearn train [--role retrain --exclude Q]  # flows.train
    medunlearn show models/deployed.pt             # checkpoint metadata
    medunlearn revise --request requests/x.yaml    # flows.maintenance: one model revision
    medunlearn bench benchmarks/<scenario>.yaml    # benchmark suite (medunlearn.benchmark)
    medunlearn registry [MODEL] [--json]           # versions, stages, parents, metrics
    medunlearn promote MODEL VERSION --to staging|production --by NAME --why TEXT
    medunlearn rollback MODEL --stage production [--to VERSION]
    medunlearn request add FILE | list             # the forget ledger (revise: every pending)
    medunlearn reproduce MODEL VERSION             # re-run a revision in a scratch worktree

Flows are imported only by the sub-command that runs them, so ``show`` starts instantly.
"""

from __future__ import annotations

import argparse
import sys


def _show(argv: list[str]) -> None:
    from medunlearn.checkpoint import describe, read_metadata

    parser = argparse.ArgumentParser(
        prog="medunlearn show", description="print checkpoint metadata"
    )
    parser.add_argument("checkpoint", nargs="+")
    for path in parser.parse_args(argv).checkpoint:
        print(describe(read_metadata(path), path))


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {
        "prepare": "flows.prepare",
        "train": "flows.train",
        "revise": "flows.maintenance",
        "bench": "medunlearn.benchmark.cli",
        "show": None,
        "registry": "medunlearn.registry_cli",
        "promote": "medunlearn.registry_cli",
        "rollback": "medunlearn.registry_cli",
        "request": "medunlearn.ledger_cli",
        "reproduce": "medunlearn.registry_cli",
    }
    if not argv or argv[0] not in commands:
        print(__doc__.strip())
        raise SystemExit(0 if argv and argv[0] in ("-h", "--help") else 2)
    command, rest = argv[0], argv[1:]
    if command == "show":
        _show(rest)
        return
    module = __import__(commands[command], fromlist=["main"])
    module.main(argv if module.__name__ == "medunlearn.registry_cli" else rest)


if __name__ == "__main__":
    main()
