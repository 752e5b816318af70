"""Log a comparison to W&B: the same tables and images as the markdown report.

Imported only by the ``kmshc compare --wandb`` command (lazily), so the library itself never
imports wandb. Offline unless the user sets ``WANDB_MODE`` otherwise.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence


def _table_rows(rows: Sequence[dict]) -> tuple[list[str], list[list[Any]]]:
    """Columns and rows for ``wandb.Table``; lists and dicts become JSON strings."""
    cols = list(rows[0]) if rows else []
    return cols, [[json.dumps(r.get(c)) if isinstance(r.get(c), (list, dict)) else r.get(c) for c in cols]
                  for r in rows]


def class_rows(analysis: dict) -> list[dict]:
    """One row per (method, task): sizes, stability and the weak/strong/super heads."""
    return [{"method": m, "task": t, "mean_size": v["mean_size"], "seed_stability": v["seed_stability"],
             **{lvl: ",".join(info["classes"][t][lvl]) for lvl in ("weak", "strong", "super")}}
            for m, info in analysis["methods"].items() for t, v in info["tasks"].items()]


def log_compare(result: dict, images: Sequence[Path], project: str = "kmshc-compare",
                out_dir: str | None = None) -> str:
    """Log circuits, pairs and head classes as Tables and every PNG as an Image; returns the run dir."""
    import wandb
    os.environ.setdefault("WANDB_MODE", "offline")
    run = wandb.init(project=project, dir=out_dir or ".", job_type="compare",
                     config={"shape": result["shape"], **result["analysis"]["definitions"]})
    try:
        for name, rows in (("circuits", result["circuits"]), ("pairs", result["pairs"]),
                           ("head_classes", class_rows(result["analysis"]))):
            cols, data = _table_rows(rows)
            run.log({name: wandb.Table(columns=cols, data=data)})
        run.log({f"plots/{Path(p).stem}": wandb.Image(str(p)) for p in images})
        for m, info in result["analysis"]["methods"].items():
            for t, v in info["tasks"].items():
                if v["seed_stability"] is not None:
                    run.summary[f"{m}/{t}/seed_stability"] = v["seed_stability"]
                run.summary[f"{m}/{t}/mean_size"] = v["mean_size"]
        return run.dir
    finally:
        run.finish()
