"""Run every unlearning method on one scenario, measured the same way, against retraining.

Protocol (also in BENCHMARKS.md): train the deployed model once and the retrain reference
once (on retain-train, seed ``reference_seed``, timed); for each method, run every point of
its tuning grid with seed 0 and score it by Avg Gap to the reference on the **validation**
split (forget-val / retain-val / val stand in for the test cohorts); keep the best point, run
it with every seed, and report the test-split metrics of those runs. Wall time and peak
memory are measured around each method call.
"""

from __future__ import annotations

import contextlib
import copy
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from medunlearn.benchmark.bank import ModelBank
from medunlearn.benchmark.scenario import Scenario, merge_settings
from medunlearn.data.dataset import DatasetSplits, materialise, open_splits
from medunlearn.data.sources import load_source
from medunlearn.inference import LogitCache
from medunlearn.metrics import UnlearnMetrics, unlearning_metrics
from medunlearn.unlearn.methods import METHODS, run_method
from medunlearn.unlearn.request import Cohorts, build_cohorts

SUMMARY_KEYS = (
    "forget_test_acc",
    "forget_train_acc",
    "retain_test_acc",
    "test_acc",
    "mia_auc",
    "mia_efficacy",
    "avg_gap",
    "seconds",
    "time_ratio",
    "peak_mb",
)


class Diverged(RuntimeError):
    """A method's weights became NaN or inf (the run is rejected, not scored)."""


@dataclass
class RunRecord:
    """One method run: its settings, seed, test metrics (gaps to retrain), cost."""

    method: str
    setting: dict[str, Any]
    seed: int
    metrics: dict[str, Any]
    val_avg_gap: float | None
    seconds: float
    time_ratio: float
    peak_mb: float | None
    info: dict[str, Any] = field(default_factory=dict)

    def flat(self) -> dict[str, Any]:
        m = self.metrics
        return {
            "forget_test_acc": m["forget_test_acc"],
            "forget_train_acc": m["forget_train_acc"],
            "retain_test_acc": m["retain_test_acc"],
            "test_acc": m["test_acc"],
            "mia_auc": m["mia_loss"]["auc"],
            "mia_efficacy": m["mia_efficacy"],
            "avg_gap": m["avg_gap"],
            "seconds": self.seconds,
            "time_ratio": self.time_ratio,
            "peak_mb": self.peak_mb,
        }


class PeakMemory:
    """Peak resident memory (MB) of this process inside a ``with`` block, and peak CUDA memory.

    On Linux the kernel's high-water mark is reset on entry (``/proc/self/clear_refs``), so
    the figure belongs to the block; elsewhere it is the process's lifetime peak.
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
    """Materialise the scenario's dataset once (cached by its settings) and open the splits."""
    target = cache_dir / "data" / f"{scenario.name}-{scenario.data_key()}"
    if not (target / "dataset.json").is_file():
        source = load_source(scenario.data)
        materialise(
            source, target, int(scenario.data["image_size"]), int(scenario.data["channels"])
        )
    return open_splits(target)


def val_cohorts(cohorts: Cohorts, val_split: Any) -> Cohorts:
    """The cohorts with validation rows in place of test rows (for tuning without test data)."""
    return replace(
        cohorts, forget_test=cohorts.forget_val, retain_test=cohorts.retain_val, test=val_split
    )


@dataclass
class ScenarioModels:
    """The trained models of a scenario: deployed, retrain reference, extra references."""

    deployed: torch.nn.Module
    deployed_seconds: float
    reference: torch.nn.Module
    reference_seconds: float
    references: list[torch.nn.Module]  # retrains with seeds reference_seed + 1, + 2, ...
    reference_peak_mb: float | None = None


def scenario_models(
    scenario: Scenario,
    splits: DatasetSplits,
    cohorts: Cohorts,
    cache_dir: Path,
    n_references: int | None = None,
    log: Callable[[str], None] = print,
) -> ScenarioModels:
    """Train (or load from the bank) the deployed model and every retrain reference."""
    info = splits.info
    bank = ModelBank(
        cache_dir / "models",
        scenario.model,
        scenario.recipe,
        info.class_names,
        info.channels,
        info.image_size,
        splits.directory,
    )
    deployed, deployed_seconds, _ = bank.get(
        splits.train, splits.val, int(scenario.recipe.get("seed", 0)), "deployed"
    )
    retain_val = cohorts.retain_val if len(cohorts.retain_val) else cohorts.retain_train
    with PeakMemory() as mem:
        reference, reference_seconds, cached = bank.get(
            cohorts.retain_train, retain_val, scenario.reference_seed, "reference"
        )
    n = scenario.reference_models if n_references is None else n_references
    references = []
    for k in range(n):
        model, seconds, hit = bank.get(
            cohorts.retain_train, retain_val, scenario.reference_seed + 1 + k, "reference"
        )
        log(
            f"[{scenario.name}] reference model {k + 1}/{n}: {'cached' if hit else f'{seconds:.1f} s'}"
        )
        references.append(model)
    peak = None if cached else round(mem.cuda_mb if mem.cuda_mb else (mem.mb or 0.0), 1)
    return ScenarioModels(
        deployed, deployed_seconds, reference, reference_seconds, references, peak
    )


def pretrain(scenario: Scenario, cache_dir: Path, log: Callable[[str], None] = print) -> None:
    """Fill the model bank for ``scenario`` (the long trainings), running no method."""
    splits = prepare_data(scenario, cache_dir)
    cohorts = build_cohorts(
        splits.manifest,
        splits.train,
        splits.val,
        splits.test,
        splits.info.class_names,
        scenario.request,
    )
    log(f"[{scenario.name}] cohorts {cohorts.masks.counts}")
    scenario_models(scenario, splits, cohorts, cache_dir, log=log)


def method_config(
    scenario: Scenario, method: str, psg_base: dict[str, Any], point: dict[str, Any], seed: int
) -> dict[str, Any]:
    """Settings of one run: method base, scenario's fixed settings, grid point, seed.

    Nested settings merge key by key, so ``psg_compose: {psg: {epochs: 2}}`` in a scenario
    changes only the epochs of the PSG base, not the whole of it.
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
    """Mean and std over seeds of every reported number, per method."""
    out: dict[str, Any] = {}
    for method in dict.fromkeys(r.method for r in records):
        rs = [r for r in records if r.method == method]
        flat = [r.flat() for r in rs]
        out[method] = {
            "setting": rs[0].setting,
            "seeds": [r.seed for r in rs],
            "val_avg_gap": rs[0].val_avg_gap,
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
) -> dict[str, Any]:
    """Benchmark ``methods`` (default: all) on ``scenario``; return the JSON-ready result."""
    methods = list(methods or METHODS)
    if quick and "retrain" in methods and methods != ["retrain"]:
        methods.remove("retrain")  # quick mode: the reference row stands for retraining
    seeds = list(seeds if seeds is not None else scenario.seeds)
    torch.manual_seed(0)
    splits = prepare_data(scenario, cache_dir)
    names = splits.info.class_names
    cohorts = build_cohorts(
        splits.manifest, splits.train, splits.val, splits.test, names, scenario.request
    )
    tuning = val_cohorts(cohorts, splits.val)
    log(f"[{scenario.name}] cohorts {cohorts.masks.counts}")

    models = scenario_models(scenario, splits, cohorts, cache_dir, log=log)
    deployed, reference = models.deployed, models.reference
    deployed_seconds, retrain_seconds = models.deployed_seconds, models.reference_seconds
    log(
        f"[{scenario.name}] deployed {deployed_seconds:.1f} s, retrain reference {retrain_seconds:.1f} s"
    )
    ref_test = unlearning_metrics(reference, cohorts)
    ref_test.with_reference(ref_test)
    ref_val = unlearning_metrics(reference, tuning)
    ref_val.with_reference(ref_val)
    deployed_test = unlearning_metrics(deployed, cohorts).with_reference(ref_test)

    def one_run(method: str, point: dict[str, Any], seed: int) -> tuple[torch.nn.Module, RunRecord]:
        cfg = method_config(scenario, method, psg_base, point, seed)
        if method == "retrain":
            cfg["seed"] = seed
        with PeakMemory() as m:
            start = time.perf_counter()
            model = run_method(method, deployed, cohorts, cfg)
            seconds = time.perf_counter() - start
        if not all(
            torch.isfinite(p).all() for p in model.state_dict().values() if p.is_floating_point()
        ):
            raise Diverged(f"{method} {point} seed {seed}: weights became NaN/inf")
        predict = LogitCache(model)
        test = unlearning_metrics(model, cohorts, predict=predict).with_reference(ref_test)
        model.logit_cache = predict  # reused for the validation metrics of this model
        return model, RunRecord(
            method=method,
            setting=point,
            seed=seed,
            metrics=test.to_dict(),
            val_avg_gap=None,
            seconds=round(seconds, 3),
            time_ratio=round(seconds / retrain_seconds, 4),
            peak_mb=round(m.cuda_mb if m.cuda_mb else (m.mb or 0.0), 1),
            info=dict(getattr(model, "unlearn_info", {}) or {}),
        )

    records: list[RunRecord] = []
    diverged: list[dict[str, Any]] = []
    tuning_log: list[dict[str, Any]] = []
    plan = {m: scenario.grid_for(m, quick) for m in methods}
    total = sum(
        len(points) + (max(0, len(seeds) - 1) if m != "retrain" else 0)
        for m, points in plan.items()
    )
    bar = tqdm(total=total, desc=scenario.name, disable=not progress, leave=False)
    for method in methods:
        points = plan[method]
        best: tuple[float, dict[str, Any], RunRecord] | None = None
        first_seed = seeds[0]
        for point in points:
            bar.set_postfix_str(f"{method} {point}")
            bar.update(1)
            try:
                model, record = one_run(method, point, first_seed)
            except Diverged as exc:
                log(f"[{scenario.name}] {exc}: grid point rejected")
                tuning_log.append(
                    {"method": method, "setting": point, "val_avg_gap": None, "diverged": True}
                )
                continue
            val = unlearning_metrics(model, tuning, predict=model.logit_cache).with_reference(
                ref_val
            )
            del model.logit_cache
            record.val_avg_gap = val.avg_gap
            tuning_log.append({"method": method, "setting": point, "val_avg_gap": val.avg_gap})
            score = val.avg_gap if val.avg_gap is not None else float("inf")
            if best is None or score < best[0]:
                best = (score, point, record)
        if best is None:
            log(f"[{scenario.name}] {method}: every grid point diverged; no row")
            bar.update(max(0, len(seeds) - 1) if method != "retrain" else 0)
            continue
        _, point, record = best
        records.append(record)
        # Retraining is the reference's own recipe: one extra seed measures its seed-to-seed
        # spread (the noise floor of Avg Gap); more would cost a full training each.
        for seed in seeds[1:] if method != "retrain" else []:
            bar.set_postfix_str(f"{method} seed {seed}")
            bar.update(1)
            try:
                _, extra = one_run(method, point, seed)
            except Diverged as exc:
                log(f"[{scenario.name}] {exc}")
                diverged.append({"method": method, "setting": point, "seed": seed})
                continue
            extra.val_avg_gap = record.val_avg_gap
            records.append(extra)
        log(
            f"[{scenario.name}] {method:16s} {point} test Avg Gap "
            f"{_mean_std([r.metrics['avg_gap'] for r in records if r.method == method])['mean']:.4f}"
        )
    bar.close()
    return {
        "scenario": scenario.name,
        "description": scenario.description,
        "source_file": scenario.source_file,
        "quick": quick,
        "request": asdict(scenario.request) | {"hash": scenario.request.hash},
        "counts": cohorts.masks.counts,
        "model": scenario.model,
        "recipe": scenario.recipe,
        "seeds": seeds,
        "deployed_train_seconds": round(deployed_seconds, 2),
        "retrain_seconds": round(retrain_seconds, 2),
        "retrain_peak_mb": models.reference_peak_mb,
        "reference": _reference_row(ref_test),
        "deployed": _reference_row(deployed_test),
        "runs": [asdict(r) for r in records],
        "tuning": tuning_log,
        "diverged": diverged,
        "summary": summarise(records),
        "psg_base": copy.deepcopy(psg_base),
    }


def _reference_row(metrics: UnlearnMetrics) -> dict[str, Any]:
    d = metrics.to_dict()
    return {
        "forget_test_acc": d["forget_test_acc"],
        "forget_train_acc": d["forget_train_acc"],
        "retain_test_acc": d["retain_test_acc"],
        "test_acc": d["test_acc"],
        "mia_auc": d["mia_loss"]["auc"],
        "mia_efficacy": d["mia_efficacy"],
        "avg_gap": d["avg_gap"],
    }
