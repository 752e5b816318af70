"""PNG plots of a comparison (matplotlib, Agg backend: no display needed).

Each function takes plain lists/dicts (as produced by :mod:`kmshc.compare.tables`), writes one
PNG atomically (temp file + rename) and returns its path.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # before pyplot: headless CI and servers
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from kmshc.types import atomic_write_bytes, parse_head  # noqa: E402

if TYPE_CHECKING:
    from kmshc.compare.curves import Curve


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()  # render in memory, then temp file + rename: a killed run never leaves half a PNG
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def gate_grid(gates: Mapping[str, float], searched: Sequence[str], n_layers: int, n_heads: int,
              path: str | Path, title: str = "", tau: float = 0.5) -> Path:
    """Layer × head grid of learned gate values (colour); searched heads marked with a red
    square, learned heads (gate > ``tau``) with a white dot. Rows are layers, layer 0 at the top."""
    grid = [[0.0] * n_heads for _ in range(n_layers)]
    for name, g in gates.items():
        h = parse_head(name, n_layers, n_heads)
        grid[h.layer][h.head] = g
    fig, ax = plt.subplots(figsize=(0.35 * n_heads + 2.2, 0.22 * n_layers + 1.2))
    im = ax.imshow(grid, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    for name in searched:
        h = parse_head(name, n_layers, n_heads)
        ax.add_patch(plt.Rectangle((h.head - 0.45, h.layer - 0.45), 0.9, 0.9, fill=False, lw=1.6, ec="red"))
    learned = [parse_head(n) for n, g in gates.items() if g > tau]
    ax.scatter([h.head for h in learned], [h.layer for h in learned], s=6, c="white", label=f"gate > {tau}")
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(title or "learned gates; red squares = searched circuit", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.05, label="gate")
    return _save(fig, path)


def layer_histogram(distributions: Mapping[str, Sequence[float]], path: str | Path,
                    title: str = "circuit heads per layer", ylabel: str = "heads (mean over seeds)") -> Path:
    """Grouped bars: one series per label (e.g. a task or a circuit), x = layer."""
    labels = list(distributions)
    n_layers = max((len(v) for v in distributions.values()), default=0)
    width = 0.8 / max(1, len(labels))
    fig, ax = plt.subplots(figsize=(max(6, 0.3 * n_layers), 3.2))
    for i, lab in enumerate(labels):
        xs = [x + (i - (len(labels) - 1) / 2) * width for x in range(len(distributions[lab]))]
        ax.bar(xs, distributions[lab], width=width, label=lab)
    ax.set_xlabel("layer")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.set_xticks(range(0, n_layers, max(1, n_layers // 15)))
    if labels:
        ax.legend(fontsize=7)
    return _save(fig, path)


def overlap_heatmap(matrix: Sequence[Sequence[float]], labels: Sequence[str], path: str | Path,
                    title: str = "Jaccard overlap", counts: Sequence[Sequence[int]] | None = None) -> Path:
    """Square matrix with each cell annotated (Jaccard, and the intersection size if given)."""
    n = len(labels)
    fig, ax = plt.subplots(figsize=(1.0 * n + 2.5, 0.8 * n + 2))
    im = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            txt = f"{matrix[i][j]:.2f}" + (f"\n({counts[i][j]})" if counts is not None else "")
            ax.text(j, i, txt, ha="center", va="center", fontsize=7,
                    color="white" if matrix[i][j] > 0.6 else "black")
    short = [_short(lab) for lab in labels]
    ax.set_xticks(range(n), short, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(n), short, fontsize=7)
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    return _save(fig, path)


def layer_distributions(per_task: Mapping[str, Mapping[str, Sequence[float]]], path: str | Path,
                        title: str = "layer distribution per task") -> Path:
    """Small multiples: one panel per task, one line per method (mean heads per layer)."""
    tasks = list(per_task)
    fig, axes = plt.subplots(len(tasks), 1, figsize=(7, 1.6 * len(tasks) + 0.6), sharex=True, squeeze=False)
    for ax, t in zip(axes[:, 0], tasks):
        for method, dist in per_task[t].items():
            ax.plot(range(len(dist)), dist, marker="o", ms=3, label=method)
        ax.set_title(t, fontsize=8, loc="left")
        ax.set_ylim(bottom=0)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7, loc="upper right")
    fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(hspace=0.45)
    axes[-1, 0].set_xlabel("layer (heads per layer, mean over seeds)")
    return _save(fig, path)


def _short(label: str, n: int = 22) -> str:
    return label if len(label) <= n else label[: n - 1] + "…"


def faithfulness_curves(curves: Sequence["Curve"], path: str | Path, title: str = "") -> Path:
    """One line per :class:`kmshc.compare.curves.Curve`: normalised faithfulness against the fraction
    of heads. The legend gives each curve's CPR and CMD; the dashed line at 1 is the full model."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=110)
    for c in curves:
        ax.plot([k / c.n_heads for k in c.ks], c.faithfulness, marker="o", ms=3,
                label=f"{c.label or 'ranking'} (CPR {c.cpr:.2f}, CMD {c.cmd:.2f})")
    ax.axhline(1.0, ls="--", lw=0.8, c="grey")
    ax.set_xlabel("fraction of heads kept (top-k of the ranking)")
    ax.set_ylabel("faithfulness (S(C_k) − S(∅)) / (S(M) − S(∅))")
    ax.set_title(title or "faithfulness curves", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)
