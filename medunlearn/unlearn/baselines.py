"""Baseline unlearning methods, implemented as the papers describe them.

Written by hand because no maintained library offers them for arbitrary PyTorch models
(the SalUn, SCRUB and Unlearn-Sparse code bases are research scripts tied to their own
training loops and datasets). Each follows its paper; every one keeps BatchNorm running
statistics fixed while it updates weights, the same rule as PSG, so the comparison measures
the method and not the statistics drift that forget-only batches cause; and every one sees
training images through the deployed model's training augmentation (``augment``,
``augmentation``: ``medunlearn.unlearn.augment``).

- ``finetune``: SGD on retain-train only (catastrophic forgetting of the rest); with
  ``schedule="cosine"`` the learning rate decays from ``lr`` to 0 over the run
  (``torch.optim.lr_scheduler.CosineAnnealingLR``, stepped per batch), so a high starting
  rate can shake memorised rows loose and the decay lets the model settle on retain again
  (the fine-tuning baseline of Jia et al. 2023 and Fan et al. 2024 decays its rate too);
  ``max_grad_norm`` clips each batch's gradient norm, which such a rate needs;
- ``l1_sparse`` (Jia et al., NeurIPS 2023): fine-tuning plus an l1 penalty on the weights
  whose weight decays linearly to zero;
- ``neggrad_plus`` (Kurmanji et al., NeurIPS 2023): ``alpha * CE(retain) - (1 - alpha) *
  CE(forget)``;
- ``random_label`` (Golatkar et al. 2020; as in SalUn's reference code, ``unlearn/RL.py``,
  CIFAR-10 path): every epoch is one pass over the forget set with labels drawn uniformly
  from *all* classes, redrawn every batch (the true label can come up), then one full pass
  over the retain set with true labels. Budget: ``epochs`` x (|forget| + |retain|) images;
- ``salun`` (Fan et al., ICLR 2024): a weight-saliency mask (the ``mask_ratio`` = 0.5 share
  of weights with the largest |gradient| of the forget loss, one global threshold, as in
  ``generate_mask.py``), then the same random-label training moving only masked weights;
- ``scrub`` (Kurmanji et al., NeurIPS 2023): a separate frozen teacher; in the first
  ``msteps`` epochs a max-step pass over forget maximises KL(teacher || student), then every
  epoch a min-step pass over retain minimises ``gamma * CE + alpha * KL``. Defaults are the
  paper code's (meghdadk/SCRUB, ``SCRUB_args``: SGD lr 5e-4, momentum 0.9, weight decay
  5e-4, alpha 0.001, gamma 0.99, temperature 4, msteps 2, 3 epochs, retain batch 128,
  forget batch 32, lr x 0.1 after each of epochs 3, 5, 9);
- ``boundary_expand`` (Chen et al., CVPR 2023): add a shadow class, train forget images into
  it, prune it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from medunlearn.data.augment import BatchAugmentation
from medunlearn.data.batches import endless_batches, iterate_batches
from medunlearn.data.images import LabelledImages
from medunlearn.models.device import GLOBAL_RNG_LOCK, pick_device
from medunlearn.unlearn.augment import training_transform
from medunlearn.unlearn.psg import set_bn_eval


def trainable_copy(model: nn.Module, device: torch.device) -> nn.Module:
    """Copy ``model`` to ``device`` with gradients on and BatchNorm statistics frozen.

    Args:
        model: the deployed model (not modified).
        device: where the copy goes.

    Returns:
        The copy, in train mode except its BatchNorm layers (eval mode).
    """
    model = copy.deepcopy(model).to(device)
    for p in model.parameters():
        p.requires_grad_(True)
    model.train()
    set_bn_eval(model)
    return model


def sgd(model: nn.Module, lr: float, momentum: float = 0.9, weight_decay: float = 0.0):
    """Build SGD over all of ``model``'s parameters.

    Args:
        model: the model to train.
        lr: learning rate.
        momentum: momentum.
        weight_decay: L2 weight decay.

    Returns:
        ``torch.optim.SGD``.
    """
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)


def batches(
    images: LabelledImages,
    batch_size: int,
    generator: torch.Generator,
    device: torch.device,
    augment: BatchAugmentation | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Make one shuffled pass over ``images`` on ``device``, through ``augment`` when given.

    Args:
        images: the images.
        batch_size: images per batch.
        generator: the run's seeded CPU generator.
        device: where the batches go.
        augment: the run's augmentation, or ``None``.

    Returns:
        An iterator of ``(x (B, C, H, W) in [0, 1], y (B,))`` batches.
    """
    return iterate_batches(
        images, batch_size, shuffle=True, generator=generator, device=device, augment=augment
    )


def _start(
    model: nn.Module, device: str, seed: int
) -> tuple[nn.Module, torch.device, torch.Generator]:
    dev = pick_device(device)  # randomness: the returned generator, not the global RNG
    return trainable_copy(model, dev), dev, torch.Generator().manual_seed(seed)


def _augment(
    model: nn.Module, seed: int, augment: bool, spec: dict | None
) -> BatchAugmentation | None:
    """The run's training augmentation (one seeded stream for forget and retain batches)."""
    return training_transform(model, seed, augment, spec)


def finetune(
    model: nn.Module,
    forget: LabelledImages,
    retain: LabelledImages,
    *,
    epochs: int = 2,
    lr: float = 0.003,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    batch_size: int = 64,
    l1: float = 0.0,
    schedule: str = "constant",
    max_grad_norm: float = 0.0,
    augment: bool = True,
    augmentation: dict | None = None,
    seed: int = 0,
    device: str = "auto",
) -> nn.Module:
    """Fine-tune on retain-train; with ``l1 > 0`` this is l1-sparse unlearning.

    SGD with cross-entropy on retain-train only (the forget set is not used). The l1 weight
    decays linearly from ``l1`` to 0 over the run (Jia et al., NeurIPS 2023), so the model is
    pushed to a sparse solution early and recovers accuracy late.

    Args:
        model: the deployed model (not modified).
        forget: forget-train images (unused: the signature is every baseline's).
        retain: retain-train images.
        epochs: passes over ``retain``.
        lr: SGD learning rate (the start of the cosine schedule).
        momentum: SGD momentum.
        weight_decay: L2 weight decay.
        batch_size: images per step.
        l1: starting weight of the l1 penalty on all parameters (0: plain fine-tuning).
        schedule: ``"constant"`` (``lr`` throughout) or ``"cosine"`` (``lr`` decays to 0
            over the run's batches).
        max_grad_norm: when > 0, each batch's gradient is rescaled to at most this total
            l2 norm (``torch.nn.utils.clip_grad_norm_``) before the step: SGD at lr 1e-2
            from the demo's deployed model diverged to NaN without it (BatchNorm is frozen,
            so nothing else bounds the first steps).
        augment: use the model's recorded training augmentation.
        augmentation: settings replacing the recorded augmentation.
        seed: seed of the shuffling and the augmentation.
        device: ``auto``, ``cpu`` or ``cuda``.

    Returns:
        The fine-tuned copy, in eval mode.

    Raises:
        ValueError: an unknown ``schedule``, a negative ``max_grad_norm``, or an invalid
            augmentation.
    """
    if schedule not in ("constant", "cosine"):
        raise ValueError(f"finetune: schedule must be 'constant' or 'cosine', not {schedule!r}")
    if max_grad_norm < 0:  # torch would flip the gradient: gradient ascent, silently
        raise ValueError(f"finetune: max_grad_norm must be >= 0 (0: off), not {max_grad_norm}")
    student, dev, generator = _start(model, device, seed)
    aug = _augment(model, seed, augment, augmentation)
    optimizer = sgd(student, lr, momentum, weight_decay)
    total = max(1, epochs * -(-len(retain) // batch_size))
    scheduler = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
        if schedule == "cosine"
        else None
    )
    step = 0
    for _ in range(epochs):
        for x, y in batches(retain, batch_size, generator, dev, aug):
            loss = F.cross_entropy(student(x), y)
            if l1:
                weight = l1 * (1 - step / total)
                loss = loss + weight * sum(p.abs().sum() for p in student.parameters())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if max_grad_norm:
                torch.nn.utils.clip_grad_norm_(student.parameters(), max_grad_norm)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            step += 1
    return student.eval()


def neggrad_plus(
    model: nn.Module,
    forget: LabelledImages,
    retain: LabelledImages,
    *,
    epochs: int = 5,
    lr: float = 1e-3,
    alpha: float = 0.95,
    momentum: float = 0.9,
    batch_size: int = 64,
    augment: bool = True,
    augmentation: dict | None = None,
    seed: int = 0,
    device: str = "auto",
) -> nn.Module:
    """Run NegGrad+ (Kurmanji et al., NeurIPS 2023): ascent on forget, descent on retain.

    Each step: ``alpha * CE(retain batch) - (1 - alpha) * CE(forget batch)``, one retain
    batch (an endless shuffled stream) per forget batch.

    Args:
        model: the deployed model (not modified).
        forget: forget-train images.
        retain: retain-train images.
        epochs: passes over ``forget``.
        lr: SGD learning rate.
        alpha: weight of the retain term, in [0, 1].
        momentum: SGD momentum.
        batch_size: images per batch (both sides).
        augment: use the model's recorded training augmentation.
        augmentation: settings replacing the recorded augmentation.
        seed: seed of the shuffling and the augmentation.
        device: ``auto``, ``cpu`` or ``cuda``.

    Returns:
        The unlearned copy, in eval mode.

    Raises:
        ValueError: ``retain`` is empty (on the first step) or the augmentation is invalid.
    """
    student, dev, generator = _start(model, device, seed)
    aug = _augment(model, seed, augment, augmentation)
    optimizer = sgd(student, lr, momentum)
    retain_stream = endless_batches(
        retain, batch_size, generator=generator, device=dev, augment=aug
    )
    for _ in range(epochs):
        for xf, yf in batches(forget, batch_size, generator, dev, aug):
            xr, yr = next(retain_stream)
            loss = alpha * F.cross_entropy(student(xr), yr) - (1 - alpha) * F.cross_entropy(
                student(xf), yf
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return student.eval()


def uniform_labels(n: int, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """Draw ``n`` labels uniformly from all ``num_classes`` (SalUn's ``torch.randint``).

    Args:
        n: number of labels.
        num_classes: number of classes.
        generator: the run's seeded CPU generator.

    Returns:
        int64 tensor (n,) on the CPU, values in [0, num_classes).
    """
    return torch.randint(0, num_classes, (n,), generator=generator)


def _masked_step(
    optimizer: torch.optim.Optimizer,
    loss: torch.Tensor,
    named: dict[str, torch.Tensor],
    mask: dict[str, torch.Tensor] | None,
    mask_decay: float = 0.0,
) -> None:
    """Take one optimiser step; with a mask, only masked weights move.

    Weight decay (``mask_decay``) and the update reach only the masked weights (the
    reference restores masked-out weights after each step instead).
    """
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if mask is not None:
        for name, m in mask.items():
            param = named[name]
            if param.grad is not None:
                if mask_decay:
                    param.grad.add_(param.detach(), alpha=mask_decay)
                param.grad.mul_(m)
    optimizer.step()


def _random_label_training(
    student: nn.Module,
    forget: LabelledImages,
    retain: LabelledImages,
    num_classes: int,
    epochs: int,
    optimizer: torch.optim.Optimizer,
    batch_size: int,
    generator: torch.Generator,
    dev: torch.device,
    mask: dict[str, torch.Tensor] | None = None,
    mask_decay: float = 0.0,
    aug: BatchAugmentation | None = None,
) -> nn.Module:
    """SalUn's RL epoch, ``epochs`` times: forget with fresh uniform labels, then retain."""
    named = dict(student.named_parameters())
    for _ in range(epochs):
        for xf, _ in batches(forget, batch_size, generator, dev, aug):
            yf = uniform_labels(len(xf), num_classes, generator).to(dev)
            loss = F.cross_entropy(student(xf), yf)
            _masked_step(optimizer, loss, named, mask, mask_decay)
        for xr, yr in batches(retain, batch_size, generator, dev, aug):
            loss = F.cross_entropy(student(xr), yr)
            _masked_step(optimizer, loss, named, mask, mask_decay)
    return student.eval()


def random_label(
    model: nn.Module,
    forget: LabelledImages,
    retain: LabelledImages,
    *,
    epochs: int = 3,
    lr: float = 1e-3,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    batch_size: int = 64,
    augment: bool = True,
    augmentation: dict | None = None,
    seed: int = 0,
    device: str = "auto",
) -> nn.Module:
    """Run random-label unlearning as SalUn's reference code runs it (see the module docstring).

    SalUn trains 10 such epochs on CIFAR-10 (SGD, momentum 0.9, weight decay 5e-4); the
    default here is 3, each a full pass over the retain set, to fit the CPU budget.

    Args:
        model: the deployed model (not modified).
        forget: forget-train images.
        retain: retain-train images.
        epochs: forget-then-retain passes.
        lr: SGD learning rate.
        momentum: SGD momentum.
        weight_decay: L2 weight decay.
        batch_size: images per batch.
        augment: use the model's recorded training augmentation.
        augmentation: settings replacing the recorded augmentation.
        seed: seed of the labels, the shuffling and the augmentation.
        device: ``auto``, ``cpu`` or ``cuda``.

    Returns:
        The unlearned copy, in eval mode.
    """
    student, dev, generator = _start(model, device, seed)
    aug = _augment(model, seed, augment, augmentation)
    optimizer = sgd(student, lr, momentum, weight_decay)
    num_classes = int(student.classifier.out_features)
    return _random_label_training(
        student, forget, retain, num_classes, epochs, optimizer, batch_size, generator, dev, aug=aug
    )


def saliency_mask(
    model: nn.Module, forget: LabelledImages, ratio: float, device: torch.device
) -> dict[str, torch.Tensor]:
    """Compute SalUn's weight-saliency mask (Fan et al., ICLR 2024, ``generate_mask.py``).

    1 for the ``ratio`` fraction of weights with the largest |gradient| of the summed forget
    cross-entropy (one global threshold over all parameters; ties at the threshold are
    kept), else 0. Computed on un-augmented images; the gradients are cleared afterwards.

    Args:
        model: the model (its gradients are used and reset).
        forget: forget-train images.
        ratio: share of weights kept, in (0, 1].
        device: where the images go (the model's device).

    Returns:
        Parameter name -> float 0/1 mask of the parameter's shape.

    Raises:
        ValueError: ``ratio`` outside (0, 1].
    """
    if not 0 < ratio <= 1:
        raise ValueError(f"salun mask_ratio must be in (0, 1], got {ratio}")
    model.zero_grad(set_to_none=True)
    for x, y in iterate_batches(forget, 128, device=device):
        F.cross_entropy(model(x), y, reduction="sum").backward()
    grads = {n: p.grad.abs() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    flat = torch.cat([g.flatten() for g in grads.values()])
    k = max(1, int(round(ratio * flat.numel())))
    threshold = torch.topk(flat, k).values.min()
    return {n: (g >= threshold).float() for n, g in grads.items()}


def salun(
    model: nn.Module,
    forget: LabelledImages,
    retain: LabelledImages,
    *,
    epochs: int = 3,
    lr: float = 1e-3,
    mask_ratio: float = 0.5,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    batch_size: int = 64,
    augment: bool = True,
    augmentation: dict | None = None,
    seed: int = 0,
    device: str = "auto",
) -> nn.Module:
    """Run SalUn: the saliency mask, then random-label training moving only the masked weights.

    The mask is computed on un-augmented forget images, as in the paper's
    ``generate_mask.py``; weight decay is applied to the masked weights only.

    Args:
        model: the deployed model (not modified).
        forget: forget-train images.
        retain: retain-train images.
        epochs: forget-then-retain passes.
        lr: SGD learning rate.
        mask_ratio: share of weights that may move, in (0, 1].
        momentum: SGD momentum.
        weight_decay: L2 weight decay, on masked weights only.
        batch_size: images per batch.
        augment: use the model's recorded training augmentation.
        augmentation: settings replacing the recorded augmentation.
        seed: seed of the labels, the shuffling and the augmentation.
        device: ``auto``, ``cpu`` or ``cuda``.

    Returns:
        The unlearned copy, in eval mode.

    Raises:
        ValueError: ``mask_ratio`` outside (0, 1], or an invalid augmentation.
    """
    student, dev, generator = _start(model, device, seed)
    mask = saliency_mask(student, forget, mask_ratio, dev)
    aug = _augment(model, seed, augment, augmentation)
    optimizer = sgd(student, lr, momentum, 0.0)  # decay applied to masked weights only
    num_classes = int(student.classifier.out_features)
    return _random_label_training(
        student,
        forget,
        retain,
        num_classes,
        epochs,
        optimizer,
        batch_size,
        generator,
        dev,
        mask,
        weight_decay,
        aug,
    )


def _kl(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    return (
        F.kl_div(
            F.log_softmax(student_logits / temperature, dim=1),
            F.softmax(teacher_logits / temperature, dim=1),
            reduction="batchmean",
        )
        * temperature**2
    )


def scrub(
    model: nn.Module,
    forget: LabelledImages,
    retain: LabelledImages,
    *,
    epochs: int = 3,
    msteps: int = 2,
    lr: float = 5e-4,
    lr_decay_epochs: tuple[int, ...] = (3, 5, 9),
    lr_decay_rate: float = 0.1,
    alpha: float = 0.001,
    gamma: float = 0.99,
    temperature: float = 4.0,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    batch_size: int = 128,
    forget_batch_size: int = 32,
    augment: bool = True,
    augmentation: dict | None = None,
    seed: int = 0,
    device: str = "auto",
) -> nn.Module:
    """Run SCRUB (Kurmanji et al., NeurIPS 2023) with the paper code's defaults.

    See the module docstring. Epochs count from 1; the learning rate is
    ``lr * lr_decay_rate ** k`` where k = number of ``lr_decay_epochs`` strictly below the
    epoch (repdistiller's ``adjust_learning_rate``). KL terms are scaled by T^2.

    Args:
        model: the deployed model (the frozen teacher; not modified).
        forget: forget-train images.
        retain: retain-train images.
        epochs: epochs in all (each ends with a min-step pass over ``retain``).
        msteps: the first epochs that start with a max-step pass over ``forget``.
        lr: starting SGD learning rate.
        lr_decay_epochs: epochs after which the rate is multiplied by ``lr_decay_rate``.
        lr_decay_rate: the rate's factor at each decay epoch.
        alpha: weight of the KL term in the min step.
        gamma: weight of the cross-entropy in the min step.
        temperature: distillation temperature T.
        momentum: SGD momentum.
        weight_decay: L2 weight decay.
        batch_size: retain images per batch.
        forget_batch_size: forget images per batch.
        augment: use the model's recorded training augmentation.
        augmentation: settings replacing the recorded augmentation.
        seed: seed of the shuffling and the augmentation.
        device: ``auto``, ``cpu`` or ``cuda``.

    Returns:
        The unlearned student, in eval mode.
    """
    student, dev, generator = _start(model, device, seed)
    aug = _augment(model, seed, augment, augmentation)
    teacher = copy.deepcopy(model).to(dev).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    optimizer = sgd(student, lr, momentum, weight_decay)
    for epoch in range(1, epochs + 1):
        decay = sum(epoch > e for e in lr_decay_epochs)
        for group in optimizer.param_groups:
            group["lr"] = lr * lr_decay_rate**decay
        if epoch <= msteps:
            for xf, _ in batches(forget, forget_batch_size, generator, dev, aug):
                with torch.no_grad():
                    t = teacher(xf)
                loss = -_kl(student(xf), t, temperature)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        for xr, yr in batches(retain, batch_size, generator, dev, aug):
            with torch.no_grad():
                t = teacher(xr)
            logits = student(xr)
            loss = gamma * F.cross_entropy(logits, yr) + alpha * _kl(logits, t, temperature)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return student.eval()


def boundary_expand(
    model: nn.Module,
    forget: LabelledImages,
    retain: LabelledImages,
    *,
    epochs: int = 10,
    lr: float = 1e-3,
    momentum: float = 0.9,
    batch_size: int = 64,
    augment: bool = True,
    augmentation: dict | None = None,
    seed: int = 0,
    device: str = "auto",
) -> nn.Module:
    """Run Boundary Expanding (Chen et al., CVPR 2023).

    Widen the head by one shadow class (its weights seeded), fine-tune forget images into it,
    then prune the shadow neuron so their features land in no real class's region.

    Args:
        model: the deployed model (not modified; its head must be ``classifier``, a
            ``nn.Linear``).
        forget: forget-train images.
        retain: retain-train images (unused: the signature is every baseline's).
        epochs: passes over ``forget``.
        lr: SGD learning rate.
        momentum: SGD momentum.
        batch_size: images per step.
        augment: use the model's recorded training augmentation.
        augmentation: settings replacing the recorded augmentation.
        seed: seed of the shadow neuron, the shuffling and the augmentation.
        device: ``auto``, ``cpu`` or ``cuda``.

    Returns:
        The unlearned copy (original head shape), in eval mode.
    """
    student, dev, generator = _start(model, device, seed)
    aug = _augment(model, seed, augment, augmentation)
    head: nn.Linear = student.classifier
    num_classes = head.out_features
    with GLOBAL_RNG_LOCK, torch.random.fork_rng():  # the shadow neuron's init: seeded
        torch.manual_seed(seed)
        wide = nn.Linear(head.in_features, num_classes + 1).to(dev)
    with torch.no_grad():
        wide.weight[:num_classes] = head.weight
        wide.bias[:num_classes] = head.bias
    student.classifier = wide
    optimizer = sgd(student, lr, momentum)
    for _ in range(epochs):
        for xf, _ in batches(forget, batch_size, generator, dev, aug):
            shadow = torch.full((len(xf),), num_classes, dtype=torch.long, device=dev)
            loss = F.cross_entropy(student(xf), shadow)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    pruned = nn.Linear(head.in_features, num_classes).to(dev)
    with torch.no_grad():
        pruned.weight.copy_(wide.weight[:num_classes])
        pruned.bias.copy_(wide.bias[:num_classes])
    student.classifier = pruned
    return student.eval()
