"""``medunlearn registry | promote | rollback``: the registry from the command line.

    medunlearn registry [MODEL] [--json] [--repair]
    medunlearn promote MODEL VERSION --to staging|production --by NAME --why TEXT [--accept REASON]
                       [--allow-regression REASON]
    medunlearn rollback MODEL --stage production --by NAME [--to VERSION] [--why TEXT]
                        [--allow-regression REASON]
    medunlearn reproduce MODEL VERSION [--tolerance T] [--keep] [--json]

A refusal by a registry rule prints one line naming the rule and exits with status 2;
``reproduce`` exits 1 when a metric does not agree. The command line itself is Typer
(``flows/cli.py``); this module holds what the commands do.
Reads the ``registry`` and ``promotion`` sections of ``--params`` (default params.yaml) and
works on the repository that holds it.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from medunlearn.config import load_params, project_root
from medunlearn.revision.privacy import check_project_text
from medunlearn.revision.registry import STAGES, Registry, RegistryError

HEADLINE = (
    "retain_test_acc",
    "retain_test_balanced_acc",
    "forget_train_acc",
    "test_acc",
    "test_balanced_acc",
    "test_accuracy",
    "test_balanced_accuracy",
)


def open_registry(params_path: str) -> Registry:
    params = load_params(params_path)
    section = {**dict(params.get("registry") or {}), **dict(params.get("promotion") or {})}
    return Registry.from_params(section, project_root(params_path))


def listing(registry: Registry, model: str | None = None) -> list[dict[str, Any]]:
    """One row per version: stages, parent, reasons, headline metrics, push and regression."""
    names = [model] if model else registry.models()
    if model and model not in registry.models():
        raise RegistryError(
            f"unknown model '{model}' (registered: {', '.join(registry.models()) or 'none'})"
        )
    rows = []
    for name in names:
        stages = registry.stages(name)
        for version in registry.versions(name):
            record = registry.record(name, version)
            metrics = record.get("metrics") or {}
            membership = metrics.get("membership") or {}
            here = [s for s in STAGES if stages.get(s) == version]
            regressions = registry.regressions(name, version)
            later: dict[str, list[str]] = {}  # request id -> revisions that applied it
            if "production" in here:  # requests applied in a revision that does not serve yet
                mine = {r["id"] for r in record.get("requests", [])}
                for other in registry.versions(name):
                    for r in registry.record(name, other).get("requests", []):
                        if r["id"] not in mine and other not in later.setdefault(r["id"], []):
                            later[r["id"]].append(other)
            waiting = [f"{rid} ({', '.join(vs)})" for rid, vs in later.items()]
            rows.append(
                {
                    "model": name,
                    "version": version,
                    "stages": here,
                    "parent": record.get("parent"),
                    "reasons": [r.get("reason") for r in record.get("requests", [])]
                    or [record.get("kind")],
                    "requests": [r.get("id") for r in record.get("requests", [])],
                    "gates_passed": (record.get("gates") or {}).get("passed"),
                    "caveats": list(record.get("caveats") or []),
                    "metrics": {k: metrics[k] for k in HEADLINE if metrics.get(k) is not None}
                    | ({"mia_auc": membership["auc"]} if membership.get("auc") is not None else {}),
                    "pushed": record.get("pushed"),
                    "push_command": record.get("push_command"),
                    "regression": regressions,
                    "not_yet_served": waiting,
                    "registered_at": record.get("registered_at"),
                }
            )
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="model registry")
    for col in ("model", "version", "stage", "parent", "reason", "metrics", "notes"):
        table.add_column(col)
    for r in rows:
        notes = []
        if not r["pushed"]:
            notes.append(f"unpushed: {r['push_command']}")
        notes += [f"CAVEAT: {c}" for c in r["caveats"]]
        if r["regression"]:
            notes.append("REGRESSION: lacks applied request(s) " + ", ".join(r["regression"]))
        if r["not_yet_served"]:
            notes.append(
                "serving without request(s) applied in later revisions: "
                + ", ".join(r["not_yet_served"])
                + " (promote to serve them)"
            )
        table.add_row(
            r["model"],
            r["version"],
            ", ".join(r["stages"]) or "-",
            r["parent"] or "-",
            ", ".join(str(x) for x in r["reasons"]),
            " ".join(f"{k} {v:.3f}" for k, v in r["metrics"].items()),
            "; ".join(notes),
        )
    Console(width=200 if not sys.stdout.isatty() else None).print(table)


def run(command: str, params_path: str, **kw: Any) -> None:
    """Run one registry command (``registry``, ``promote``, ``rollback``, ``reproduce``);
    a registry rule's refusal prints one line naming it and exits with status 2."""
    try:
        registry = open_registry(params_path)
        if command == "registry":
            if kw.get("repair"):
                did = registry.repair()
                print(f"registry repaired: {did}" if did else "registry consistent: nothing to do")
            elif registry.interrupted() or registry.orphans():
                print(
                    "warning: a killed run left a registry write half done; run "
                    "`medunlearn registry --repair` (the next revise does it too)",
                    file=sys.stderr,
                )
            rows = listing(registry, kw.get("model"))
            if kw.get("as_json"):
                print(json.dumps(rows, indent=2, default=str))
            else:
                print_table(rows)
        elif command == "promote":
            from medunlearn.ledger_cli import rejected_requests

            check_project_text(
                params_path,
                {
                    "--why": kw.get("why"),
                    "--allow-regression": kw.get("allow_regression"),
                    "--accept": kw.get("accept"),
                },
            )

            refused = rejected_requests(params_path, registry.record(kw["model"], kw["version"]))
            if refused:
                raise RegistryError(
                    f"rejected request: {kw['model']} {kw['version']} carries request(s) "
                    f"{', '.join(refused)}, rejected in the ledger; revise without them"
                )
            out = registry.promote(
                kw["model"],
                kw["version"],
                kw["to"],
                kw["by"],
                kw["why"],
                kw.get("allow_regression"),
                kw.get("accept"),
            )
            verb = "already in" if out.get("unchanged") else "promoted to"
            print(f"{kw['model']} {kw['version']} {verb} {kw['to']}")
        elif command == "rollback":
            check_project_text(
                params_path,
                {"--why": kw.get("why"), "--allow-regression": kw.get("allow_regression")},
            )
            out = registry.rollback(
                kw["model"],
                kw["stage"],
                kw.get("to"),
                kw["by"],
                kw["why"],
                kw.get("allow_regression"),
            )
            where = f"; files at {registry.serving_dir}" if out["served"] else ""
            print(f"{kw['model']} {kw['stage']}: {out['from']} -> {out['to']}{where}")
            if out["regression"]:
                print(
                    f"warning: forget regression allowed: {out['to']} lacks applied "
                    f"request(s) {', '.join(out['regression'])} (recorded in the tag); "
                    "`medunlearn registry` flags it",
                    file=sys.stderr,
                )
            elif out.get("lacks"):  # a staging or candidate rollback: not in force yet
                print(
                    f"note: {out['to']} lacks applied request(s) {', '.join(out['lacks'])}; "
                    "promoting it to production needs --allow-regression REASON",
                    file=sys.stderr,
                )
        elif command == "reproduce":
            _reproduce(registry, **kw)
        elif command == "card":
            from medunlearn.revision.audit import read_audit
            from medunlearn.revision.card import card_json, card_markdown

            record = registry.record(kw["model"], kw["version"])
            card = card_json(
                record,
                registry.history(kw["model"], kw["version"]),
                read_audit(registry, kw["model"], kw["version"]),
            )
            print(
                json.dumps(card, indent=2, default=str)
                if kw.get("as_json")
                else card_markdown(card)
            )
        else:
            raise ValueError(f"unknown registry command {command}")
    except RegistryError as exc:
        print(f"{command} refused: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc


def _reproduce(
    registry: Registry,
    model: str,
    version: str,
    tolerance: float = 0.0,
    keep: bool = False,
    as_json: bool = False,
) -> None:
    from medunlearn.revision.reproduce import reproduce

    out = reproduce(registry, model, version, tolerance, keep)
    if as_json:
        print(json.dumps(out, indent=2, default=str))
    else:
        for r in out["rows"]:
            print(
                f"{r['metric']:28s} recorded {r['recorded']!s:22s} reproduced "
                f"{r['reproduced']!s:22s} {'agree' if r['agree'] else 'DIFFER'}"
            )
        print(
            f"{model} {version} ({out['stage']} at {out['commit'][:10]}): "
            f"{'reproduced' if out['agree'] else 'NOT reproduced'} within {tolerance}"
        )
    if not out["agree"]:
        raise SystemExit(1)


def status(params_path: str) -> dict[str, Any]:
    """Where the project stands: per model its stage assignments, newest version and when it
    was registered, its pending forget requests, a half-done registry write, and whether a
    Prefect server is reachable (``PREFECT_API_URL``; without one every command starts a
    temporary server of its own)."""
    import os

    from medunlearn.revision.ledger import active_ledger

    params = load_params(params_path)
    root = project_root(params_path)
    registry = open_registry(params_path)
    ledger = active_ledger(params, root)
    models = []
    for name in registry.models():
        versions = registry.versions(name)
        newest = registry.record(name, versions[-1]) if versions else {}
        pending = []
        if ledger is not None:
            scoped = type(ledger)(ledger.path, model=name)
            pending = [e["id"] for e in scoped.pending()]
        models.append(
            {
                "model": name,
                "stages": registry.stages(name),
                "latest": versions[-1] if versions else None,
                "latest_registered_at": newest.get("registered_at"),
                "pending_requests": pending,
            }
        )
    url = os.environ.get("PREFECT_API_URL")
    server: dict[str, Any] = {"url": url, "reachable": None}
    if url:
        import httpx

        try:
            server["reachable"] = httpx.get(f"{url.rstrip('/')}/health", timeout=3).is_success
        except httpx.HTTPError:
            server["reachable"] = False
    return {
        "project": str(root),
        "models": models,
        "registry_write_half_done": registry.interrupted() or registry.orphans(),
        "serving": registry.served(),
        "prefect_server": server,
    }


def print_status(state: dict[str, Any]) -> None:
    """:func:`status` for a person: one line per model, then the serving folder and server."""
    print(f"project {state['project']}")
    if not state["models"]:
        print("  no registered model yet (medunlearn train registers the first)")
    for m in state["models"]:
        stages = ", ".join(f"{k} {v or '-'}" for k, v in m["stages"].items())
        pending = m["pending_requests"]
        print(
            f"  {m['model']}: {stages}; latest {m['latest']} ({m['latest_registered_at']}); "
            f"{len(pending)} pending request(s)" + (f": {', '.join(pending)}" if pending else "")
        )
    served = state["serving"]
    print(f"  serving: {served['model']} {served['version']}" if served else "  serving: nothing")
    if state["registry_write_half_done"]:
        print("  a killed run left a registry write half done: medunlearn registry --repair")
    server = state["prefect_server"]
    if server["url"] is None:
        print("  Prefect: no PREFECT_API_URL (each command starts a temporary server)")
    else:
        print(
            f"  Prefect: {server['url']} {'reachable' if server['reachable'] else 'NOT reachable'}"
        )
