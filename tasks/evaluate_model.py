"""Step: evaluate a trained model on the validation and test splits."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from medunlearn.data.dataset import DatasetSplits
from medunlearn.models import ZooModel
from medunlearn.models.evaluation import evaluate


@task(name="evaluate-model", cache_policy=NO_CACHE)
def evaluate_model(model: ZooModel, data: DatasetSplits) -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro AUC and per-class accuracy on val and test.

    Args:
        model: the trained model.
        data: the dataset's splits (val, test, class names).

    Returns:
        ``{"val": metrics, "test": metrics}`` from
        :func:`medunlearn.models.evaluation.evaluate` (accuracies in [0, 1]; ``macro_auc``
        ``None`` where undefined).
    """
    names = data.info.class_names
    metrics = {"val": evaluate(model, data.val, names), "test": evaluate(model, data.test, names)}
    test = metrics["test"]
    get_run_logger().info(
        "test: accuracy %.3f, balanced accuracy %.3f, macro AUC %s",
        test["accuracy"],
        test["balanced_accuracy"],
        "n/a" if test["macro_auc"] is None else f"{test['macro_auc']:.3f}",
    )
    return metrics
