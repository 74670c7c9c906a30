"""Bilevel perturbed-sign-gradient (PSG) unlearning (Nahass et al., arXiv 2505.21872).

Inner problem, on the frozen original model f0 in [0, 1] pixel space: K steps

    x <- clip01(proj_eps(x + step * sign(grad_x CE(f0(x), y) - lambda_k * (x - x0) + gamma * z)))

move each forget image towards the nearest decision boundary; the label f0 gives the moved
image is the "nearest wrong" label y_hat. Outer problem: fine-tune a copy of the model so
forget images take those labels (hard CE, or soft / top-k KL to f0's view of x_adv), plus
``phi`` times a retain-set term. The outer updates see forget and retain images through the
deployed model's training augmentation (``augment``; ``medunlearn.unlearn.augment``).

Written by hand (no library implements this method). It fixes the reference code's defects:
lambda acts in pixel space on (x - x0); no CIFAR normalisation (models normalise inside);
soft targets are probabilities, not raw logits; samples whose search did not cross a
boundary are never trained toward their own label (skipped or retried with a larger radius,
and counted); BatchNorm statistics stay fixed during the outer updates (train mode on
forget-only batches re-estimates them, which was most of the reference's measured effect);
and gamma can be scaled to the gradient's magnitude (``noise_scale: relative``). For class
retirement ``exclude_own_label`` masks the own class out of the soft / top-k targets: f0 at a
boundary point still gives it about half the mass, and training towards that left RetinaMNIST's
retired grade at 0.196 test accuracy where the retrain has 0 (BENCHMARKS.md, issue 26).

With ``steps=1, step_size=eps, lam=0, gamma=0`` this is exactly Boundary Shrink (Chen et al.,
CVPR 2023): one FGSM step to find the neighbour label, then fine-tuning on it.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medunlearn.data.batches import endless_batches, iterate_batches
from medunlearn.data.images import LabelledImages
from medunlearn.models.device import autocast, pick_device
from medunlearn.unlearn.augment import training_transform

NOISES = ("normal", "laplace", "cauchy", "uniform")
SCHEDULES = ("none", "inverse", "exp", "linear")
FORGET_LOSSES = ("hard", "soft", "topk")
RETAIN_LOSSES = ("hard", "distill")
BN_MODES = ("frozen", "recompute", "train")


@dataclass
class PSGConfig:
    """Settings of one PSG run (the ``unlearn`` section of ``params.yaml``).

    Pixel-space settings (``step_size``, ``eps``) are in [0, 1] intensity units; ``lr`` is
    the outer optimiser's learning rate.

    Raises:
        ValueError: a choice outside its allowed values (named ``unlearn.<key>``), or a
            non-positive ``steps``, ``eps`` or ``step_size``.
    """

    # inner problem
    steps: int = 1
    step_size: float = 0.1
    eps: float = 0.1
    lam: float = 0.0
    lam_schedule: str = "none"
    gamma: float = 0.0
    noise: str = "normal"
    noise_scale: str = "absolute"  # absolute | relative (gamma * mean |grad| per sample)
    early_exit: bool = True
    on_failure: str = "skip"  # skip | retry (larger radius, then skip)
    retry_factor: float = 2.0
    max_retries: int = 2
    # outer problem
    forget_loss: str = "hard"
    temperature: float = 1.0
    topk: int = 2
    exclude_own_label: bool = False  # soft/top-k targets give the image's own label no mass
    phi: float = 0.0
    retain_loss: str = "hard"
    optimizer: str = "sgd"
    lr: float = 1e-5
    momentum: float = 0.9
    weight_decay: float = 0.0
    scheduler: str = "none"  # none | cosine (over all outer steps)
    epochs: int = 10
    batch_size: int = 64
    target_forget_accuracy: float | None = None
    bn_mode: str = "frozen"  # frozen | recompute (on retain after) | train (reference bug)
    augment: bool = True  # outer updates see the deployed model's training augmentation
    augmentation: dict[str, Any] | None = None  # None: as recorded in the checkpoint
    seed: int = 0
    device: str = "auto"
    amp: bool = True

    def __post_init__(self) -> None:
        checks = {
            "noise": (self.noise, NOISES),
            "lam_schedule": (self.lam_schedule, SCHEDULES),
            "forget_loss": (self.forget_loss, FORGET_LOSSES),
            "retain_loss": (self.retain_loss, RETAIN_LOSSES),
            "bn_mode": (self.bn_mode, BN_MODES),
            "noise_scale": (self.noise_scale, ("absolute", "relative")),
            "on_failure": (self.on_failure, ("skip", "retry")),
            "optimizer": (self.optimizer, ("sgd", "adam")),
            "scheduler": (self.scheduler, ("none", "cosine")),
        }
        for name, (value, allowed) in checks.items():
            if value not in allowed:
                raise ValueError(f"unlearn.{name}: '{value}' is not one of {', '.join(allowed)}")
        if self.steps < 1 or self.eps <= 0 or self.step_size <= 0:
            raise ValueError("unlearn.steps, eps and step_size must be positive")

    @classmethod
    def from_params(cls, section: dict[str, Any]) -> PSGConfig:
        """Read the base settings of a params section.

        ``by_reason`` overrides are applied by :func:`medunlearn.unlearn.methods.psg_settings`,
        which knows the request; here ``by_reason`` is ignored.

        Args:
            section: the ``unlearn`` section (or a method's settings).

        Returns:
            The settings.

        Raises:
            ValueError: an unknown setting, or a value the config refuses.
        """
        section = {k: v for k, v in section.items() if k != "by_reason"}
        unknown = set(section) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown unlearn setting(s): {sorted(unknown)}")
        return cls(**section)


@dataclass
class BoundarySearch:
    """Output of the inner problem for a set of forget images."""

    x_adv: torch.Tensor
    y_hat: torch.Tensor  # nearest-boundary label f0 gives x_adv
    success: torch.Tensor  # bool: y_hat != y
    retries: int = 0


@dataclass
class UnlearnResult:
    """An unlearned model and the run's statistics (counts, epochs, seconds, settings)."""

    model: nn.Module
    stats: dict[str, Any] = field(default_factory=dict)


def lam_at(lam: float, schedule: str, k: int, steps: int) -> float:
    """Return lambda (the pull back to x0) for inner step ``k`` under a schedule.

    Args:
        lam: the base lambda.
        schedule: ``none`` (constant), ``inverse`` (lam / (k + 1)), ``exp`` (lam * e^-k) or
            ``linear`` (lam * (1 - k / steps)); any other value is treated as linear.
        k: the step, 0-based.
        steps: the number of inner steps.

    Returns:
        lambda at step ``k``.
    """
    if schedule == "none":
        return lam
    if schedule == "inverse":
        return lam / (k + 1)
    if schedule == "exp":
        return lam * math.exp(-k)
    return lam * (1 - k / steps)  # linear


def sample_noise(
    kind: str, shape: torch.Size, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """Draw unit-scale noise of a given family from a seeded generator (on the CPU, then moved).

    Args:
        kind: ``normal``; ``uniform`` (on [-1, 1]); ``laplace`` (scale 1); anything else is
            ``cauchy`` (scale 1).
        shape: the noise's shape.
        generator: the run's seeded CPU generator (advanced).
        device: where the noise goes.

    Returns:
        float32 tensor of ``shape`` on ``device``.
    """
    if kind == "normal":
        z = torch.randn(shape, generator=generator)
    else:
        u = torch.rand(shape, generator=generator).clamp_(1e-7, 1 - 1e-7)
        if kind == "uniform":
            z = 2 * u - 1
        elif kind == "laplace":
            z = -torch.sign(u - 0.5) * torch.log1p(-2 * (u - 0.5).abs())
        else:  # cauchy
            z = torch.tan(math.pi * (u - 0.5))
    return z.to(device)


def boundary_search(
    f0: nn.Module,
    x0: torch.Tensor,
    y: torch.Tensor,
    cfg: PSGConfig,
    generator: torch.Generator,
    eps: float | None = None,
    step_size: float | None = None,
) -> BoundarySearch:
    """Solve the inner problem for one batch, on the frozen model ``f0`` (kept in eval mode).

    K = ``cfg.steps`` perturbed sign-gradient steps in [0, 1] pixel space (module
    docstring), the total displacement projected onto the L-inf ball of radius ``eps``
    each step, then onto [0, 1]. With ``early_exit`` an image stops moving once ``f0``
    changes its label.

    Args:
        f0: the frozen original model.
        x0: forget images (N, C, H, W) in [0, 1], on ``f0``'s device.
        y: their labels (N,).
        cfg: the run's settings (steps, lambda schedule, noise, early exit).
        generator: seeded CPU generator of the noise.
        eps: L-inf radius (pixel units), default ``cfg.eps``.
        step_size: step per iteration (pixel units), default ``cfg.step_size``.

    Returns:
        The moved images (N, C, H, W), the label ``f0`` gives each, and whether it differs
        from ``y``.
    """
    eps = cfg.eps if eps is None else eps
    step_size = cfg.step_size if step_size is None else step_size
    f0.eval()
    x = x0.clone()
    active = torch.ones(len(x0), dtype=torch.bool, device=x0.device)
    for k in range(cfg.steps):
        x_req = x.detach().requires_grad_(True)
        loss = F.cross_entropy(f0(x_req).float(), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x_req)
        with torch.no_grad():
            direction = grad - lam_at(cfg.lam, cfg.lam_schedule, k, cfg.steps) * (x - x0)
            if cfg.gamma:
                z = sample_noise(cfg.noise, x.shape, generator, x.device)
                if cfg.noise_scale == "relative":
                    magnitude = grad.abs().flatten(1).mean(1).view(-1, *([1] * (x.dim() - 1)))
                    z = z * magnitude
                direction = direction + cfg.gamma * z
            # project the step's total displacement onto the L-inf ball, then onto [0, 1]
            delta = ((x - x0) + step_size * torch.sign(direction)).clamp(-eps, eps)
            stepped = (x0 + delta).clamp(0, 1)
            x = torch.where(active.view(-1, *([1] * (x.dim() - 1))), stepped, x)
            if cfg.early_exit and k < cfg.steps - 1:
                active &= f0(x).argmax(1) == y
                if not active.any():
                    break
    with torch.no_grad():
        y_hat = f0(x).argmax(1)
    return BoundarySearch(x_adv=x.detach(), y_hat=y_hat, success=y_hat != y)


def search_forget_set(
    f0: nn.Module, forget: LabelledImages, cfg: PSGConfig, device: torch.device
) -> BoundarySearch:
    """Solve the inner problem over the whole forget set, batch by batch.

    With ``on_failure: retry`` the images whose search did not cross a boundary are searched
    again with ``eps`` and ``step_size`` times ``retry_factor``, up to ``max_retries`` times.

    Args:
        f0: the frozen original model.
        forget: forget-train images.
        cfg: the run's settings.
        device: where the search runs.

    Returns:
        The moved images (N, C, H, W), their labels and success flags, and the number of
        image retries.
    """
    generator = torch.Generator().manual_seed(cfg.seed)
    parts = []
    for images, labels in iterate_batches(forget, cfg.batch_size, device=device):
        found = boundary_search(f0, images, labels, cfg, generator)
        if cfg.on_failure == "retry":
            eps, step = cfg.eps, cfg.step_size
            for _ in range(cfg.max_retries):
                failed = ~found.success
                if not failed.any():
                    break
                eps, step = eps * cfg.retry_factor, step * cfg.retry_factor
                again = boundary_search(
                    f0, images[failed], labels[failed], cfg, generator, eps, step
                )
                found.x_adv[failed], found.y_hat[failed] = again.x_adv, again.y_hat
                found.success[failed] = again.success
                found.retries += int(failed.sum())
        parts.append(found)
    return BoundarySearch(
        x_adv=torch.cat([p.x_adv for p in parts]),
        y_hat=torch.cat([p.y_hat for p in parts]),
        success=torch.cat([p.success for p in parts]),
        retries=sum(p.retries for p in parts),
    )


def forget_loss(
    logits: torch.Tensor, y_hat: torch.Tensor, teacher_logits: torch.Tensor, cfg: PSGConfig
) -> torch.Tensor:
    """Compute the outer forget term; targets are detached and every variant is bounded below by 0.

    - hard: CE to the nearest-boundary label y_hat;
    - soft: KL(softmax(f0(x_adv)/T) || softmax(f(x)/T)) * T^2 (Hinton et al. 2015's scaling);
    - topk: as soft, with the target renormalised over f0(x_adv)'s top-k classes.

    Args:
        logits: the model's logits on the forget images, (B, K).
        y_hat: nearest-boundary labels (B,) (hard).
        teacher_logits: ``f0(x_adv)``, (B, K) (soft, topk).
        cfg: ``forget_loss``, ``temperature``, ``topk``.

    Returns:
        Scalar loss (batch mean).
    """
    if cfg.forget_loss == "hard":
        return F.cross_entropy(logits, y_hat)
    target = F.softmax(teacher_logits.detach() / cfg.temperature, dim=1)
    if cfg.forget_loss == "topk":
        top = target.topk(min(cfg.topk, target.shape[1]), dim=1).indices
        keep = torch.zeros_like(target).scatter_(1, top, 1.0)
        target = target * keep
        target = target / target.sum(1, keepdim=True)
    log_p = F.log_softmax(logits / cfg.temperature, dim=1)
    return F.kl_div(log_p, target, reduction="batchmean") * cfg.temperature**2


def exclude_label(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mask each row's own label out of ``logits``.

    A soft or top-k target from f0 at a boundary point keeps about half its mass on the
    image's own class (the point sits on the boundary): trained towards it, a forgotten image
    of a retired class stays near 50/50 and often keeps its label. With this mask the target
    is f0's view of the other classes only, renormalised (softmax gives the masked class 0),
    which is where a retrain without the class puts all of it.

    Args:
        logits: (N, C).
        labels: (N,) class indices.

    Returns:
        A copy of ``logits`` with each row's ``labels`` entry set to the dtype's minimum.
    """
    masked = logits.clone()
    masked[torch.arange(len(labels), device=logits.device), labels] = torch.finfo(logits.dtype).min
    return masked


def retain_loss(
    logits: torch.Tensor, labels: torch.Tensor, teacher_logits: torch.Tensor | None, cfg: PSGConfig
) -> torch.Tensor:
    """Compute the outer retain term: CE on retain labels, or KL distillation to f0.

    Args:
        logits: the model's logits on retain images, (B, K).
        labels: their labels (B,).
        teacher_logits: ``f0`` on the same images (B, K), or ``None`` (CE is used).
        cfg: ``retain_loss``: ``hard`` (CE) or ``distill`` (KL(softmax(f0) || softmax(f))).

    Returns:
        Scalar loss (batch mean).
    """
    if cfg.retain_loss == "hard" or teacher_logits is None:
        return F.cross_entropy(logits, labels)
    target = F.softmax(teacher_logits.detach(), dim=1)
    return F.kl_div(F.log_softmax(logits, dim=1), target, reduction="batchmean")


def set_bn_eval(model: nn.Module) -> None:
    """Put every BatchNorm layer in eval mode: running statistics stay as they are.

    Args:
        model: the model (modified in place; other layers keep their mode).
    """
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


@torch.no_grad()
def recompute_bn(
    model: nn.Module,
    images: LabelledImages,
    batch_size: int = 128,
    device: torch.device | None = None,
) -> None:
    """Re-estimate BatchNorm running statistics on ``images`` (cumulative average, no updates).

    Used after composition/interpolation and in ``bn_mode: recompute``, on retain data. The
    model's weights are untouched; its modes and BatchNorm momenta are restored afterwards.
    Nothing happens without BatchNorm layers or images.

    Args:
        model: the model (statistics modified in place).
        images: the images to estimate on.
        batch_size: images per forward pass.
        device: where to compute (default: the model's device).
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns or len(images) == 0:
        return
    device = device or next(model.parameters()).device
    saved = [(m.momentum, m.training) for m in bns]
    was_training = model.training
    model.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over all batches
        m.train()
    for batch, _ in iterate_batches(images, batch_size, device=device):
        model(batch)
    for m, (momentum, training) in zip(bns, saved, strict=True):
        m.momentum = momentum
        m.train(training)
    model.train(was_training)


def _optimizer(model: nn.Module, cfg: PSGConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )


@torch.no_grad()
def _accuracy(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int
) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(images), batch_size):
        correct += int(
            (model(images[i : i + batch_size]).argmax(1) == labels[i : i + batch_size]).sum()
        )
    return correct / max(1, len(images))


def psg_unlearn(
    original: nn.Module,
    forget: LabelledImages,
    retain: LabelledImages | None,
    cfg: PSGConfig,
) -> UnlearnResult:
    """Run PSG: boundary search on the frozen original, then outer fine-tuning of a copy.

    Forget images whose search crossed no boundary are never trained on (counted in
    ``n_failed``). BatchNorm statistics stay fixed during the outer updates unless
    ``bn_mode`` says otherwise; training stops early once ``target_forget_accuracy`` is
    reached. ``original`` is never modified.

    Args:
        original: the deployed model.
        forget: forget-train images.
        retain: retain-train images (the ``phi``-weighted retain term), or ``None``.
        cfg: the run's settings.

    Returns:
        The model (eval mode, on ``cfg.device``) and statistics: ``n_forget``,
        ``n_crossed``, ``n_failed``, ``n_retried``, ``epochs_run``, ``augmentation`` (used
        or not), ``inner_seconds``, ``seconds`` and the ``config``.

    Raises:
        RuntimeError: CUDA was requested but is not available.
        ValueError: the recorded or given augmentation is invalid.
    """
    device = pick_device(cfg.device)  # randomness: seeded generators below, not the global RNG
    f0 = copy.deepcopy(original).to(device).eval()
    for p in f0.parameters():
        p.requires_grad_(False)
    if device.type == "cuda":
        f0 = f0.to(memory_format=torch.channels_last)
    start = time.perf_counter()
    found = search_forget_set(f0, forget, cfg, device)
    inner_seconds = time.perf_counter() - start

    x0 = forget.all_images().to(device) if len(forget) else torch.empty(0)
    y = forget.labels.to(device)
    usable = found.success
    x_train, y_hat, x_adv = x0[usable], found.y_hat[usable], found.x_adv[usable]
    with torch.no_grad():
        teacher = (
            torch.cat([f0(x_adv[i : i + 256]).float() for i in range(0, len(x_adv), 256)])
            if len(x_adv)
            else None
        )
        if teacher is not None and cfg.exclude_own_label:
            teacher = exclude_label(teacher, y[usable])

    model = copy.deepcopy(original).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    for p in model.parameters():
        p.requires_grad_(True)
    optimizer = _optimizer(model, cfg)
    generator = torch.Generator().manual_seed(cfg.seed + 1)
    transform = training_transform(original, cfg.seed, cfg.augment, cfg.augmentation)
    retain_iter = None
    if cfg.phi and retain is not None and len(retain):
        retain_iter = endless_batches(
            retain, cfg.batch_size, generator=generator, device=device, augment=transform
        )

    steps_per_epoch = math.ceil(len(x_train) / cfg.batch_size)
    scheduler = None
    if cfg.scheduler == "cosine" and steps_per_epoch:
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=cfg.epochs * steps_per_epoch
        )
    epochs_run = 0
    for _epoch in range(cfg.epochs if len(x_train) else 0):
        if (
            cfg.target_forget_accuracy is not None
            and _accuracy(model, x0, y, cfg.batch_size) <= cfg.target_forget_accuracy
        ):
            break
        order = torch.randperm(len(x_train), generator=generator).to(device)
        for i in range(0, len(order), cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            model.train(cfg.bn_mode == "train")
            if cfg.bn_mode != "train":
                set_bn_eval(model)
            with autocast(device, cfg.amp):
                xb = x_train[idx]
                logits = model(transform(xb) if transform is not None else xb).float()
                loss = forget_loss(
                    logits, y_hat[idx], teacher[idx] if teacher is not None else None, cfg
                )
                if retain_iter is not None:
                    xr, yr = next(retain_iter)
                    with torch.no_grad():
                        teacher_r = f0(xr).float() if cfg.retain_loss == "distill" else None
                    loss = loss + cfg.phi * retain_loss(model(xr).float(), yr, teacher_r, cfg)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
        epochs_run += 1
    if cfg.bn_mode == "recompute" and retain is not None:
        recompute_bn(model, retain, device=device)
    model.eval()
    stats = {
        "n_forget": len(forget),
        "n_crossed": int(usable.sum()),
        "n_failed": int((~usable).sum()),
        "n_retried": found.retries,
        "epochs_run": epochs_run,
        "augmentation": transform is not None,
        "inner_seconds": round(inner_seconds, 3),
        "seconds": round(time.perf_counter() - start, 3),
        "config": asdict(cfg),
    }
    return UnlearnResult(model=model, stats=stats)


def shrink_to_boundary(
    original: nn.Module,
    forget: LabelledImages,
    eps: float = 0.1,
    lr: float = 1e-5,
    epochs: int = 10,
    batch_size: int = 64,
    seed: int = 0,
    momentum: float = 0.9,
) -> nn.Module:
    """Run Boundary Shrink (Chen et al., CVPR 2023), written independently as a test reference.

    One FGSM step of size ``eps`` on the frozen original gives each forget image its
    neighbour label; a copy is fine-tuned with SGD on (x, neighbour label). Like PSG here, it
    keeps BatchNorm statistics fixed and skips images whose label did not change. On the
    model's device as given; no augmentation.

    Args:
        original: the deployed model (not modified).
        forget: forget-train images.
        eps: FGSM step, pixel units ([0, 1] intensity).
        lr: SGD learning rate.
        epochs: passes over the images whose label changed.
        batch_size: images per step.
        seed: the shuffle generator's seed is ``seed + 1`` (as in :func:`psg_unlearn`).
        momentum: SGD momentum.

    Returns:
        The fine-tuned copy, in eval mode.
    """
    f0 = copy.deepcopy(original).eval()
    x0 = forget.all_images()
    y = forget.labels
    labels = []
    for i in range(0, len(x0), batch_size):
        xb = x0[i : i + batch_size].clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(
            F.cross_entropy(f0(xb), y[i : i + batch_size], reduction="sum"), xb
        )
        with torch.no_grad():
            labels.append(f0((xb + eps * grad.sign()).clamp(0, 1)).argmax(1))
    neighbour = torch.cat(labels)
    keep = neighbour != y
    x_train, target = x0[keep], neighbour[keep]
    model = copy.deepcopy(original)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    generator = torch.Generator().manual_seed(seed + 1)
    for _ in range(epochs):
        order = torch.randperm(len(x_train), generator=generator)
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            model.eval()
            loss = F.cross_entropy(model(x_train[idx]), target[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model.eval()
