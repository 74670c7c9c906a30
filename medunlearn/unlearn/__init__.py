"""Unlearning: PSG (inner + outer problem), the baselines, composition and the candidate sweep.

Forget requests and cohorts are data (``medunlearn.data.request``).
"""

from medunlearn.unlearn.psg import PSGConfig, UnlearnResult, boundary_search, psg_unlearn

__all__ = ["PSGConfig", "UnlearnResult", "boundary_search", "psg_unlearn"]
