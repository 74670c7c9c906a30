"""The ``medunlearn`` command: the one front door (Typer + rich).

Presentation only: each command parses its declared options, calls one flow
(``flows/``) or one core function (``medunlearn/``), and prints the result as text or, with
``--json``, as JSON. Heavy libraries (torch, Prefect, Great Expectations) are imported inside
the command that needs them, so ``--help`` and ``--version`` answer at once.

    app.py       the Typer application and the options every command shares
    main.py      entry point: settings check, refusals in one line, exit codes
    pipeline.py  prepare, train, revise, drift, serve, bench
    registry.py  show, registry, status, promote, rollback, reproduce, card, audit
    ledger.py    request add | list | reject
    refusal.py   Prefect's log records of a refusal quietened (said once, by the command)

Exit codes: 0 done, 1 refused (bad input, a setting, or a rule that says no, printed in one
line naming the file, row, column, key or rule), 2 usage (Typer's message).
"""
