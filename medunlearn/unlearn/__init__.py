"""Unlearning: forget requests and cohorts, and the PSG method (inner + outer problem)."""

from medunlearn.unlearn.psg import PSGConfig, UnlearnResult, boundary_search, psg_unlearn
from medunlearn.unlearn.request import (
    Cohorts,
    ForgetRequest,
    RequestError,
    build_cohorts,
    cohort_masks,
)

__all__ = [
    "Cohorts",
    "ForgetRequest",
    "PSGConfig",
    "RequestError",
    "UnlearnResult",
    "boundary_search",
    "build_cohorts",
    "cohort_masks",
    "psg_unlearn",
]
