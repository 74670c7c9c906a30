"""The model registry in a temporary git + DVC repository with a local remote.

Revisions here are small files whose bytes the test chose, so "byte-identical" is checked
against those bytes, not against anything the registry computed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from medunlearn.revision.registry import Registry, RegistryError

BIN = Path(sys.executable).parent
PASSED = {"passed": True, "checks": []}


def sh(cwd: Path, *args: str) -> str:
    if args[0] == "dvc":
        args = (sys.executable, "-m", "dvc", *args[1:])
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, f"{args}: {done.stdout[-2000:]} {done.stderr[-2000:]}"
    return done.stdout


def make_repo(tmp: Path, remote: str | None = None) -> Path:
    repo = tmp / "repo"
    repo.mkdir()
    sh(repo, "git", "init", "-q")
    sh(repo, "git", "config", "user.name", "tester")
    sh(repo, "git", "config", "user.email", "tester@localhost")
    sh(repo, "dvc", "init", "-q")
    sh(repo, "dvc", "config", "core.analytics", "false")
    sh(repo, "dvc", "remote", "add", "-d", "local", remote or str(tmp / "remote"))
    (repo / ".gitignore").write_text(
        "/.medunlearn-registry.lock\n/.medunlearn-registry.journal.json\n/models/production/\n/src*/\n/again*/\n"
    )
    params = {
        "registry": {"enabled": True, "model": "classifier", "lock_timeout": 5},
        "promotion": {"auto_staging": True, "serving_dir": "models/production"},
    }
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "project")
    return repo


def source(repo: Path, content: bytes, tag: str = "src") -> Path:
    folder = repo / f"{tag}-{hashlib.sha256(content).hexdigest()[:8]}"
    folder.mkdir()
    (folder / "model.pt").write_bytes(content)
    (folder / "model.onnx").write_bytes(content[::-1])
    return folder


def cli(repo: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        [sys.executable, "-m", "cli", *args, "--params", str(repo / "params.yaml")],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


@pytest.mark.slow
def test_two_revisions_promotion_rollback_and_restore(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    reg = Registry(repo)
    v1 = reg.register("classifier", source(repo, b"A" * 4096), {"gates": PASSED}, "v1.0.0")
    assert v1["version"] == "v1.0.0" and v1["pushed"]
    assert reg.stages("classifier") == {"candidate": "v1.0.0", "staging": None, "production": None}

    # production needs a prior staging assignment (exit 1, the rule named)
    refused = cli(
        repo, "promote", "classifier", "v1.0.0", "--to", "production", "--by", "a", "--why", "x"
    )
    assert refused.returncode == 1 and "no prior staging" in refused.stderr
    unknown = cli(
        repo, "promote", "classifier", "v9.0.0", "--to", "staging", "--by", "a", "--why", "x"
    )
    assert unknown.returncode == 1 and "unknown version" in unknown.stderr
    for stage in ("staging", "production"):
        done = cli(
            repo,
            "promote",
            "classifier",
            "v1.0.0",
            "--to",
            stage,
            "--by",
            "ann",
            "--why",
            "first model",
        )
        assert done.returncode == 0, done.stderr
    assert (repo / "models/production/model.pt").read_bytes() == b"A" * 4096

    request = {"id": "req-consent-1", "reason": "consent_withdrawal", "selector": {}}
    assert reg.next_version("classifier", "minor", "v1.0.0") == "v1.1.0"
    reg.register(
        "classifier",
        source(repo, b"B" * 4096),
        {"gates": PASSED, "parent": "v1.0.0", "requests": [request]},
        "v1.1.0",
        ("candidate", "staging"),
    )
    assert reg.stages("classifier") == {
        "candidate": "v1.1.0",
        "staging": "v1.1.0",
        "production": "v1.0.0",
    }
    # the first revision's files are untouched by the second
    assert (repo / "models/classifier/v1.0.0/model.pt").read_bytes() == b"A" * 4096
    rows = {r["version"]: r for r in json.loads(cli(repo, "registry", "--json").stdout)}
    assert rows["v1.0.0"]["not_yet_served"] == ["req-consent-1 (v1.1.0)"]  # staged only
    assert rows["v1.0.0"]["regression"] == []  # not a regression: it never served
    reg.promote("classifier", "v1.1.0", "production", "bob", "reviewed")
    assert (repo / "models/production/model.pt").read_bytes() == b"B" * 4096

    # rollback: the previous production version, byte-identical files, history kept
    out = cli(
        repo,
        "rollback",
        "classifier",
        "--stage",
        "production",
        "--by",
        "ann",
        "--why",
        "bad calibration",
        "--allow-regression",
        "calibration incident",
    )
    assert out.returncode == 0, out.stderr
    assert (repo / "models/production/model.pt").read_bytes() == b"A" * 4096
    assert (repo / "models/production/model.onnx").read_bytes() == (b"A" * 4096)[::-1]
    rows = json.loads(cli(repo, "registry", "classifier", "--json").stdout)
    by_version = {r["version"]: r for r in rows}
    assert by_version["v1.0.0"]["stages"] == ["production"]
    assert by_version["v1.1.0"]["stages"] == ["candidate", "staging"]
    # v1.0.0 predates a consent withdrawal that served in production: flagged, and a
    # promotion of it to production is refused without --allow-regression
    assert by_version["v1.0.0"]["regression"] == ["req-consent-1"]
    assert by_version["v1.1.0"]["regression"] == []
    reg.rollback("classifier", "production", "v1.1.0", "bob", "fixed")
    refused = cli(
        repo, "promote", "classifier", "v1.0.0", "--to", "production", "--by", "a", "--why", "x"
    )
    assert refused.returncode == 1 and "forget regression" in refused.stderr
    allowed = cli(
        repo,
        "promote",
        "classifier",
        "v1.0.0",
        "--to",
        "production",
        "--by",
        "a",
        "--why",
        "x",
        "--allow-regression",
        "consent revoked in error",
    )
    assert allowed.returncode == 0, allowed.stderr
    history = reg.history("classifier", "v1.1.0")
    assert [h["stage"] for h in history] == [
        "candidate",
        "staging",
        "production",
        "left production",
        "production",
    ]
    assert "bad calibration" in history[3]["why"] and history[3]["by"] == "ann"
    events = [(e.stage, e.version, e.by) for e in reg.events("classifier") if not e.removed]
    assert ("production", "v1.1.0", "bob") in events and events[-1] == ("production", "v1.0.0", "a")

    # a revision whose files no longer match the record cannot be promoted
    (repo / "models/classifier/v1.1.0/model.onnx").write_bytes(b"tampered")
    tampered = cli(
        repo, "promote", "classifier", "v1.1.0", "--to", "staging", "--by", "a", "--why", "x"
    )
    assert tampered.returncode == 1 and "do not match the record" in tampered.stderr

    # a fresh clone gets a revision's files back from the DVC remote
    clone = tmp_path / "clone"
    sh(tmp_path, "git", "clone", "-q", str(repo), str(clone))
    assert not (clone / "models/classifier/v1.1.0/model.pt").exists()
    sh(clone, "dvc", "pull", "models/classifier/v1.1.0.dvc")
    assert (clone / "models/classifier/v1.1.0/model.pt").read_bytes() == b"B" * 4096
    assert sh(clone, "git", "tag", "-l", "classifier@*").split() == [
        "classifier@v1.0.0",
        "classifier@v1.1.0",
    ]


def test_a_revision_whose_gates_failed_is_never_promoted(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    reg = Registry(repo)
    reg.register("classifier", source(repo, b"C"), {"gates": {"passed": False}}, "v1.0.0")
    with pytest.raises(RegistryError, match="gates failed"):
        reg.promote("classifier", "v1.0.0", "staging", "ann", "x")


def test_failed_registration_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    from medunlearn.revision.registry import core as module

    repo = make_repo(tmp_path)
    reg = Registry(repo)
    head = sh(repo, "git", "rev-parse", "HEAD")

    def broken(*args, **kwargs):
        raise RuntimeError("tag store unavailable")

    monkeypatch.setattr(reg, "_tag_register", broken)  # fails after the commit
    folder = source(repo, b"D" * 100)
    with pytest.raises(RuntimeError, match="tag store unavailable"):
        reg.register("classifier", folder, {"gates": PASSED}, "v1.0.0")
    assert sh(repo, "git", "rev-parse", "HEAD") == head
    assert sh(repo, "git", "tag", "-l") == ""
    assert sh(repo, "git", "status", "--porcelain") == ""
    assert not (repo / "models/classifier/v1.0.0").exists() and not folder.exists()
    assert not (repo / "registry/classifier/v1.0.0").exists()
    monkeypatch.setattr(module, "_commit", broken)  # and before it
    with pytest.raises(RuntimeError):
        reg.register("classifier", source(repo, b"E"), {"gates": PASSED}, "v1.0.0")
    assert reg.versions("classifier") == [] and sh(repo, "git", "status", "--porcelain") == ""


def test_unreachable_remote_leaves_the_revision_local_and_marked(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the remote folder should be")
    repo = make_repo(tmp_path, remote=str(blocker / "remote"))
    reg = Registry(repo)
    rec = reg.register("classifier", source(repo, b"F" * 10), {"gates": PASSED}, "v1.0.0")
    assert rec["pushed"] is False
    assert rec["push_command"] == "dvc push models/classifier/v1.0.0.dvc"
    table = cli(repo, "registry")
    assert (
        table.returncode == 0 and "unpushed: dvc push models/classifier/v1.0.0.dvc" in table.stdout
    )


def test_a_second_writer_waits_then_fails_by_name(tmp_path: Path) -> None:
    from filelock import FileLock

    repo = make_repo(tmp_path)
    reg = Registry(repo, lock_timeout=0.3)
    reg_folder = source(repo, b"G")
    held = FileLock(str(repo / ".medunlearn-registry.lock"))
    with held, pytest.raises(RegistryError, match="registry busy"):
        reg.register("classifier", reg_folder, {"gates": PASSED}, "v1.0.0")
    assert reg.versions("classifier") == []


def test_rollback_keeps_the_rules_and_a_failed_tag_keeps_serving(
    tmp_path: Path, monkeypatch
) -> None:
    repo = make_repo(tmp_path)
    reg = Registry(repo)
    reg.register("classifier", source(repo, b"A" * 64), {"gates": PASSED}, "v1.0.0")
    reg.promote("classifier", "v1.0.0", "staging", "ann", "x")
    reg.promote("classifier", "v1.0.0", "production", "ann", "x")
    request = {"id": "req-1", "reason": "consent_withdrawal", "selector": {}}
    reg.register(
        "classifier",
        source(repo, b"B" * 64),
        {"gates": PASSED, "parent": "v1.0.0", "requests": [request]},
        "v1.1.0",
    )
    # a candidate that never served cannot be rolled "back" into production
    out = cli(
        repo, "rollback", "classifier", "--stage", "production", "--to", "v1.1.0", "--by", "ann"
    )
    assert out.returncode == 1 and "never in production" in out.stderr
    reg.promote("classifier", "v1.1.0", "staging", "ann", "x")

    def broken(*args, **kwargs):
        raise RuntimeError("tag store unavailable")

    monkeypatch.setattr(reg, "_assign", broken)
    with pytest.raises(RuntimeError, match="tag store"):
        reg.promote("classifier", "v1.1.0", "production", "ann", "x")
    assert reg.current("classifier", "production") == "v1.0.0"
    assert (repo / "models/production/model.pt").read_bytes() == b"A" * 64
    assert reg.served()["version"] == "v1.0.0"
    monkeypatch.undo()

    reg.promote("classifier", "v1.1.0", "production", "ann", "x")
    served = (repo / "models/production/model.pt").read_bytes()
    # rolling production back past a served consent withdrawal: refused like promote
    # (exit 1, the rule named), nothing served or tagged changes
    refused = cli(repo, "rollback", "classifier", "--stage", "production", "--by", "ann")
    assert refused.returncode == 1, refused.stderr
    assert "forget regression" in refused.stderr and "req-1" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert (repo / "models/production/model.pt").read_bytes() == served
    assert reg.current("classifier", "production") == "v1.1.0"
    # --by is required (no silent OS user): a usage error
    no_by = cli(repo, "rollback", "classifier", "--stage", "production")
    plain = re.sub(r"\x1b\[[0-9;]*m", "", no_by.stderr)  # rich may colour the message
    assert no_by.returncode == 2 and "Missing option '--by'" in plain, plain
    back = cli(
        repo,
        "rollback",
        "classifier",
        "--stage",
        "production",
        "--by",
        "ann",
        "--allow-regression",
        "incident 42",
    )
    assert back.returncode == 0, back.stderr
    assert "forget regression allowed" in back.stderr and "req-1" in back.stderr
    assert (repo / "models/production/model.pt").read_bytes() == b"A" * 64
    tags = subprocess.run(
        ["git", "-C", str(repo), "tag", "-n99", "--list", "classifier#production*"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "regression allowed: incident 42" in tags and "req-1" in tags, tags


def test_importing_gto_leaves_the_process_logging_handlers_open() -> None:
    """GTO's import runs ``logging.config.dictConfig``, which closes every handler in the
    process (inside a Prefect flow run that deadlocked on Prefect's API log handler).
    ``gto_api`` must import it without touching a handler installed before."""
    script = """
import logging, logging.config
closed = []
class Probe(logging.Handler):
    def emit(self, record): pass
    def close(self):
        closed.append(True)
        super().close()
logging.getLogger().addHandler(Probe())
configure = logging.config.dictConfig
from medunlearn.revision.registry import gto_api
api = gto_api()
assert hasattr(api, "register") and hasattr(api, "assign")
assert logging.config.dictConfig is configure, "dictConfig not restored"
print("closed" if closed else "open")
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.strip() == "open"
    plain = subprocess.run(  # the hazard is real: a plain import closes the handler
        [
            sys.executable,
            "-c",
            script.replace(
                "from medunlearn.revision.registry import gto_api\napi = gto_api()",
                "from gto import api",
            ),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert plain.stdout.strip() == "closed"


def test_a_params_file_in_a_subfolder_belongs_to_the_repository_above(tmp_path: Path) -> None:
    """`--params examples/ham.params.yaml` must find the repository it is run in (it found
    none in examples/ and left the HAM10000 revision unregistered)."""
    from medunlearn.config import project_root

    (tmp_path / "repo" / "examples").mkdir(parents=True)
    (tmp_path / "repo" / ".git").mkdir()
    (tmp_path / "repo" / ".dvc").mkdir()
    (tmp_path / "plain").mkdir()
    (tmp_path / "dotfiles" / "proj").mkdir(parents=True)  # a git repo that is no project
    (tmp_path / "dotfiles" / ".git").mkdir()
    assert project_root(tmp_path / "repo" / "examples" / "p.yaml") == (tmp_path / "repo").resolve()
    assert project_root(tmp_path / "repo" / "params.yaml") == (tmp_path / "repo").resolve()
    assert project_root(tmp_path / "plain" / "params.yaml") == (tmp_path / "plain").resolve()
    proj = (tmp_path / "dotfiles" / "proj").resolve()
    assert project_root(proj / "params.yaml") == proj


def test_listing_names_each_unserved_request_once_with_its_revisions() -> None:
    from medunlearn.revision.actions import listing

    class FakeRegistry:  # the five calls listing() makes, nothing else
        records = {
            "v1.0.0": {"kind": "trained", "metrics": {"test_balanced_accuracy": 0.9}},
            "v1.1.0": {"requests": [{"id": "req-a", "reason": "class_retirement"}]},
            "v1.2.0": {
                "requests": [
                    {"id": "req-a", "reason": "class_retirement"},
                    {"id": "req-b", "reason": "consent_withdrawal"},
                ]
            },
        }

        def models(self):
            return ["classifier"]

        def stages(self, name):
            return {"production": "v1.0.0", "candidate": "v1.2.0"}

        def versions(self, name):
            return list(self.records)

        def record(self, name, version):
            return self.records[version]

        def regressions(self, name, version):
            return []

    rows = {r["version"]: r for r in listing(FakeRegistry())}
    assert rows["v1.0.0"]["not_yet_served"] == ["req-a (v1.1.0, v1.2.0)", "req-b (v1.2.0)"]
    assert rows["v1.0.0"]["metrics"] == {"test_balanced_accuracy": 0.9}


def test_a_card_names_its_version_or_says_unregistered() -> None:
    from medunlearn.revision.card import card_json, card_markdown

    record = {"model": "classifier", "version": "v1.2.0", "kind": "unlearned"}
    assert card_markdown(card_json(record)).splitlines()[0] == (
        "# Revision card: classifier v1.2.0"
    )
    unregistered = card_markdown(card_json({**record, "version": None}))  # registry off
    assert unregistered.splitlines()[0] == "# Revision card: classifier (unregistered)"


def test_an_older_version_can_take_a_stage_back(tmp_path: Path) -> None:
    """v1.0.0 staging, v1.1.0 staging, v1.0.0 staging again: GTO still counted v1.0.0 in
    staging and refused ("already in stage", a traceback through the CLI); the latest
    assignment is what the registry serves, so the third promotion goes through."""
    repo = make_repo(tmp_path)
    reg = Registry(repo)
    for i, version in enumerate(("v1.0.0", "v1.1.0")):
        reg.register("classifier", source(repo, bytes([i]) * 64), {"gates": PASSED}, version)
    for version in ("v1.0.0", "v1.1.0"):
        reg.promote("classifier", version, "staging", "tester", "review")
    assert reg.current("classifier", "staging") == "v1.1.0"
    done = cli(
        repo, "promote", "classifier", "v1.0.0", "--to", "staging", "--by", "t", "--why", "back"
    )
    assert done.returncode == 0, done.stderr
    assert reg.current("classifier", "staging") == "v1.0.0"


def test_registering_the_same_revision_again_still_runs_the_commit_hook(tmp_path: Path) -> None:
    """Same bytes, parent and requests: the existing version is returned, and the caller's
    hook (the ledger's "applied in") still runs with that version and is committed."""
    repo = make_repo(tmp_path)
    reg = Registry(repo)
    content = b"\x01" * 64
    reg.register("classifier", source(repo, content), {"gates": PASSED}, "v1.0.0")
    marker = repo / "ledger.txt"
    seen = []

    def hook(version: str) -> list[Path]:
        seen.append(version)
        marker.write_text(f"applied in {version}\n")
        return [marker]

    again = reg.register(
        "classifier",
        source(repo, content, "again"),
        {"gates": PASSED},
        "v1.1.0",
        before_commit=hook,
    )
    assert again["existing"] and again["version"] == "v1.0.0" and seen == ["v1.0.0"]
    assert reg.versions("classifier") == ["v1.0.0"]
    assert sh(repo, "git", "status", "--porcelain", "--", "ledger.txt") == ""  # committed
    assert sh(repo, "git", "show", "HEAD:ledger.txt") == "applied in v1.0.0\n"


def test_a_pass_with_caveats_needs_accept_for_production(tmp_path: Path) -> None:
    """The card, the listing and the promotion rule say what a pass cannot show; the
    acceptance is recorded with the promotion."""
    repo = make_repo(tmp_path)
    reg = Registry(repo)
    caveat = "not discriminating: the deployed model passes the consent_withdrawal profile too"
    record = {"gates": PASSED, "kind": "unlearned", "caveats": [caveat]}
    reg.register("classifier", source(repo, b"weak"), record, "v1.0.0")
    shown = cli(repo, "card", "classifier", "v1.0.0")  # `medunlearn card`
    assert shown.returncode == 0, shown.stderr
    assert f"- {caveat}" in shown.stdout and "`--accept REASON`" in shown.stdout
    listing = cli(repo, "registry", "--json")
    assert listing.returncode == 0, listing.stderr
    assert json.loads(listing.stdout)[0]["caveats"] == [caveat]
    table = cli(repo, "registry")
    assert "CAVEAT: not discriminating" in table.stdout

    reg.promote("classifier", "v1.0.0", "staging", "ann", "review")  # staging: no rule
    to_production = ("promote", "classifier", "v1.0.0", "--to", "production", "--by", "ann")
    refused = cli(repo, *to_production, "--why", "ship")
    assert refused.returncode == 1 and "weak evidence" in refused.stderr + refused.stdout
    with pytest.raises(RegistryError, match="weak evidence"):  # a blank reason is no reason
        reg.promote("classifier", "v1.0.0", "production", "ann", "ship", accept="   ")
    assert reg.current("classifier", "production") is None
    ticket = "privacy officer signed off (ticket 12)"
    accepted = cli(repo, *to_production, "--why", "ship", "--accept", ticket)
    assert accepted.returncode == 0, accepted.stderr
    assert reg.current("classifier", "production") == "v1.0.0"
    why = [e.why for e in reg.events("classifier") if e.stage == "production"]
    assert any("caveats accepted: privacy officer signed off (ticket 12)" in w for w in why)
    # an --accept given where nothing needed accepting is recorded too, never dropped
    reg.register("classifier", source(repo, b"strong"), {"gates": PASSED}, "v1.1.0")
    reg.promote("classifier", "v1.1.0", "staging", "ann", "review", accept="ticket 13")
    staged = [
        e.why for e in reg.events("classifier") if e.version == "v1.1.0" and e.stage == "staging"
    ]
    assert staged == ["review (accepted, no caveats: ticket 13)"]


KILLER = """
import os, signal, sys
from pathlib import Path
import medunlearn.revision.registry as R
import medunlearn.revision.registry.core

repo, point, action = Path(sys.argv[1]), sys.argv[2], sys.argv[3]

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

def after(owner, name, calls=1):
    original = getattr(owner, name)
    seen = []
    def wrapped(*args, **kwargs):
        out = original(*args, **kwargs)
        seen.append(1)
        if len(seen) >= calls:
            die()
        return out
    setattr(owner, name, wrapped)

if point == "files":      # moved into place, nothing else
    R.core.artifact_hashes = die
elif point == "dvc-add":  # between dvc add and the commit (push not yet done)
    after(R.Registry, "_dvc_add")
elif point == "push":     # during dvc push
    R.Registry._dvc_push = die
elif point == "record":   # record written, commit not made
    R.core._commit = die
elif point == "commit":   # committed, no register tag
    R.Registry._tag_register = die
elif point == "tag":      # tagged, no stage
    R.Registry._assign = die
elif point == "stage":    # one of two stages assigned
    after(R.Registry, "_assign")
elif point == "serve":    # production files swapped, stage tag not written
    after(R.Registry, "materialise")
elif point == "unassigned":  # a rollback's old version unassigned, the new one not yet
    R.Registry._assign = die
reg = R.Registry(repo)
if action == "register":
    folder = repo / "src-killed"
    folder.mkdir()
    (folder / "model.pt").write_bytes(b"B" * 64)
    (folder / "model.onnx").write_bytes(b"b" * 64)
    entry = None
    if point == "record":  # as the flow does: the ledger marked applied before the commit
        from medunlearn.revision.ledger import Ledger
        from medunlearn.data.request import ForgetRequest
        book = Ledger(repo / "ledger" / "requests.jsonl")
        request_id = book.add(ForgetRequest("device_deprecation", {"devices": ["x"]}))["id"]
        book.set_status([request_id], "applied in v1.1.0")
        entry = (book.path, request_id)
    reg.register("classifier", folder, {"gates": {"passed": True}}, "v1.1.0",
                 ("candidate", "staging"), ledger_entry=entry)
elif action == "promote":
    reg.promote("classifier", "v1.1.0", "production", "ann", "x")
else:
    reg.rollback("classifier", "production", "v1.0.0", "ann", "x")
print("not killed")
"""


@pytest.mark.parametrize(
    ("point", "action"),
    [
        ("files", "register"),
        ("dvc-add", "register"),
        ("push", "register"),
        ("record", "register"),
        ("commit", "register"),
        ("tag", "register"),
        ("stage", "register"),
        ("serve", "promote"),
        ("serve", "rollback"),
        ("unassigned", "rollback"),  # production briefly has no version: never left empty
    ],
)
def test_a_kill_at_any_step_of_a_registry_write_is_repaired(tmp_path, point, action) -> None:
    """SIGKILL at each step boundary of a registration, promotion or rollback (issue 27):
    production stays byte-identical, the next registry write (here ``repair``) leaves the
    registry consistent with its git tags and commits (no folder, record or stage of a
    half-made version), and running the write again completes it."""
    repo = make_repo(tmp_path)
    reg = Registry(repo)
    reg.register("classifier", source(repo, b"A" * 64), {"gates": PASSED}, "v1.0.0")
    reg.promote("classifier", "v1.0.0", "staging", "ann", "x")
    reg.promote("classifier", "v1.0.0", "production", "ann", "x")
    if action != "register":
        reg.register(
            "classifier",
            source(repo, b"B" * 64),
            {"gates": PASSED},
            "v1.1.0",
            ("candidate", "staging"),
        )
    if action == "rollback":
        reg.promote("classifier", "v1.1.0", "production", "ann", "x")
    served = (repo / "models/production/model.pt").read_bytes()
    killed = subprocess.run(
        [sys.executable, "-c", KILLER, str(repo), point, action],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert killed.returncode == -9, killed.stdout + killed.stderr[-2000:]
    assert (repo / ".medunlearn-registry.journal.json").is_file()  # the write was cut

    did = Registry(repo).repair()
    assert did, "a journal was left: repair must say what it did"
    if point == "record":  # undone: the request it would have applied is pending again
        from medunlearn.revision.ledger import Ledger

        (entry,) = Ledger(repo / "ledger" / "requests.jsonl").entries()
        assert entry["status"] == "pending"
    reg = Registry(repo)
    assert not (repo / ".medunlearn-registry.journal.json").exists()
    # production byte-identical to what its stage tag says, before the write or after it
    production = reg.current("classifier", "production")
    assert reg.served()["version"] == production
    expected = {"v1.0.0": b"A" * 64, "v1.1.0": b"B" * 64}[production]
    assert (repo / "models/production/model.pt").read_bytes() == expected
    if action != "register":
        assert (repo / "models/production/model.pt").read_bytes() == served
    # consistent: every version on disk is committed and tagged, and nothing else is there
    tags = sh(repo, "git", "tag", "-l", "classifier@*").split()
    committed = [
        v
        for v in reg.versions("classifier")
        if subprocess.run(
            ["git", "cat-file", "-e", f"HEAD:registry/classifier/{v}/revision.json"],
            cwd=repo,
        ).returncode
        == 0
    ]
    assert (
        sorted(tags)
        == [f"classifier@{v}" for v in committed]
        == [f"classifier@{v}" for v in reg.versions("classifier")]
    )
    if "v1.1.0" not in committed:
        assert not (repo / "models/classifier/v1.1.0").exists()
        assert not (repo / "models/classifier/v1.1.0.dvc").exists()
    untracked = sh(repo, "git", "status", "--porcelain", "--untracked-files=all")
    assert "models/classifier" not in untracked and "registry/" not in untracked, untracked
    # the write, run again, completes
    if action == "register":
        folder = source(repo, b"B" * 64, tag="again")
        reg.register("classifier", folder, {"gates": PASSED}, "v1.1.0", ("candidate", "staging"))
        stages = reg.stages("classifier")
        assert stages["candidate"] == stages["staging"] == "v1.1.0"
    elif action == "promote":
        reg.promote("classifier", "v1.1.0", "production", "ann", "x")
        assert (repo / "models/production/model.pt").read_bytes() == b"B" * 64
    else:
        reg.rollback("classifier", "production", "v1.0.0", "ann", "x")
        assert (repo / "models/production/model.pt").read_bytes() == b"A" * 64
    assert reg.served()["version"] == reg.current("classifier", "production")


def test_a_version_without_an_onnx_file_is_never_served(tmp_path: Path) -> None:
    """Serving always holds an ONNX file: promoting (or rolling back to) a version registered
    without one is refused before anything moves."""
    repo = make_repo(tmp_path)
    reg = Registry(repo)
    reg.register("classifier", source(repo, b"A" * 64), {"gates": PASSED}, "v1.0.0")
    for stage in ("staging", "production"):
        reg.promote("classifier", "v1.0.0", stage, "ann", "first model")
    bare = repo / "src-bare"
    bare.mkdir()
    (bare / "model.pt").write_bytes(b"B" * 64)
    reg.register("classifier", bare, {"gates": PASSED}, "v1.1.0", stages=("staging",))
    served = {p.name: p.read_bytes() for p in (repo / "models/production").iterdir()}
    with pytest.raises(RegistryError, match=r"v1.1.0 has no model.onnx"):
        reg.promote("classifier", "v1.1.0", "production", "ann", "try")
    assert {p.name: p.read_bytes() for p in (repo / "models/production").iterdir()} == served
    assert reg.stages("classifier")["production"] == "v1.0.0"
    assert not reg.interrupted()
    # a second model may not take over the first one's serving folder (issue 27 review)
    reg.register("retina", source(repo, b"R" * 64), {"gates": PASSED}, "v1.0.0")
    reg.promote("retina", "v1.0.0", "staging", "ann", "first model")
    with pytest.raises(RegistryError, match="serves classifier v1.0.0: one serving folder"):
        reg.promote("retina", "v1.0.0", "production", "ann", "first model")
    assert {p.name: p.read_bytes() for p in (repo / "models/production").iterdir()} == served
    assert reg.stages("retina")["production"] is None
    # `medunlearn status`: where each model stands, read from the same registry
    state = json.loads(cli(repo, "status", "--json").stdout)
    by_model = {m["model"]: m for m in state["models"]}
    assert by_model["classifier"]["stages"] == {
        "candidate": "v1.0.0",  # v1.1.0 was registered straight to staging
        "staging": "v1.1.0",
        "production": "v1.0.0",
    }
    assert by_model["retina"]["latest"] == "v1.0.0"
    assert state["serving"] == {"model": "classifier", "version": "v1.0.0"}
    assert state["registry_write_half_done"] is False


def test_repair_removes_what_a_killed_run_staged_and_nothing_live(tmp_path: Path) -> None:
    """Issue 27 review: a kill during the export left ``models/.revision-*`` that nothing
    removed. Staging folders carry their process id: a dead process's go, a live one's
    (a run exporting now) stay."""
    import subprocess

    repo = make_repo(tmp_path)
    reg = Registry(repo)
    dead = subprocess.Popen(["true"])  # a pid that has exited
    dead.wait()
    folders = {
        "dead": repo / "models" / f".revision-{dead.pid}-abc",
        "live": repo / "models" / f".revision-{os.getpid()}-xyz",
        "serving": repo / "models" / f".serving-old-{dead.pid}-q",
        "record": repo / "registry" / "classifier" / f".record-{dead.pid}-r",
        "other": repo / "models" / "classifier",  # not a staging folder
    }
    for folder in folders.values():
        folder.mkdir(parents=True)
        (folder / "model.pt").write_bytes(b"x")
    assert reg.orphans() and not reg.interrupted()
    said = reg.repair()
    assert said is not None and f".revision-{dead.pid}-abc" in said
    assert [k for k, f in folders.items() if f.exists()] == ["live", "other"]
    assert reg.repair() is None  # only the live run's folder is left: nothing to do
