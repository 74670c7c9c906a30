"""Conventions every plot follows: method colours, plain log ticks, titles naming what is plotted.

One colour per unlearning method, plain tick labels on log axes, and a title naming the
model, its version and the forget request.

A method keeps its colour in every figure (the revision's candidate trade-off, the
benchmark's trade-off and cost plots), whatever other methods a figure shows: colours come
from the fixed table :data:`METHOD_COLOURS`, never from the order in which methods happen
to appear. A name the table does not know (a method added later) gets a colour from
:data:`SPARE_COLOURS` chosen by a hash of its name, so it too is the same in every figure.

Here, below ``unlearn``, ``revision`` and ``benchmark`` in the room order, so that all of
them can use it; the table's keys are checked against ``medunlearn.unlearn.methods.METHODS``
by the tests (this module cannot import it).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

# tab10/tab20 colours; a method and its variant share a hue (finetune / l1_sparse, psg /
# psg_compose); red is left out (the eye reads it as "failed"), greys are for the deployed
# model, black for the retrain reference
METHOD_COLOURS: dict[str, str] = {
    "retrain": "#000000",
    "finetune": "#1f77b4",
    "l1_sparse": "#aec7e8",
    "neggrad_plus": "#ff7f0e",
    "random_label": "#ffbb78",
    "boundary_shrink": "#9467bd",
    "boundary_expand": "#c5b0d5",
    "scrub": "#8c564b",
    "salun": "#e377c2",
    "psg": "#2ca02c",
    "psg_compose": "#98df8a",
    "swap": "#17becf",  # composed candidates of a revision (medunlearn.unlearn.compose)
    "interpolate": "#bcbd22",
    "deployed": "#7f7f7f",
}
SPARE_COLOURS: tuple[str, ...] = ("#9edae5", "#dbdb8d", "#c49c94", "#f7b6d2", "#393b79", "#637939")


def method_colour(method: str) -> str:
    """The colour of ``method`` in every plot.

    Args:
        method: a method name (``medunlearn.unlearn.methods.METHODS``), a composed
            candidate's kind (``swap``, ``interpolate``) or ``deployed``.

    Returns:
        A ``#rrggbb`` colour: the table's, else a spare colour picked by the sha256 of the
        name (stable across runs and processes, unlike Python's ``hash``).
    """
    if method in METHOD_COLOURS:
        return METHOD_COLOURS[method]
    digest = int(hashlib.sha256(method.encode()).hexdigest(), 16)
    return SPARE_COLOURS[digest % len(SPARE_COLOURS)]


def plain_number(value: float, _position: Any = None) -> str:
    """A tick label without scientific notation: ``0.2``, ``0.05``, ``10`` (never ``2x10^-1``).

    A ``matplotlib.ticker.FuncFormatter`` function.

    Args:
        value: the tick's value.
        _position: the tick's index (matplotlib passes it; unused).

    Returns:
        The shortest positional decimal that reads back as ``value`` (``numpy``'s
        ``format_float_positional``, trailing zeros and dot trimmed).
    """
    return np.format_float_positional(float(value), trim="-")


def plain_log_axis(axis: Any) -> None:
    """Make a log-scaled matplotlib axis show plain decimal ticks and no minor labels.

    Ticks at 1, 2 and 5 times each power of ten when the limits span at most 3 decades,
    else at the powers only; matplotlib's default labels minor ticks of a narrow log axis
    ``2x10^-1``.

    Args:
        axis: ``ax.xaxis`` or ``ax.yaxis`` of an axis already set to ``log`` scale, its
            limits set.
    """
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    low, high = sorted(axis.get_view_interval())
    narrow = low > 0 and np.log10(high / low) <= 3
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if narrow else (1.0,)))
    axis.set_major_formatter(FuncFormatter(plain_number))
    axis.set_minor_formatter(NullFormatter())


def plot_title(
    model: str | None,
    version: str | None,
    reason: str | None,
    request_hash: str | None,
    subject: str,
) -> str:
    """A figure title naming the model, its version and the forget request, then the subject.

    Args:
        model: the model's name (the registry's, or the architecture in a benchmark).
        version: the version being made, or None: ``unregistered``.
        reason: the request's reason, or None (no request).
        request_hash: the request's hash; its first 8 hex digits are shown.
        subject: what the figure plots (second line).

    Returns:
        Two lines: ``"<model> <version> · request <reason> <hash8>"`` and ``subject``.
    """
    request = f"request {reason} {(request_hash or '')[:8]}".rstrip() if reason else "no request"
    return f"{model or 'model'} {version or 'unregistered'} · {request}\n{subject}"
