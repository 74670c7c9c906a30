"""Baseline unlearning methods, implemented as the papers describe them.

Written by hand because no maintained library offers them for arbitrary PyTorch models
(the SalUn, SCRUB and Unlearn-Sparse code bases are research scripts tied to their own
training loops and datasets). Each follows its paper; every one keeps BatchNorm running
statistics fixed while it updates weights, the same rule as PSG, so the comparison measures
the method and not the statistics drift that forget-only batches cause.

- ``finetune``: SGD on retain-train only (catastrophic forgetting of the rest);
- ``l1_sparse`` (Jia et al., NeurIPS 2023): fine-tuning plus an l1 penalty on the weights
  whose weight decays linearly to zero;
- ``neggrad_plus`` (Kurmanji et al., NeurIPS 2023): ``alpha * CE(retain) - (1 - alpha) *
  CE(forget)``;
- ``random_label`` (Golatkar et al. / Hayase et al.): forget images relabelled at random (never
  their own label), retain images mixed into every step;
- ``salun`` (Fan et al., ICLR 2024): a weight-saliency mask from the forget loss's gradient,
  then random-label training that only moves the salient weights;
- ``scrub`` (Kurmanji et al., NeurIPS 2023): a separate frozen teacher; max-steps push the
  student away from it on forget, min-steps pull it back on retain (KL + CE);
- ``boundary_expand`` (Chen et al., CVPR 2023): add a shadow class, train forget images into
  it, prune it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from medunlearn.data.images import LabelledImages
from medunlearn.device import pick_device
from medunlearn.unlearn.psg import set_bn_eval


def trainable_copy(model: nn.Module, device: torch.device) -> nn.Module:
    """A copy of ``model`` on ``device`` with gradients on and BatchNorm statistics frozen."""
    model = copy.deepcopy(model).to(device)
    for p in model.parameters():
        p.requires_grad_(True)
    model.train()
    set_bn_eval(model)
    return model


def sgd(model: nn.Module, lr: float, momentum: float = 0.9, weight_decay: float = 0.0):
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)


def batches(
    images: LabelledImages, batch_size: int, generator: torch.Generator, device: torch.device
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One shuffled pass over ``images``, moved to ``device``."""
    for x, y in DataLoader(images, batch_size=batch_size, shuffle=True, generator=generator):
        yield x.to(device), y.to(device)


def endless(
    images: LabelledImages, batch_size: int, generator: torch.Generator, device: torch.device
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled batches forever (the retain stream paired with each forget batch)."""
    while True:
        yield from batches(images, batch_size, generator, device)


def random_other_labels(labels: torch.Tensor, num_classes: int, seed: int) -> torch.Tensor:
    """A uniformly random label different from each true label (fixed by ``seed``)."""
    generator = torch.Generator().manual_seed(seed)
    shift = torch.randint(1, num_classes, labels.shape, generator=generator)
    return (labels.cpu() + shift) % num_classes


class _Relabelled(torch.utils.data.Dataset):
    """A view of a forget set with replacement labels."""

    def __init__(self, images: LabelledImages, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.images[i][0], self.labels[i]


def _start(
    model: nn.Module, device: str, seed: int
) -> tuple[nn.Module, torch.device, torch.Generator]:
    dev = pick_device(device)
    torch.manual_seed(seed)
    return trainable_copy(model, dev), dev, torch.Generator().manual_seed(seed)


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
    seed: int = 0,
    device: str = "auto",
) -> nn.Module:
    """Fine-tune on retain-train; with ``l1 > 0`` this is l1-sparse unlearning.

    The l1 weight decays linearly from ``l1`` to 0 over the run (Jia et al.'s schedule),
    so the model is pushed to a sparse solution early and recovers accuracy late.
    """
    del forget  # fine-tuning never looks at the forget set
    student, dev, generator = _start(model, device, seed)
    optimizer = sgd(student, lr, momentum, weight_decay)
    total = max(1, epochs * -(-len(retain) // batch_size))
    step = 0
    for _ in range(epochs):
        for x, y in batches(retain, batch_size, generator, dev):
            loss = F.cross_entropy(student(x), y)
            if l1:
                weight = l1 * (1 - step / total)
                loss = loss + weight * sum(p.abs().sum() for p in student.parameters())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
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
    seed: int = 0,
    device: str = "auto",
) -> nn.Module:
    """Gradient ascent on forget and descent on retain, one retain batch per forget batch."""
    student, dev, generator = _start(model, device, seed)
    optimizer = sgd(student, lr, momentum)
    retain_stream = endless(retain, batch_size, generator, dev)
    for _ in range(epochs):
        for xf, yf in batches(forget, batch_size, generator, dev):
            xr, yr = next(retain_stream)
            loss = alpha * F.cross_entropy(student(xr), yr) - (1 - alpha) * F.cross_entropy(
                student(xf), yf
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return student.eval()


def _random_label_training(
    student: nn.Module,
    forget: LabelledImages,
    retain: LabelledImages,
    num_classes: int,
    epochs: int,
    optimizer: torch.optim.Optimizer,
    batch_size: int,
    seed: int,
    generator: torch.Generator,
    dev: torch.device,
    mask: dict[str, torch.Tensor] | None = None,
) -> nn.Module:
    relabelled = _Relabelled(forget, random_other_labels(forget.labels, num_classes, seed))
    retain_stream = endless(retain, batch_size, generator, dev)
    named = dict(student.named_parameters())
    for _ in range(epochs):
        for xf, yf in DataLoader(
            relabelled, batch_size=batch_size, shuffle=True, generator=generator
        ):
            xf, yf = xf.to(dev), yf.to(dev)
            xr, yr = next(retain_stream)
            loss = F.cross_entropy(student(xf), yf) + F.cross_entropy(student(xr), yr)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if mask is not None:
                for name, m in mask.items():
                    if named[name].grad is not None:
                        named[name].grad.mul_(m)
            optimizer.step()
    return student.eval()


def random_label(
    model: nn.Module,
    forget: LabelledImages,
    retain: LabelledImages,
    *,
    epochs: int = 5,
    lr: float = 1e-3,
    momentum: float = 0.9,
    batch_size: int = 64,
    seed: int = 0,
    device: str = "auto",
) -> nn.Module:
    """Train forget images toward random wrong labels while keeping retain images right."""
    student, dev, generator = _start(model, device, seed)
    optimizer = sgd(student, lr, momentum)
    num_classes = int(student(forget[0][0][None].to(dev)).shape[1])
    return _random_label_training(
        student, forget, retain, num_classes, epochs, optimizer, batch_size, seed, generator, dev
    )


def saliency_mask(
    model: nn.Module, forget: LabelledImages, ratio: float, device: torch.device
) -> dict[str, torch.Tensor]:
    """SalUn's mask: 1 for the ``ratio`` fraction of weights with the largest |grad| of the
    forget loss (one global threshold over all parameters), else 0."""
    if not 0 < ratio <= 1:
        raise ValueError(f"salun mask_ratio must be in (0, 1], got {ratio}")
    model.zero_grad(set_to_none=True)
    for x, y in DataLoader(forget, batch_size=128):
        F.cross_entropy(model(x.to(device)), y.to(device), reduction="sum").backward()
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
    epochs: int = 5,
    lr: float = 1e-3,
    mask_ratio: float = 0.5,
    momentum: float = 0.9,
    batch_size: int = 64,
    seed: int = 0,
    device: str = "auto",
) -> nn.Module:
    """Random-label training restricted to the weights salient for the forget loss."""
    student, dev, generator = _start(model, device, seed)
    mask = saliency_mask(student, forget, mask_ratio, dev)
    optimizer = sgd(student, lr, momentum)
    num_classes = int(student(forget[0][0][None].to(dev)).shape[1])
    return _random_label_training(
        student,
        forget,
        retain,
        num_classes,
        epochs,
        optimizer,
        batch_size,
        seed,
        generator,
        dev,
        mask,
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
    alpha: float = 1.0,
    gamma: float = 1.0,
    temperature: float = 4.0,
    momentum: float = 0.9,
    batch_size: int = 64,
    seed: int = 0,
    device: str = "auto",
) -> nn.Module:
    """SCRUB: a frozen teacher (a separate copy, never updated); in each of the first
    ``msteps`` epochs a max-step pass over forget maximises KL(teacher || student), then every
    epoch a min-step pass over retain minimises ``alpha * KL + gamma * CE``."""
    student, dev, generator = _start(model, device, seed)
    teacher = copy.deepcopy(model).to(dev).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    optimizer = sgd(student, lr, momentum)
    for epoch in range(epochs):
        if epoch < msteps:
            for xf, _ in batches(forget, batch_size, generator, dev):
                with torch.no_grad():
                    t = teacher(xf)
                loss = -_kl(student(xf), t, temperature)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        for xr, yr in batches(retain, batch_size, generator, dev):
            with torch.no_grad():
                t = teacher(xr)
            logits = student(xr)
            loss = alpha * _kl(logits, t, temperature) + gamma * F.cross_entropy(logits, yr)
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
    seed: int = 0,
    device: str = "auto",
) -> nn.Module:
    """Boundary Expanding: widen the head by one shadow class, fine-tune forget images into
    it, then prune the shadow neuron so their features land in no real class's region."""
    del retain  # the paper's method uses forget data only
    student, dev, generator = _start(model, device, seed)
    head: nn.Linear = student.classifier
    num_classes = head.out_features
    wide = nn.Linear(head.in_features, num_classes + 1).to(dev)
    with torch.no_grad():
        wide.weight[:num_classes] = head.weight
        wide.bias[:num_classes] = head.bias
    student.classifier = wide
    optimizer = sgd(student, lr, momentum)
    shadow = torch.full((len(forget),), num_classes, dtype=torch.long)
    for _ in range(epochs):
        for xf, yf in DataLoader(
            _Relabelled(forget, shadow), batch_size=batch_size, shuffle=True, generator=generator
        ):
            loss = F.cross_entropy(student(xf.to(dev)), yf.to(dev))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    pruned = nn.Linear(head.in_features, num_classes).to(dev)
    with torch.no_grad():
        pruned.weight.copy_(wide.weight[:num_classes])
        pruned.bias.copy_(wide.bias[:num_classes])
    student.classifier = pruned
    return student.eval()
