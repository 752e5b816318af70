"""The gate heat map of a training run (matplotlib, Agg backend: no display needed)."""
from __future__ import annotations

import io
import os

import torch

from kmshc.search.settings import DEFAULTS
from kmshc.types import atomic_write_bytes


def _png(fig, path: str | os.PathLike | None) -> bytes:
    """Render ``fig`` to PNG bytes, close it, and write them atomically to ``path`` if given."""
    import matplotlib.pyplot as plt
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    png = buf.getvalue()
    if path is not None:
        atomic_write_bytes(path, png)
    return png


def gate_heatmap(values: torch.Tensor, path: str | os.PathLike | None = None, title: str = "",
                 threshold: float | None = DEFAULTS.gate_threshold, label: str = "gate") -> bytes:
    """Draw a layer × head heatmap of ``values`` ``[L, H]`` in [0, 1]; return the PNG bytes.

    Heads above ``threshold`` are outlined so the circuit stands out. With ``path`` the PNG is also
    written there atomically (temp file + rename).
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    v = values.detach().float().cpu()
    n_layers, n_heads = v.shape
    fig, ax = plt.subplots(figsize=(1.2 + 0.45 * n_heads, 1.0 + 0.22 * n_layers), dpi=100)
    im = ax.imshow(v.numpy(), aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
    if threshold is not None:
        for l, h in (v > threshold).nonzero().tolist():
            ax.add_patch(matplotlib.patches.Rectangle((h - 0.5, l - 0.5), 1, 1, fill=False, edgecolor="red", lw=1.2))
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_xticks(range(n_heads))
    ax.set_yticks(range(0, n_layers, max(1, n_layers // 15)))
    kept = int((v > threshold).sum()) if threshold is not None else None
    ax.set_title(title or (f"{label}s: {kept}/{n_layers * n_heads} > {threshold}" if kept is not None else label),
                 fontsize=9)
    fig.colorbar(im, ax=ax, label=label)
    return _png(fig, path)
