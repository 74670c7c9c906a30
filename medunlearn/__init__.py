"""medunlearn: revise deployed clinical imaging classifiers by machine unlearning.

This package is the functional core: data layer, model zoo, training, metrics and file
formats. It never imports Prefect; the orchestration lives in ``tasks/`` and ``flows/``.
"""

__version__ = "0.1.0"
