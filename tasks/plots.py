"""The report's figures (PNG, matplotlib without a display): the quality-gate funnel, the question
mix before and after balancing, how close each example came to its nearest neighbour, and the
evaluation scores of base student, tuned student and teacher per category."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on servers and workers
import matplotlib.pyplot as plt  # noqa: E402


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.tight_layout()
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path


def funnel_plot(steps: list[tuple[str, int]], path: Path) -> Path:
    """Examples left after each step of the gate, top to bottom."""
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(steps) + 1))
    labels = [s for s, _ in steps][::-1]
    values = [n for _, n in steps][::-1]
    bars = ax.barh(labels, values, color="#3a7ca5")
    ax.bar_label(bars, padding=3)
    ax.set_xlabel("examples")
    ax.set_title("Quality gate: examples left after each step")
    ax.set_xlim(0, max(values + [1]) * 1.15)
    return _save(fig, path)


def distribution_plot(before: dict[str, dict[str, int]], after: dict[str, dict[str, int]], path: Path) -> Path:
    """Category and difficulty counts before and after balancing, side by side."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 1.3]})
    for ax, dim in zip(axes, ("category", "difficulty")):
        keys = sorted(set(before.get(dim, {})) | set(after.get(dim, {})))
        xs = range(len(keys))
        ax.bar([x - 0.2 for x in xs], [before.get(dim, {}).get(k, 0) for k in keys], width=0.4, label="before", color="#b8c4cc")
        ax.bar([x + 0.2 for x in xs], [after.get(dim, {}).get(k, 0) for k in keys], width=0.4, label="after", color="#3a7ca5")
        ax.set_xticks(list(xs), keys, rotation=30, ha="right")
        ax.set_title(f"by {dim}")
        ax.set_ylabel("examples")
    axes[0].legend()
    fig.suptitle("Dataset version before and after balancing")
    return _save(fig, path)


def similarity_plot(hist: dict[str, Any], threshold: float, path: Path) -> Path:
    """Histogram of each example's highest cosine to another example (published version included)."""
    bins = hist["bins"]
    centres = [(a + b) / 2 for a, b in zip(bins[:-1], bins[1:])]
    width = bins[1] - bins[0]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar(centres, hist["candidates"], width=width, color="#b8c4cc", label="candidates (after validation)")
    ax.bar(centres, hist["kept"], width=width * 0.6, color="#3a7ca5", label="kept")
    ax.axvline(threshold, color="#c0392b", linestyle="--", label=f"dedup threshold {threshold}")
    ax.set_xlabel("cosine to the nearest other example")
    ax.set_ylabel("examples")
    ax.set_xlim(max(0.0, min((c for c, n in zip(centres, hist["candidates"]) if n), default=0.0) - 0.05), 1.0)
    ax.legend(loc="upper left")
    ax.set_title("Nearest-neighbour similarity")
    return _save(fig, path)


EVAL_SIDES = (("base", "#b8c4cc"), ("tuned", "#3a7ca5"), ("teacher", "#e0a458"))


def plot_eval_scores(results: dict[str, Any], path: Path, metrics: tuple[str, ...] = ("token_f1", "numeric_match")) -> Path:
    """Per-category scores of each scored model, one panel per metric (overall as the first group)."""
    sides = [(name, colour) for name, colour in EVAL_SIDES if name in results]
    cats = sorted(results["base"]["per_category"])
    groups = ["overall", *cats]
    fig, axes = plt.subplots(len(metrics), 1, figsize=(max(7, 1.1 * len(groups) + 2), 3.2 * len(metrics)), squeeze=False)
    width = 0.8 / len(sides)
    for ax, metric in zip(axes[:, 0], metrics):
        for i, (name, colour) in enumerate(sides):
            scored = results[name]
            values = [scored.get(metric)] + [scored["per_category"].get(c, {}).get(metric) for c in cats]
            xs = [x + (i - (len(sides) - 1) / 2) * width for x in range(len(groups))]
            # a metric that applies to no item of a group is left out, not drawn as 0
            ax.bar([x for x, v in zip(xs, values) if v is not None], [v for v in values if v is not None],
                   width=width, color=colour, label=name)
        ax.set_xticks(range(len(groups)), groups, rotation=30, ha="right")
        ax.set_ylim(0, 1.05)
        ax.set_ylabel(metric)
        ax.legend(loc="upper right", fontsize="small")
    axes[0, 0].set_title(f"lm-eval on the eval split ({results['base']['n']} items)")
    return _save(fig, path)
