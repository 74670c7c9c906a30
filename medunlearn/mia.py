"""Membership inference attacks, the privacy evidence of an unlearning run.

Both attacks use scikit-learn; this module only builds their features and the member /
non-member sets, which is where the reference code went wrong: comparing forget-train with
the *whole* test set measures the class, not membership. Here non-members come from the same
distribution as members: held-out rows matching the same selector (forget-test).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.svm import SVC
from torch.utils.data import Dataset

from medunlearn.inference import LogitCache


@dataclass
class AttackResult:
    accuracy: float | None
    auc: float | None
    n_members: int
    n_nonmembers: int
    note: str = ""


def per_sample_loss(
    model: torch.nn.Module, dataset: Dataset, predict: LogitCache | None = None
) -> np.ndarray:
    """Cross-entropy of each image under its true label."""
    logits, labels = (predict or LogitCache(model))(dataset)
    if len(labels) == 0:
        return np.empty(0)
    return F.cross_entropy(logits, labels, reduction="none").numpy()


def true_class_confidence(
    model: torch.nn.Module, dataset: Dataset, predict: LogitCache | None = None
) -> np.ndarray:
    """Softmax probability of the true class for each image."""
    logits, labels = (predict or LogitCache(model))(dataset)
    if len(labels) == 0:
        return np.empty(0)
    return torch.softmax(logits, 1).gather(1, labels[:, None]).squeeze(1).numpy()


def loss_threshold_attack(
    model: torch.nn.Module,
    members: Dataset,
    nonmembers: Dataset,
    seed: int = 0,
    folds: int = 5,
    predict: LogitCache | None = None,
) -> AttackResult:
    """MIA (a): can a logistic regression on the per-sample loss tell members from non-members?

    Members = forget-train, non-members = forget-test (same selector, held out). The larger
    side is subsampled to the smaller one (balanced, so chance is 0.5), and accuracy and AUC
    come from stratified ``folds``-fold cross-validated predictions. AUC 0.5 means the model
    treats the forgotten rows like rows it never saw.
    """
    predict = predict or LogitCache(model)
    m_loss = per_sample_loss(model, members, predict)
    n_loss = per_sample_loss(model, nonmembers, predict)
    n = min(len(m_loss), len(n_loss))
    if n < 2:
        return AttackResult(None, None, len(m_loss), len(n_loss), "too few members or non-members")
    rng = np.random.default_rng(seed)
    m_loss = rng.choice(m_loss, n, replace=False)
    n_loss = rng.choice(n_loss, n, replace=False)
    x = np.log1p(np.concatenate([m_loss, n_loss]))[:, None]
    y = np.concatenate([np.ones(n), np.zeros(n)])
    k = min(folds, n)
    cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    proba = cross_val_predict(LogisticRegression(), x, y, cv=cv, method="predict_proba")[:, 1]
    return AttackResult(
        accuracy=float(((proba > 0.5) == y).mean()),
        auc=float(roc_auc_score(y, proba)),
        n_members=n,
        n_nonmembers=n,
    )


def svc_mia_efficacy(
    model: torch.nn.Module,
    retain_train: Dataset,
    test: Dataset,
    forget_train: Dataset,
    seed: int = 0,
    predict: LogitCache | None = None,
) -> float | None:
    """MIA (b), the "MIA-efficacy" of Unlearn-Sparse / SalUn (Jia et al. 2023, Fan et al. 2024).

    A shadow SVC (RBF, C=3, gamma="auto") learns members = retain-train (subsampled to the
    test size) vs non-members = test, on the true-class confidence; the efficacy is the
    fraction of forget-train it then calls non-members. Higher means better forgotten; a
    retrained model is the reference value.
    """
    predict = predict or LogitCache(model)
    conf_r = true_class_confidence(model, retain_train, predict)
    conf_t = true_class_confidence(model, test, predict)
    conf_f = true_class_confidence(model, forget_train, predict)
    if len(conf_r) == 0 or len(conf_t) == 0 or len(conf_f) == 0:
        return None
    rng = np.random.default_rng(seed)
    if len(conf_r) > len(conf_t):
        conf_r = rng.choice(conf_r, len(conf_t), replace=False)
    x = np.concatenate([conf_r, conf_t])[:, None]
    y = np.concatenate([np.ones(len(conf_r)), np.zeros(len(conf_t))])
    clf = SVC(C=3, gamma="auto", kernel="rbf").fit(x, y)
    return float(1 - clf.predict(conf_f[:, None]).mean())
