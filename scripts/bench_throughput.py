"""Benchmark: how close training and every unlearning method come to what the machine can do.

    python scripts/bench_throughput.py [--only allcnn-0.25@28x1 ...] [--methods psg scrub ...]
        [--skip-methods] [--out reports/bench_throughput.json]

For each zoo model at a scenario's input size it reports, for a training epoch through the
shipped ``train_classifier`` (with and without the training augmentation) and for one run of
each unlearning method through ``run_method`` (demo digits materialised at that size, retire
digit 3, one epoch each): images per second (training: images stepped over the seconds of
the training steps, ``EpochLog.train_seconds``, validation excluded; methods: forward passes
per second through any copy of the model), achieved GFLOP/s (floating-point operations
counted by ``torch.utils.flop_counter.FlopCounterMode`` on the same work, divided by the
wall time of an uncounted run) and the fraction of the machine's dense-convolution rate,
measured in the same run by a wide 3x3 convolution, forward and backward. The JSON records
the CPU model, the arguments and the augmentation.

The issue-25 targets read off the table: augmentation costs at most 1.15x an epoch without
it (``aug ratio``), and training the HAM10000 recipe (AllCNN width 0.5 at 32 px, batch 64)
reaches at least half the dense rate (``of dense``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medunlearn.atomic import write_json  # noqa: E402
from medunlearn.data import from_demo, materialise  # noqa: E402
from medunlearn.data.dataset import open_splits  # noqa: E402
from medunlearn.data.request import ForgetRequest, build_cohorts  # noqa: E402
from medunlearn.models import build_model  # noqa: E402
from medunlearn.models.training import TrainConfig, train_classifier  # noqa: E402
from medunlearn.unlearn.methods import run_method  # noqa: E402

# name -> (zoo model, kwargs, image size, channels, what it stands for)
WORKLOADS: dict[str, tuple[str, dict, int, int, str]] = {
    "allcnn-0.25@28x1": ("allcnn", {"width": 0.25}, 28, 1, "demo scenarios"),
    "allcnn-0.5@28x1": ("allcnn", {"width": 0.5}, 28, 1, "pneumonia consent"),
    "allcnn-0.5@28x3": ("allcnn", {"width": 0.5}, 28, 3, "retina class retirement"),
    "allcnn-0.5@32x3": ("allcnn", {"width": 0.5}, 32, 3, "HAM10000 recipe (issue 25)"),
    "allcnn-0.5@64x3": ("allcnn", {"width": 0.5}, 64, 3, "HAM10000 device / outlier"),
    "resnet18@28x3": ("resnet18", {}, 28, 3, "zoo at MedMNIST size"),
    "densenet121@28x3": ("densenet121", {}, 28, 3, "zoo at MedMNIST size"),
    "efficientnet-b0@28x3": ("efficientnet-b0", {}, 28, 3, "zoo at MedMNIST size"),
    "resnet18@64x3": ("resnet18", {}, 64, 3, "zoo at HAM10000 size"),
    "densenet121@64x3": ("densenet121", {}, 64, 3, "zoo at HAM10000 size"),
    "efficientnet-b0@64x3": ("efficientnet-b0", {}, 64, 3, "zoo at HAM10000 size"),
}
METHODS = (
    "finetune",
    "l1_sparse",
    "neggrad_plus",
    "random_label",
    "boundary_shrink",
    "boundary_expand",
    "scrub",
    "salun",
    "psg",
    "psg_compose",
)
# one pass of each method, so every method's cost per image is comparable
ONE_EPOCH: dict[str, dict] = {
    "finetune": {"epochs": 1},
    "l1_sparse": {"epochs": 1},
    "neggrad_plus": {"epochs": 1},
    "random_label": {"epochs": 1},
    "boundary_shrink": {"epochs": 1},
    "boundary_expand": {"epochs": 1},
    "scrub": {"epochs": 1, "msteps": 1},
    "salun": {"epochs": 1},
    "psg": {"epochs": 1},
    "psg_compose": {"psg": {"epochs": 1}, "sweep": [{"lr": 1e-3}], "alphas": [0.5]},
}
# every warp on (the HAM10000 recipe flips too): a flip is a separate branch of the warp
AUGMENTATION = {"flip": True, "rotate_deg": 10, "shift": 0.1}


def _conv_backward_flop(
    grad_out_shape,
    x_shape,
    w_shape,
    bias,
    stride,
    padding,
    dilation,
    transposed,
    output_padding,
    groups,
    output_mask,
    out_shape=None,
    **kwargs,
) -> int:
    """FLOPs of ``aten.convolution_backward`` that count grouped convolutions right.

    torch 2.13's formula ignores ``groups`` for the weight gradient (its docstring skips
    them "for the sake of brevity"), so a depthwise convolution's backward is counted
    ``groups`` times too high: EfficientNet-B0's training step came out at 41x its forward
    instead of about 3x. Here each gradient costs what the forward costs (Kaplan et al.
    2020's 2N forward / 4N backward): ``2 * prod(grad_out) * prod(w[1:])`` for the input
    gradient and the same for the weight gradient, each only when asked for. Transposed
    convolutions (none in the zoo) keep torch's formula.
    """
    if transposed:
        return _TORCH_CONV_BACKWARD(
            grad_out_shape,
            x_shape,
            w_shape,
            bias,
            stride,
            padding,
            dilation,
            transposed,
            output_padding,
            groups,
            output_mask,
            out_shape,
            **kwargs,
        )
    forward = 2 * math.prod(grad_out_shape) * math.prod(w_shape[1:])
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


_TORCH_CONV_BACKWARD = flop_counter.conv_backward_flop


def flop_counter_mode() -> FlopCounterMode:
    """``FlopCounterMode`` with the grouped-convolution backward counted right."""
    return FlopCounterMode(
        display=False,
        custom_mapping={torch.ops.aten.convolution_backward: _conv_backward_flop},
    )


class _NoModules:
    """Stands in for FlopCounterMode's module tracker, whose backward hooks break
    ``torch.autograd.grad`` with respect to inputs (PSG's boundary search): every FLOP is
    counted under one global entry, the total is the same."""

    parents = ("Global",)

    def __enter__(self):
        return self

    def __exit__(self, *args) -> None:
        return None


def counted(work: Callable[[], object]) -> tuple[float, float]:
    """(seconds of an uncounted run, FLOPs of a counted run) of the same ``work``."""
    start = time.perf_counter()
    work()
    seconds = time.perf_counter() - start
    counter = flop_counter_mode()
    counter.mod_tracker = _NoModules()
    with counter:
        work()
    return seconds, float(counter.get_total_flops())


def dense_conv_rate(repeats: int = 3) -> dict:
    """Best GFLOP/s of a wide 3x3 convolution, forward + backward (weights and input)."""
    best: dict = {}
    for channels, size, batch in ((256, 16, 32), (128, 32, 32)):
        conv = torch.nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        x = torch.randn(batch, channels, size, size, requires_grad=True)

        def step(conv=conv, x=x) -> None:
            conv(x).sum().backward()

        step()  # warm-up
        with flop_counter_mode() as counter:
            step()
        flops = counter.get_total_flops()
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(3):
                step()
            rate = 3 * flops / (time.perf_counter() - start) / 1e9
            if rate > best.get("gflops", 0):
                best = {"gflops": round(rate, 1), "shape": [batch, channels, size, size]}
    return best


def flops_per_image(model: torch.nn.Module, shape: tuple, batch: int = 64) -> tuple[float, float]:
    """FLOPs per image of one training step (forward, loss, backward) and of evaluation."""
    x = torch.rand(batch, *shape)
    y = torch.zeros(batch, dtype=torch.long)
    model.train()
    with flop_counter_mode() as counter:
        F.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    train = counter.get_total_flops() / batch
    model.eval()
    with torch.no_grad(), flop_counter_mode() as counter:
        model(x)
    return train, counter.get_total_flops() / batch


def first(images, limit: int):
    """A seeded random ``limit`` rows of ``images`` (all of them when fewer)."""
    if len(images) <= limit:
        return images
    keep = torch.zeros(len(images), dtype=torch.bool)
    keep[torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:limit]] = True
    return images.subset(keep.numpy())


def train_rows(name: str, data, epochs: int, limit: int) -> list[dict]:
    model_name, kwargs, size, channels, _ = WORKLOADS[name]
    classes = data.info.class_names
    train, val = first(data.train, limit), first(data.val, limit // 4)
    per_train, per_eval = flops_per_image(
        build_model(model_name, len(classes), channels, size, seed=0, **kwargs),
        (channels, size, size),
    )
    # train_classifier's rule: drop a short last batch unless the set is one batch or less
    stepped = len(train) - len(train) % 64 if len(train) > 64 else len(train)
    step_flops = per_train * stepped  # the training steps alone (validation is not timed)
    rows = []
    seconds = {}
    for aug in (False, True):
        cfg = TrainConfig(
            epochs=epochs,
            batch_size=64,
            lr=1e-3,
            augmentation=AUGMENTATION if aug else {},
            select_metric="accuracy",
            seed=0,
        )
        model = build_model(model_name, len(classes), channels, size, seed=0, **kwargs)
        result = train_classifier(model, train, val, classes, cfg)
        # the first epoch pays for allocation and warm-up: the steady state is what repeats;
        # the training steps only (an epoch's validation pass is the same with or without)
        steady = [h.train_seconds for h in result.history[1:]] or [result.history[0].train_seconds]
        seconds[aug] = min(steady)
        rows.append(
            {
                "workload": name,
                "phase": "train (aug)" if aug else "train",
                "seconds": round(seconds[aug], 3),
                "images_per_s": round(stepped / seconds[aug], 1),
                "n_train": stepped,
                "gflops": round(step_flops / seconds[aug] / 1e9, 1),
            }
        )
    rows[1]["aug_ratio"] = round(seconds[True] / seconds[False], 3)
    return rows


def method_rows(name: str, data, methods: list[str], retain_limit: int) -> list[dict]:
    model_name, kwargs, size, channels, _ = WORKLOADS[name]
    classes = data.info.class_names
    request = ForgetRequest("class_retirement", {"labels": ["3"]})
    cohorts = build_cohorts(data.manifest, data.train, data.val, data.test, classes, request)
    if len(cohorts.retain_train) > retain_limit:  # a bounded, seeded slice of retain-train
        keep = torch.zeros(len(cohorts.retain_train), dtype=torch.bool)
        keep[
            torch.randperm(len(keep), generator=torch.Generator().manual_seed(0))[:retain_limit]
        ] = True
        cohorts.retain_train = cohorts.retain_train.subset(keep.numpy())
    model = build_model(model_name, len(classes), channels, size, seed=0, **kwargs)
    model.train_augmentation = AUGMENTATION
    model.eval()
    forwarded = {"n": 0}

    def count(_module, args) -> None:
        forwarded["n"] += len(args[0])

    rows = []
    for method in methods:
        cfg = ONE_EPOCH[method]
        handle = model.register_forward_pre_hook(count)  # copied into every copy of the model
        forwarded["n"] = 0
        seconds, flops = counted(lambda m=method, c=cfg: run_method(m, model, cohorts, c))
        images = forwarded["n"] // 2  # the counted run forwarded as many again
        handle.remove()
        rows.append(
            {
                "workload": name,
                "phase": method,
                "seconds": round(seconds, 3),
                # every forward pass through any copy of the model (a teacher, PSG's search,
                # a BatchNorm re-estimate): not distinct images
                "forwards_per_s": round(images / seconds, 1),
                "gflops": round(flops / seconds / 1e9, 1),
                "n_forget": len(cohorts.forget_train),
                "n_retain": len(cohorts.retain_train),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux; ``platform`` elsewhere only gives the
    architecture): the same script on two machines must say which one each number is from."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} CPUs"
    except OSError:  # no /proc (macOS, Windows) or unreadable: fall through to platform
        return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", nargs="*", choices=sorted(WORKLOADS), default=list(WORKLOADS))
    parser.add_argument("--methods", nargs="*", choices=METHODS, default=list(METHODS))
    parser.add_argument(
        "--method-workloads",
        nargs="*",
        choices=sorted(WORKLOADS),
        default=None,
        help="workloads whose unlearning methods are timed (default: every --only workload)",
    )
    parser.add_argument("--skip-methods", action="store_true")
    parser.add_argument("--epochs", type=int, default=3, help="epochs; the fastest after the first")
    parser.add_argument("--train-limit", type=int, default=512, help="training images timed")
    parser.add_argument("--retain-limit", type=int, default=256, help="retain-train images")
    parser.add_argument("--out", default="reports/bench_throughput.json")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    dense = dense_conv_rate()
    print(json.dumps({"dense_conv": dense}), flush=True)
    rows: list[dict] = []
    method_workloads = args.only if args.method_workloads is None else args.method_workloads
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only:
            _, _, size, channels, _ = WORKLOADS[name]
            target = Path(tmp) / f"demo{size}x{channels}"
            if not target.exists():
                materialise(from_demo(), target, image_size=size, channels=channels)
            data = open_splits(target)
            for row in train_rows(name, data, args.epochs, args.train_limit):
                print(json.dumps(row), flush=True)
                rows.append(row)
            if not args.skip_methods and name in method_workloads:
                rows += method_rows(name, data, args.methods, args.retain_limit)
    for row in rows:
        row["of_dense"] = round(row["gflops"] / dense["gflops"], 3)
    machine = {
        "threads": torch.get_num_threads(),
        "cpu": cpu_model(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }
    settings = {**vars(args), "augmentation": AUGMENTATION}
    write_json(
        args.out, {"machine": machine, "settings": settings, "dense_conv": dense, "rows": rows}
    )
    print(f"\ndense 3x3 convolution: {dense['gflops']} GFLOP/s ({machine})")
    print(
        "| workload | phase | s | images/s (train) or forwards/s | GFLOP/s | of dense | aug ratio |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        rate = r.get("images_per_s", r.get("forwards_per_s"))
        print(
            f"| {r['workload']} | {r['phase']} | {r['seconds']} | {rate} | "
            f"{r['gflops']} | {r['of_dense']:.2f} | {r.get('aug_ratio', '')} |"
        )


if __name__ == "__main__":
    main()
