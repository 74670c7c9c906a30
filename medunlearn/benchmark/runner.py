"""Run every unlearning method on one scenario, measured the same way, against retraining.

Protocol (also in BENCHMARKS.md): train (or load from the model bank) the deployed model,
the retrain reference (retain-train only, seed ``reference_seed``, timed) and
``reference_models`` more retrains (seeds ``reference_seed + 1...``). For each method, run
every point of its tuning grid with seed 0 and score it by the **tuning gap** on the
validation split: mean |difference| to the reference, in points, of forget-train,
retain-train and retain-val accuracy and of the rank-AUC membership attack against matched
held-out *validation* rows; keep the best point, run it with every seed, and report the
test metrics of those runs (held-out pool: val + test, as in a revision). Every run is also
audited with offline LiRA against the extra retrains (``medunlearn.evidence.audit``). The extra
retrains' own Avg Gap to the reference is the noise floor. Finally the scenario's gate
profile is calibrated on them (``medunlearn.benchmark.calibration``). Wall time and peak
memory are measured around each method call.
"""

from __future__ import annotations

import contextlib
import copy
import json
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from scipy.stats import spearmanr
from tqdm.auto import tqdm

from medunlearn.benchmark.calibration import calibrate_gates
from medunlearn.benchmark.runcache import RunCache, core_code_hash
from medunlearn.benchmark.scenario import Scenario, merge_settings
from medunlearn.data.dataset import DatasetSplits, materialise, open_splits
from medunlearn.data.manifest import hash_identifier, identifier_salt, set_identifier_salt
from medunlearn.data.request import IDENTIFIER_KEYS, Cohorts, build_cohorts
from medunlearn.data.sources import load_source
from medunlearn.evidence.audit import logit_confidence, offline_lira, reference_statistics
from medunlearn.evidence.gates import resolve_bounds
from medunlearn.evidence.membership import choose_pool
from medunlearn.evidence.metrics import evidence_sets, unlearning_metrics
from medunlearn.models.bank import ModelBank
from medunlearn.models.inference import LogitCache
from medunlearn.unlearn.methods import METHODS, Diverged, run_method

SUMMARY_KEYS = (
    "forget_train_acc",
    "forget_heldout_acc",
    "forget_test_acc",
    "retain_test_acc",
    "retain_test_balanced_acc",
    "worst_class_recall",
    "test_acc",
    "test_balanced_acc",
    "mia_auc",
    "mia_efficacy",
    "lira_auc",
    "lira_tpr_at_5fpr",
    "avg_gap",
    "tuning_gap",
    "seconds",
    "time_ratio",
    "peak_mb",
)


@dataclass
class RunRecord:
    """One method run: its settings, seed, test metrics (gaps to retrain), audit, cost.

    Attributes:
        method: the method name.
        setting: the grid point it ran (the scenario's fixed settings not included).
        seed: the run's seed.
        metrics: ``UnlearningMetrics.to_dict()`` on test, gaps to the retrain reference
            set (accuracies in [0, 1], gaps in percentage points).
        val_tuning_gap: the tuning gap on validation (percentage points; the tuned point's
            for the extra seeds), or ``None``.
        seconds: wall time of the method call (seconds).
        time_ratio: its CPU (else wall) seconds over the retrain reference's.
        cpu_seconds: CPU time of the method call, all threads (seconds).
        peak_mb: peak CUDA memory, else peak resident memory, of the call (MiB).
        audit: the offline LiRA audit (``LiraResult.to_dict()``).
        info: what the method reported about itself (``model.unlearn_info``).
    """

    method: str
    setting: dict[str, Any]
    seed: int
    metrics: dict[str, Any]
    val_tuning_gap: float | None
    seconds: float
    time_ratio: float
    cpu_seconds: float | None
    peak_mb: float | None
    audit: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def flat(self) -> dict[str, Any]:
        """The run as one flat row (:func:`flat_metrics` plus its cost).

        Returns:
            :func:`flat_metrics` of its metrics and audit, with ``seconds``, ``time_ratio``
            and ``peak_mb``.
        """
        return {
            **flat_metrics(self.metrics, self.audit),
            "seconds": self.seconds,
            "time_ratio": self.time_ratio,
            "peak_mb": self.peak_mb,
        }


def flat_metrics(m: dict[str, Any], audit: dict[str, Any] | None = None) -> dict[str, Any]:
    """The reported numbers of one metrics record (and its LiRA audit) as one flat row.

    Args:
        m: ``UnlearningMetrics.to_dict()`` with gaps set (accuracies in [0, 1], gaps in
            percentage points).
        audit: an offline LiRA result (``auc``, ``tpr_at_5fpr``); None: no audit.

    Returns:
        The accuracies, ``worst_class_recall`` (the lowest per-class recall on retain-test,
        ``None`` without any), the membership attack's ``mia_auc``, ``mia_p_value`` and
        ``mia_efficacy``, LiRA's ``lira_auc`` and ``lira_tpr_at_5fpr`` (``None`` without
        an audit), ``avg_gap`` and ``tuning_gap``.

    Raises:
        KeyError: ``m`` lacks a reported number (raised by the lookup).
    """
    recalls = [v for v in (m.get("retain_test_recall") or {}).values() if v is not None]
    audit = audit or {}
    return {
        "forget_train_acc": m["forget_train_acc"],
        "forget_heldout_acc": m["forget_heldout_acc"],
        "forget_test_acc": m["forget_test_acc"],
        "retain_test_acc": m["retain_test_acc"],
        "retain_test_balanced_acc": m["retain_test_balanced_acc"],
        "worst_class_recall": min(recalls) if recalls else None,
        "retain_test_recall": m.get("retain_test_recall"),
        "test_acc": m["test_acc"],
        "test_balanced_acc": m["test_balanced_acc"],
        "mia_auc": m["membership"].get("auc"),
        "mia_p_value": m["membership"].get("p_value"),
        "mia_efficacy": m["mia_efficacy"],
        "lira_auc": audit.get("auc"),
        "lira_tpr_at_5fpr": audit.get("tpr_at_5fpr"),
        "avg_gap": m["avg_gap"],
        "tuning_gap": m["tuning_gap"],
    }


class PeakMemory:
    """Peak resident memory (MB) of this process inside a ``with`` block, and peak CUDA memory.

    On Linux the kernel's high-water mark is reset on entry (``/proc/self/clear_refs``), so
    the figure belongs to the block; elsewhere it is the process's lifetime peak.

    Attributes:
        mb: peak resident memory (MiB: ``VmHWM`` kB / 1024, else ``ru_maxrss`` / 1024),
            set on exit.
        cuda_mb: peak allocated CUDA memory (MiB), set on exit; ``None`` without CUDA.
    """

    def __enter__(self) -> PeakMemory:
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self.mb: float | None = None
        self.cuda_mb: float | None = None
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    self.mb = int(line.split()[1]) / 1024
        except OSError:
            self.mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        if torch.cuda.is_available():
            self.cuda_mb = torch.cuda.max_memory_allocated() / 2**20


def prepare_data(scenario: Scenario, cache_dir: Path) -> DatasetSplits:
    """Materialise the scenario's dataset once (cached by its settings) and open the splits.

    Args:
        scenario: the scenario (its ``data`` settings).
        cache_dir: the benchmark cache; the dataset goes to
            ``<cache_dir>/data/<name>-<data_key>``.

    Returns:
        The opened splits.
    """
    target = cache_dir / "data" / f"{scenario.name}-{scenario.data_key()}"
    if not (target / "dataset.json").is_file():
        source = load_source(scenario.data)
        materialise(
            source, target, int(scenario.data["image_size"]), int(scenario.data["channels"])
        )
    return open_splits(target)


def scenario_cohorts(splits: DatasetSplits, scenario: Scenario) -> Cohorts:
    """The cohorts of a scenario's request on its opened dataset.

    Args:
        splits: from :func:`prepare_data`.
        scenario: the scenario (its request).

    Returns:
        The request's cohorts.
    """
    return build_cohorts(
        splits.manifest,
        splits.train,
        splits.val,
        splits.test,
        splits.info.class_names,
        scenario.request,
    )


def val_cohorts(cohorts: Cohorts, val_split: Any) -> Cohorts:
    """The cohorts with validation rows in place of test rows (for tuning without test data).

    Retain-val measures retention, and matched non-members come from validation rows only.

    Args:
        cohorts: the scenario's cohorts.
        val_split: the validation split (it replaces ``cohorts.test``).

    Returns:
        A copy of ``cohorts`` with forget-val as forget-test, retain-val as retain-test and
        the non-member pool ``("val",)``.
    """
    return replace(
        cohorts,
        forget_test=cohorts.forget_val,
        retain_test=cohorts.retain_val,
        test=val_split,
        pool_splits=("val",),
    )


@dataclass
class ScenarioModels:
    """The trained models of a scenario: deployed, retrain reference, extra references.

    Attributes:
        deployed: the model trained on the full training split.
        deployed_seconds: its training wall time (seconds).
        reference: the retrain reference (retain-train only, seed ``reference_seed``).
        reference_seconds: its training wall time (seconds).
        references: extra retrains, seeds ``reference_seed + 1``, ``+ 2``, ...
        reference_peak_mb: peak memory while training or loading the reference (MiB);
            ``None`` when it came from the bank.
        reference_cpu_seconds: its training CPU time (seconds), when recorded.
        keys: the models' bank keys: deployed, reference, extras.
    """

    deployed: torch.nn.Module
    deployed_seconds: float
    reference: torch.nn.Module
    reference_seconds: float
    references: list[torch.nn.Module]  # retrains with seeds reference_seed + 1, + 2, ...
    reference_peak_mb: float | None = None
    reference_cpu_seconds: float | None = None
    keys: list[str] = field(default_factory=list)  # bank keys: deployed, reference, extras


def scenario_models(
    scenario: Scenario,
    splits: DatasetSplits,
    cohorts: Cohorts,
    cache_dir: Path,
    n_references: int | None = None,
    log: Callable[[str], None] = print,
    read_only: bool = False,
) -> ScenarioModels:
    """Train (or load from the bank) the deployed model and every retrain reference.

    Args:
        scenario: the scenario (model, recipe, seeds).
        splits: from :func:`prepare_data`.
        cohorts: from :func:`scenario_cohorts` (retain-train and retain-val train the
            references; retain-train stands in for an empty retain-val).
        cache_dir: the benchmark cache (the bank is ``<cache_dir>/models``).
        n_references: extra references (default: the scenario's ``reference_models``).
        log: receives a line per extra reference.
        read_only: load only; a model the bank lacks raises ``LookupError`` (from
            :meth:`medunlearn.models.bank.ModelBank.get`).

    Returns:
        The models, their training times and bank keys.
    """
    info = splits.info
    bank = ModelBank(
        cache_dir / "models",
        scenario.model,
        scenario.recipe,
        info.class_names,
        info.channels,
        info.image_size,
        splits.directory,
        read_only=read_only,
    )
    deployed_seed = int(scenario.recipe.get("seed", 0))
    deployed, deployed_cost, _ = bank.get(splits.train, splits.val, deployed_seed, "deployed")
    retain_val = cohorts.retain_val if len(cohorts.retain_val) else cohorts.retain_train
    keys = [bank.key(splits.train, splits.val, deployed_seed)]
    with PeakMemory() as mem:
        reference, reference_cost, cached = bank.get(
            cohorts.retain_train, retain_val, scenario.reference_seed, "reference"
        )
    n = scenario.reference_models if n_references is None else n_references
    references = []
    for k in range(n):
        seed = scenario.reference_seed + 1 + k
        model, cost, hit = bank.get(cohorts.retain_train, retain_val, seed, "reference")
        done = "cached" if hit else f"{cost['seconds']:.1f} s"
        log(f"[{scenario.name}] reference model {k + 1}/{n}: {done}")
        references.append(model)
    peak = None if cached else round(mem.cuda_mb if mem.cuda_mb else (mem.mb or 0.0), 1)
    keys += [
        bank.key(cohorts.retain_train, retain_val, scenario.reference_seed + k)
        for k in range(n + 1)
    ]
    return ScenarioModels(
        deployed,
        deployed_cost["seconds"],
        reference,
        reference_cost["seconds"],
        references,
        peak,
        reference_cost["cpu_seconds"],
        keys,
    )


def pretrain(scenario: Scenario, cache_dir: Path, log: Callable[[str], None] = print) -> None:
    """Fill the model bank for ``scenario`` (the long trainings), running no method.

    Args:
        scenario: the scenario.
        cache_dir: the benchmark cache.
        log: receives progress lines.
    """
    splits = prepare_data(scenario, cache_dir)
    cohorts = scenario_cohorts(splits, scenario)
    log(f"[{scenario.name}] cohorts {cohorts.masks.counts}")
    scenario_models(scenario, splits, cohorts, cache_dir, log=log)


def method_config(
    scenario: Scenario, method: str, psg_base: dict[str, Any], point: dict[str, Any], seed: int
) -> dict[str, Any]:
    """Settings of one run: method base, scenario's fixed settings, grid point, seed.

    Nested settings merge key by key, so ``psg_compose: {psg: {epochs: 2}}`` in a scenario
    changes only the epochs of the PSG base, not the whole of it.

    Args:
        scenario: the scenario (its fixed ``methods`` settings and ``recipe``).
        method: the method name.
        psg_base: PSG's base settings (the params file's ``unlearn`` section); also the
            base of ``boundary_shrink`` without PSG's attack keys, and ``psg_compose``'s
            ``psg``.
        point: the grid point.
        seed: the run's seed.

    Returns:
        The merged settings with ``seed``; ``retrain`` starts from the scenario's recipe,
        other methods from nothing.
    """
    if method in ("psg", "boundary_shrink"):
        base = dict(psg_base)
        if method == "boundary_shrink":
            base = {
                k: v
                for k, v in base.items()
                if k not in ("steps", "step_size", "eps", "lam", "gamma")
            }
    elif method == "psg_compose":
        base = {"psg": dict(psg_base)}
    elif method == "retrain":
        base = dict(scenario.recipe)
    else:
        base = {}
    merged = merge_settings(merge_settings(base, scenario.methods.get(method, {})), point)
    return {**merged, "seed": seed}


def _mean_std(values: Sequence[float | None]) -> dict[str, float | None]:
    xs = [float(v) for v in values if v is not None]
    if not xs:
        return {"mean": None, "std": None}
    return {"mean": statistics.fmean(xs), "std": statistics.pstdev(xs) if len(xs) > 1 else 0.0}


def summarise(records: Sequence[RunRecord]) -> dict[str, Any]:
    """Mean and population std over seeds of every reported number, per method.

    Args:
        records: the runs (every method, every seed).

    Returns:
        Per method, in first-seen order: ``setting``, ``seeds``, ``val_tuning_gap`` (of the
        first run) and ``{"mean", "std"}`` for each of :data:`SUMMARY_KEYS` (``None`` where
        no run has the number; std 0 for one run).
    """
    out: dict[str, Any] = {}
    for method in dict.fromkeys(r.method for r in records):
        rs = [r for r in records if r.method == method]
        flat = [r.flat() for r in rs]
        out[method] = {
            "setting": rs[0].setting,
            "seeds": [r.seed for r in rs],
            "val_tuning_gap": rs[0].val_tuning_gap,
            **{k: _mean_std([f[k] for f in flat]) for k in SUMMARY_KEYS},
        }
    return out


def run_benchmark(
    scenario: Scenario,
    psg_base: dict[str, Any],
    methods: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    quick: bool = False,
    cache_dir: Path = Path(".cache/bench"),
    progress: bool = True,
    log: Callable[[str], None] = print,
    gates_section: dict[str, Any] | None = None,
    map_runs: Callable[[Callable[[Any], Any], list[Any], Callable[[], None]], Sequence[Any]]
    | None = None,
) -> dict[str, Any]:
    """Benchmark ``methods`` on ``scenario`` (protocol: the module docstring).

    Every run is seeded, so accuracies and gaps do not depend on where or in which order
    the runs went (float sums, hence AUCs in the last digits, depend on the torch thread
    count). Finished runs are kept in the scenario's run cache (:func:`scenario_run_cache`),
    so an interrupted benchmark resumes.

    Args:
        scenario: the scenario.
        psg_base: PSG's base settings (see :func:`method_config`).
        methods: method names (default: every method but ``retrain``, whose row the
            reference models give).
        seeds: seeds (default: the scenario's); the grid is tuned at the first.
        quick: the scenario's quick grid (:meth:`Scenario.grid_for`).
        cache_dir: the benchmark cache (datasets, model bank, run cache).
        progress: show a progress bar.
        log: receives progress lines.
        gates_section: the params file's ``gates`` section (pool choice and calibration;
            default: the built-in bounds).
        map_runs: ``map_runs(fn, jobs, done)`` returns ``[fn(job) for job in jobs]``
            computed wherever it likes and calls ``done()`` as each job finishes
            (``flows/benchmark.py``: Prefect tasks on a Dask cluster); by default the runs
            go one after another in this process.

    Returns:
        The JSON-ready result: scenario, redacted request, cohort counts, pool check,
        training times (seconds), the reference, deployed and noise-floor rows, every run,
        the tuning log, :func:`tuning_agreement`, diverged runs, :func:`summarise`'s
        summary and the gate calibration.

    Raises:
        RuntimeError: a worker's core code differs from the run cache's (raised by a run
            on that worker).
    """
    methods = list(methods or [m for m in METHODS if m != "retrain"])
    seeds = list(seeds if seeds is not None else scenario.seeds)
    torch.manual_seed(0)
    splits = prepare_data(scenario, cache_dir)
    cohorts = scenario_cohorts(splits, scenario)
    log(f"[{scenario.name}] cohorts {cohorts.masks.counts}")

    models = scenario_models(scenario, splits, cohorts, cache_dir, log=log)
    deployed, reference = models.deployed, models.reference
    bounds = resolve_bounds(scenario.request.reason, gates_section)
    cohorts = choose_pool(cohorts, deployed, bounds["alpha"], bounds["mia_auc_margin"])
    tuning = val_cohorts(cohorts, splits.val)
    log(f"[{scenario.name}] non-member pool {cohorts.pool_splits}: {cohorts.pool_check}")
    deployed.train_augmentation = dict(scenario.recipe.get("augmentation") or {})
    deployed_seconds, retrain_seconds = models.deployed_seconds, models.reference_seconds
    # t/retrain compares CPU seconds (all threads) when the reference recorded them: immune
    # to other work on the machine; else wall seconds.
    retrain_cpu = models.reference_cpu_seconds
    log(
        f"[{scenario.name}] deployed {deployed_seconds:.1f} s, retrain reference "
        f"{retrain_seconds:.1f} s, {len(models.references)} more references"
    )
    ref_test = unlearning_metrics(reference, cohorts)
    ref_test.with_reference(ref_test)
    ref_val = unlearning_metrics(reference, tuning)
    ref_val.with_reference(ref_val)
    audit = lira_audit(cohorts, models.references)

    def row(model: torch.nn.Module) -> dict[str, Any]:
        predict = LogitCache(model)
        test = unlearning_metrics(model, cohorts, predict=predict).with_reference(ref_test)
        val = unlearning_metrics(model, tuning).with_reference(ref_val)
        return {
            **flat_metrics(test.to_dict(), audit(model, predict)),
            "val_tuning_gap": val.tuning_gap,
        }

    reference_row = row(reference)
    deployed_row = row(deployed)
    noise = [row(r) for r in models.references]
    runs = scenario_run_cache(scenario, models, cohorts, quick, cache_dir)

    def fresh_run(method: str, point: dict[str, Any], seed: int, cfg: dict[str, Any]) -> RunRecord:
        with PeakMemory() as m:
            start, cpu = time.perf_counter(), time.process_time()
            try:
                model = run_method(method, deployed, cohorts, cfg)
            except Diverged as exc:
                raise Diverged(f"{method} {point} seed {seed}: {exc}") from exc
            seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
        predict = LogitCache(model)
        test = unlearning_metrics(model, cohorts, predict=predict).with_reference(ref_test)
        val = unlearning_metrics(model, tuning).with_reference(ref_val)
        return RunRecord(
            method=method,
            setting=point,
            seed=seed,
            metrics=test.to_dict(),
            val_tuning_gap=val.tuning_gap,
            seconds=round(seconds, 3),
            time_ratio=round(
                cpu_seconds / retrain_cpu if retrain_cpu else seconds / retrain_seconds, 4
            ),
            cpu_seconds=round(cpu_seconds, 3),
            peak_mb=round(m.cuda_mb if m.cuda_mb else (m.mb or 0.0), 1),
            audit=audit(model, predict),
            info=dict(getattr(model, "unlearn_info", {}) or {}),
        )

    salt = identifier_salt()  # a Dask worker starts unsalted: ids must hash as they do here

    def attempt(job: tuple[str, dict[str, Any], int]) -> RunRecord | str:
        """One fresh run, stored in the run cache as soon as it ends (a killed run resumes).

        A divergence comes back as its message. Runs where ``map_runs`` sends it (this
        process, or a Dask worker sharing the cache folder), which must run the code the
        cache keys name.
        """
        if core_code_hash() != runs.context["code"]:
            raise RuntimeError(
                "this worker's medunlearn code differs from the benchmark's (run cache key "
                f"{runs.context['code']}): install the same checkout on every worker"
            )
        set_identifier_salt(salt)
        method, point, seed = job
        cfg = method_config(scenario, method, psg_base, point, seed)
        key = runs.key(method, cfg, seed)
        try:
            record = fresh_run(method, point, seed, cfg)
        except Diverged as exc:
            runs.put(key, {"diverged": True})
            return str(exc)
        runs.put(key, asdict(record))
        return record

    def run_all(jobs: list[tuple[str, dict[str, Any], int]]) -> list[RunRecord | Diverged]:
        """Each job's record, restored from the run cache or run, in job order."""
        keys = [runs.key(m, method_config(scenario, m, psg_base, p, s), s) for m, p, s in jobs]
        out: list[RunRecord | Diverged | None] = [None] * len(jobs)
        todo, first_of = [], {}
        for i, ((method, point, seed), key) in enumerate(zip(jobs, keys, strict=True)):
            stored = runs.get(key)
            if stored is None:
                if key not in first_of:  # a repeated job (e.g. --seeds 0 1 1) runs once
                    first_of[key] = i
                    todo.append(i)
            elif stored.get("diverged"):
                out[i] = Diverged(f"{method} {point} seed {seed}: weights became NaN/inf (cached)")
            else:
                out[i] = RunRecord(**stored)
        bar.update(len(jobs) - len(todo))
        if map_runs is None:  # in this process, one after another
            fresh = []
            for i in todo:
                method, point, seed = jobs[i]
                bar.set_postfix_str(f"{method} {point} seed {seed}")
                fresh.append(attempt(jobs[i]))
                bar.update(1)
        else:
            fresh = list(map_runs(attempt, [jobs[i] for i in todo], lambda: bar.update(1)))
        for i, result in zip(todo, fresh, strict=True):
            if isinstance(result, str):
                runs.put(keys[i], {"diverged": True})  # also where a remote worker stored it
                out[i] = Diverged(result)
            else:
                runs.put(keys[i], asdict(result))
                out[i] = result
        for i, key in enumerate(keys):
            if out[i] is None:  # the repeats of a job that ran above
                repeat = out[first_of[key]]
                out[i] = copy.deepcopy(repeat) if isinstance(repeat, RunRecord) else repeat
        return out  # type: ignore[return-value]

    records: list[RunRecord] = []
    diverged: list[dict[str, Any]] = []
    tuning_log: list[dict[str, Any]] = []
    plan = {m: scenario.grid_for(m, quick) for m in methods}
    total = sum(
        len(points) + (max(0, len(seeds) - 1) if m != "retrain" else 0)
        for m, points in plan.items()
    )
    bar = tqdm(total=total, desc=scenario.name, disable=not progress, leave=False)
    first_seed = seeds[0]
    # every method's tuning grid at the first seed, then every tuned point at the other seeds:
    # two batches of independent runs, so ``map_runs`` can spread each over workers
    tuning_jobs = [(m, point, first_seed) for m in methods for point in plan[m]]
    tuned = dict(zip(map(_job_id, tuning_jobs), run_all(tuning_jobs), strict=True))
    best_of: dict[str, tuple[dict[str, Any], RunRecord]] = {}
    for method in methods:
        best: tuple[float, dict[str, Any], RunRecord] | None = None
        for point in plan[method]:
            record = tuned[_job_id((method, point, first_seed))]
            if isinstance(record, Diverged):
                log(f"[{scenario.name}] {record}: grid point rejected")
                tuning_log.append(
                    {"method": method, "setting": point, "val_tuning_gap": None, "diverged": True}
                )
                continue
            tuning_log.append(
                {
                    "method": method,
                    "setting": point,
                    "val_tuning_gap": record.val_tuning_gap,
                    "test_tuning_gap": record.metrics["tuning_gap"],
                    "test_avg_gap": record.metrics["avg_gap"],
                }
            )
            gap = record.val_tuning_gap
            score = gap if gap is not None else float("inf")
            if best is None or score < best[0]:
                best = (score, point, record)
        if best is None:
            log(f"[{scenario.name}] {method}: every grid point diverged; no row")
            bar.update(max(0, len(seeds) - 1) if method != "retrain" else 0)
            continue
        best_of[method] = (best[1], best[2])
    seed_jobs = [
        (m, point, seed)
        for m, (point, _) in best_of.items()
        for seed in (seeds[1:] if m != "retrain" else [])
    ]
    extra_runs = dict(zip(map(_job_id, seed_jobs), run_all(seed_jobs), strict=True))
    for method, (point, record) in best_of.items():
        records.append(record)
        for seed in seeds[1:] if method != "retrain" else []:
            extra = extra_runs[_job_id((method, point, seed))]
            if isinstance(extra, Diverged):
                log(f"[{scenario.name}] {extra}")
                diverged.append({"method": method, "setting": point, "seed": seed})
                continue
            extra.val_tuning_gap = record.val_tuning_gap  # the tuned point's, as chosen
            records.append(extra)
        log(
            f"[{scenario.name}] {method:16s} {point} test Avg Gap "
            f"{_mean_std([r.metrics['avg_gap'] for r in records if r.method == method])['mean']:.2f} pp"
        )
    bar.close()
    summary = summarise(records)
    calibration = _calibrate(scenario, cohorts, models, gates_section or {}, audit, runs, log)
    return {
        "scenario": scenario.name,
        "description": scenario.description,
        "source_file": scenario.source_file,
        "quick": quick,
        "request": redacted_request(scenario.request),
        "counts": cohorts.masks.counts,
        "pool_check": cohorts.pool_check,
        "model": scenario.model,
        "recipe": scenario.recipe,
        "seeds": seeds,
        "deployed_train_seconds": round(deployed_seconds, 2),
        "retrain_seconds": round(retrain_seconds, 2),
        "retrain_cpu_seconds": retrain_cpu,
        "time_ratio_basis": "cpu" if retrain_cpu else "wall",
        "retrain_peak_mb": models.reference_peak_mb,
        "reference": reference_row,
        "deployed": deployed_row,
        "noise_floor": {
            "n_references": len(noise),
            "avg_gap": _mean_std([n["avg_gap"] for n in noise]),
            "tuning_gap": _mean_std([n["tuning_gap"] for n in noise]),
            "rows": noise,
        },
        "runs": [asdict(r) for r in records],
        "tuning": tuning_log,
        "tuning_agreement": tuning_agreement(summary),
        "diverged": diverged,
        "summary": summary,
        "calibration": calibration,
        "psg_base": copy.deepcopy(psg_base),
    }


def _job_id(job: tuple[str, dict[str, Any], int]) -> str:
    """A hashable name of one (method, grid point, seed) run."""
    method, point, seed = job
    return f"{method}|{json.dumps(point, sort_keys=True, default=str)}|{seed}"


def redacted_request(request: Any) -> dict[str, Any]:
    """The request for a report, without raw patient identifiers.

    Args:
        request: a :class:`~medunlearn.data.request.ForgetRequest`.

    Returns:
        Its fields and ``hash``, with the selector's ``patient_ids`` and ``image_ids``
        replaced by their salted hashes (``hash_identifier``), so benchmark JSON and tables
        never carry raw patient ids.
    """
    out = asdict(request) | {"hash": request.hash}
    selector = dict(out.get("selector") or {})
    for key in IDENTIFIER_KEYS:
        if key in selector:
            selector[key] = [hash_identifier(v) for v in selector[key]]
    out["selector"] = selector
    return out


def lira_audit(
    cohorts: Cohorts, references: Sequence[torch.nn.Module]
) -> Callable[[torch.nn.Module, LogitCache | None], dict[str, Any]]:
    """Offline LiRA (Carlini et al. 2022) of any model on the request's cohorts.

    Members and matched non-members; calibrated on ``references`` (their statistics
    computed once).

    Args:
        cohorts: the scenario's cohorts (held-out evidence sets).
        references: retrains without the forget cohort.

    Returns:
        ``audit(model, predict=None)``: the model's ``LiraResult.to_dict()`` (``auc``,
        ``tpr_at_5fpr``, ...); ``predict`` reuses a :class:`LogitCache` of the model.
    """
    held = evidence_sets(cohorts)[0]
    stats = reference_statistics(references, held.members, held.nonmembers)

    def audit(model: torch.nn.Module, predict: LogitCache | None = None) -> dict[str, Any]:
        predict = predict or LogitCache(model)
        return offline_lira(
            logit_confidence(model, held.members, predict),
            logit_confidence(model, held.nonmembers, predict),
            *stats,
        ).to_dict()

    return audit


def calibrate_scenario(
    scenario: Scenario,
    gates_section: dict[str, Any],
    cache_dir: Path = Path(".cache/bench"),
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Only the gate calibration of a scenario (its models from the bank, trained if absent).

    Args:
        scenario: the scenario.
        gates_section: the params file's ``gates`` section.
        cache_dir: the benchmark cache.
        log: receives progress lines.

    Returns:
        :func:`medunlearn.benchmark.calibration.calibrate_gates`'s result, with the
        held-out pool check that chose its non-members under ``"pool_check"``.
    """
    splits = prepare_data(scenario, cache_dir)
    cohorts = scenario_cohorts(splits, scenario)
    models = scenario_models(scenario, splits, cohorts, cache_dir, log=log)
    bounds = resolve_bounds(scenario.request.reason, gates_section)
    cohorts = choose_pool(cohorts, models.deployed, bounds["alpha"], bounds["mia_auc_margin"])
    audit = lira_audit(cohorts, models.references)
    runs = scenario_run_cache(scenario, models, cohorts, False, cache_dir)
    calibration = _calibrate(scenario, cohorts, models, gates_section, audit, runs, log)
    return {**calibration, "pool_check": cohorts.pool_check}


def scenario_run_cache(
    scenario: Scenario, models: Any, cohorts: Cohorts, quick: bool, cache_dir: Path
) -> RunCache:
    """The run cache of one scenario: its models' bank keys, request and non-member pool.

    Args:
        scenario: the scenario (name, request hash).
        models: its :class:`ScenarioModels` (their bank ``keys``).
        cohorts: its cohorts (the non-member pool's splits).
        quick: a quick run (kept apart from full runs).
        cache_dir: the benchmark cache (runs go to ``<cache_dir>/runs``).

    Returns:
        The cache.
    """
    return RunCache(
        cache_dir / "runs",
        {
            "scenario": scenario.name,
            "models": models.keys,
            "request": scenario.request.hash,
            "pool": list(cohorts.pool_splits),
            "quick": quick,
        },
    )


def _calibrate(
    scenario: Scenario,
    cohorts: Cohorts,
    models: Any,
    gates_section: dict[str, Any],
    audit: Callable[..., dict[str, Any]],
    runs: RunCache,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """The scenario's gate calibration, each row stored in ``runs`` as it finishes."""
    lr = 0.3 * float(scenario.recipe.get("lr", 1e-3))
    settings = {"gates": gates_section, "lr": lr, "extra_epochs": 30}

    def store(kind: str, seed: int, compute: Callable[[], dict]) -> dict:
        key = runs.key(f"calibration/{kind}", settings, seed)
        row = runs.get(key)
        if row is None:
            row = compute()
            runs.put(key, row)
        return row

    return calibrate_gates(
        cohorts,
        models.deployed,
        [models.reference, *models.references],
        gates_section,
        seeds=1 + len(models.references),
        extra_epochs=settings["extra_epochs"],
        lr=lr,
        log=lambda msg: log(f"[{scenario.name}] {msg}"),
        audit=audit,
        store=store,
    )


def tuning_agreement(summary: dict[str, Any]) -> dict[str, Any]:
    """Does tuning rank methods as test does?

    Spearman rank correlation (``scipy.stats.spearmanr``), across methods, of the
    validation tuning gap of the chosen setting with the same gap measured on test.

    Args:
        summary: :func:`summarise`'s result.

    Returns:
        ``n_methods`` (methods with both gaps), ``spearman`` and its ``p_value``; both
        ``None`` with fewer than 3 methods.
    """
    pairs = [
        (s["val_tuning_gap"], s["tuning_gap"]["mean"])
        for s in summary.values()
        if s["val_tuning_gap"] is not None and s["tuning_gap"]["mean"] is not None
    ]
    if len(pairs) < 3:
        return {"n_methods": len(pairs), "spearman": None, "p_value": None}
    rho, p = spearmanr([a for a, _ in pairs], [b for _, b in pairs])
    return {"n_methods": len(pairs), "spearman": float(rho), "p_value": float(p)}
