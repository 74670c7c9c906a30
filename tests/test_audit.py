"""Offline LiRA: per-example calibration against reference models, on simulated statistics
whose right answer is known, and the logit-scaled confidence by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from medunlearn.evidence.audit import logit_confidence, offline_lira
from medunlearn.evidence.membership import rank_auc


class Fixed(torch.nn.Module):
    """A 'model' returning stored logits, one row per input index."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = logits
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits[x.long().flatten()]


def test_logit_confidence_is_log_odds_of_the_true_class() -> None:
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 3.0]])
    data = TensorDataset(torch.arange(2.0), torch.tensor([0, 2]))
    phi = logit_confidence(Fixed(logits), data)
    p0 = math.exp(2) / (math.exp(2) + 2)  # softmax of the true class
    p1 = math.exp(3) / (1 + math.exp(1) + math.exp(3))
    assert phi == pytest.approx([math.log(p0 / (1 - p0)), math.log(p1 / (1 - p1))])


def simulate(shift: float, k: int = 8, n: int = 200, m: int = 400, seed: int = 0):
    """Per-example difficulty mu ~ N(0, 3); reference (OUT) models draw phi ~ N(mu, 1); the
    target adds ``shift`` on members (memorisation) and draws like an OUT model otherwise."""
    rng = np.random.default_rng(seed)
    mu_m, mu_n = rng.normal(0, 3, n) - 2.0, rng.normal(0, 3, m)  # members are harder examples
    ref_m = mu_m + rng.normal(0, 1, (k, n))
    ref_n = mu_n + rng.normal(0, 1, (k, m))
    target_m = mu_m + shift + rng.normal(0, 1, n)
    target_n = mu_n + rng.normal(0, 1, m)
    return target_m, target_n, ref_m, ref_n


def test_lira_sees_memorisation_that_the_population_attack_misses() -> None:
    t_m, t_n, r_m, r_n = simulate(shift=2.0)
    lira = offline_lira(t_m, t_n, r_m, r_n)
    population = rank_auc(t_m, t_n)  # raw confidence: the harder members hide their shift
    assert lira.auc > 0.85 and population < 0.6
    assert lira.tpr_at_5fpr > 0.4 and lira.flagged > 3 * lira.expected


def test_lira_is_at_chance_for_a_true_retrain() -> None:
    aucs = [offline_lira(*simulate(shift=0.0, seed=s)).auc for s in range(20)]
    assert abs(np.mean(aucs) - 0.5) < 0.02
    assert offline_lira(*simulate(0.0, k=1)).auc is None  # one reference cannot calibrate
