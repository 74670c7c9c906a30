"""The benchmark suite: every unlearning method on clinical scenarios, against retraining."""

from medunlearn.benchmark.report import markdown_table, write_outputs
from medunlearn.benchmark.runner import RunRecord, run_benchmark
from medunlearn.benchmark.scenario import DEFAULT_GRIDS, Scenario, ScenarioError, load_scenario

__all__ = [
    "DEFAULT_GRIDS",
    "RunRecord",
    "Scenario",
    "ScenarioError",
    "load_scenario",
    "markdown_table",
    "run_benchmark",
    "write_outputs",
]
