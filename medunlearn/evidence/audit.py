"""A per-example membership audit with reference models: offline LiRA.

Population attacks (``medunlearn.evidence.membership``) compare two groups and overestimate privacy: an
unlearning method can leave a few examples clearly recognisable while the group statistics
look clean (Hayes et al., "Inexact unlearning needs more careful evaluations to avoid a false
sense of privacy", 2024). The likelihood-ratio attack calibrates *each example* against
models that never trained on it. We use the **offline** variant of LiRA (Carlini et al.,
"Membership Inference Attacks From First Principles", IEEE S&P 2022, section VI-C), chosen
over RMIA because its reference models are exactly retrain references: models trained on
retain-train with other seeds, which the benchmark trains anyway (and which also calibrate
the gates). Online LiRA would need IN models trained *with* each forget example.

For an example (x, y) and a model f, the statistic is the logit-scaled confidence
``phi = log p_y - log(1 - p_y)`` (p = softmax of f(x)), computed stably from the logits.
Over the K reference (OUT) models, phi is modelled as Gaussian with a per-example mean and,
since K is small (2-20), one variance pooled over all examples (the paper's "global variance"
for few shadow models). An example's score is ``Phi((phi_target - mu_out) / sigma)``: high
when the target model is more confident on it than models that never saw it. Reported:

- ``auc``: ROC AUC of the scores, forget-train vs matched held-out non-members (0.5: the
  forgotten examples look as unseen as examples that never were seen);
- ``tpr_at_5fpr``: share of forget-train above the non-members' 95th score percentile;
- ``flagged``: forget-train examples whose one-sided p-value ``1 - score`` is below 0.05,
  against the ``expected`` number under the null (5%).

Hand-written: no maintained library implements LiRA for arbitrary PyTorch classifiers
(the reference implementations are research scripts tied to their training pipelines).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from scipy.stats import norm
from sklearn.metrics import roc_auc_score
from torch.utils.data import Dataset

from medunlearn.models.inference import LogitCache


def logit_confidence(
    model: torch.nn.Module, dataset: Dataset, predict: Callable[[Dataset], Any] | None = None
) -> np.ndarray:
    """Compute the logit-scaled confidence of each image under its true label.

    ``phi = log p_y - log(1 - p_y)`` (Carlini et al., LiRA, 2022), computed stably from the
    logits as ``z_y - logsumexp(z_other)`` in float64.

    Args:
        model: the classifier (used only without ``predict``).
        dataset: (image, label) pairs.
        predict: returns ``(logits, labels)`` of a dataset (default: a new
            :class:`LogitCache` of ``model``).

    Returns:
        float64 array (N,) (nats); empty for an empty dataset.
    """
    logits, labels = (predict or LogitCache(model))(dataset)
    if len(labels) == 0:
        return np.empty(0)
    logits = logits.double()
    true = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.clone()
    others[torch.arange(len(labels)), labels] = -torch.inf
    return (true - torch.logsumexp(others, dim=1)).numpy()


@dataclass
class LiraResult:
    """The offline LiRA audit of one model (see the module docstring for each number).

    ``auc`` and ``tpr_at_5fpr`` are in [0, 1]; ``flagged`` counts members with a one-sided
    p-value below 0.05, ``expected`` = 0.05 x members. All ``None`` below two references.
    """

    n_references: int
    n_members: int
    n_nonmembers: int
    auc: float | None
    tpr_at_5fpr: float | None
    flagged: int | None
    expected: float | None

    def to_dict(self) -> dict[str, Any]:
        """Return the result as a JSON-ready dict.

        Returns:
            Every field by name.
        """
        return asdict(self)


def reference_statistics(
    references: Sequence[torch.nn.Module],
    members: Dataset,
    nonmembers: Dataset,
    predictor: Callable[[torch.nn.Module], Any] = LogitCache,
) -> tuple[np.ndarray, np.ndarray]:
    """Compute phi of every reference model on the members and the non-members.

    Args:
        references: the K reference (OUT) models: retrains without the members.
        members: the forget-train images.
        nonmembers: the matched held-out images.
        predictor: ``predictor(model)`` gives the logits function of one model (default: a
            :class:`LogitCache`, one forward pass per whole split, shared with other metrics;
            an audit that needs only these rows passes one that computes just them).

    Returns:
        ``(members, non-members)``: float64 arrays (K, n) and (K, m); (0, n) and (0, m)
        without references.
    """
    if not references:
        return np.empty((0, len(members))), np.empty((0, len(nonmembers)))
    m_rows, n_rows = [], []
    for ref in references:
        predict = predictor(ref)
        m_rows.append(logit_confidence(ref, members, predict))
        n_rows.append(logit_confidence(ref, nonmembers, predict))
    return np.stack(m_rows), np.stack(n_rows)


def lira_scores(target: np.ndarray, reference: np.ndarray, sigma: float) -> np.ndarray:
    """Compute the offline LiRA score of each example (Carlini et al. 2022, section VI-C).

    Args:
        target: phi of the audited model, shape (n,).
        reference: phi of the K reference models on the same examples, shape (K, n).
        sigma: the pooled standard deviation of phi (> 0).

    Returns:
        ``Phi((target - mean over references) / sigma)`` per example, shape (n,), in [0, 1]
        (``Phi`` the standard normal CDF).
    """
    return norm.cdf((target - reference.mean(axis=0)) / sigma)


def member_scores(
    target_members: np.ndarray,
    target_nonmembers: np.ndarray,
    ref_members: np.ndarray,
    ref_nonmembers: np.ndarray,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Compute offline LiRA scores of the members and the non-members.

    One variance is pooled over both (the mean over examples of the references' per-example
    variance, ddof 1; see the module docstring).

    Args:
        target_members: phi of the audited model on the members, shape (n,).
        target_nonmembers: phi of the audited model on the non-members, shape (m,).
        ref_members: phi of the K reference models on the members, shape (K, n).
        ref_nonmembers: phi of the K reference models on the non-members, shape (K, m).

    Returns:
        ``(members' scores, non-members' scores)`` in [0, 1], or ``None`` below two
        references or with an empty side.
    """
    k, n, m = ref_members.shape[0], len(target_members), len(target_nonmembers)
    if k < 2 or n == 0 or m == 0:
        return None
    both = np.concatenate([ref_members, ref_nonmembers], axis=1)
    sigma = float(np.sqrt(np.mean(both.var(axis=0, ddof=1)))) or 1e-6
    return (
        lira_scores(target_members, ref_members, sigma),
        lira_scores(target_nonmembers, ref_nonmembers, sigma),
    )


def offline_lira(
    target_members: np.ndarray,
    target_nonmembers: np.ndarray,
    ref_members: np.ndarray,
    ref_nonmembers: np.ndarray,
) -> LiraResult:
    """Audit one target model from phi values (see the module docstring).

    Args:
        target_members: phi of the audited model on the members, shape (n,).
        target_nonmembers: phi of the audited model on the non-members, shape (m,).
        ref_members: phi of the K reference models on the members, shape (K, n).
        ref_nonmembers: phi of the K reference models on the non-members, shape (K, m).

    Returns:
        The sizes and, with at least two references and both sides non-empty, the scores'
        ROC AUC (members vs non-members), the members' share above the non-members' 95th
        percentile, and the members flagged at p < 0.05 with the number expected (5%).
    """
    k, n, m = ref_members.shape[0], len(target_members), len(target_nonmembers)
    scores = member_scores(target_members, target_nonmembers, ref_members, ref_nonmembers)
    if scores is None:
        return LiraResult(k, n, m, None, None, None, None)
    s_m, s_n = scores
    y = np.r_[np.ones(n), np.zeros(m)]
    threshold = np.quantile(s_n, 0.95)
    return LiraResult(
        n_references=k,
        n_members=n,
        n_nonmembers=m,
        auc=float(roc_auc_score(y, np.r_[s_m, s_n])),
        tpr_at_5fpr=float(np.mean(s_m > threshold)),
        flagged=int(np.sum(1 - s_m < 0.05)),
        expected=0.05 * n,
    )
