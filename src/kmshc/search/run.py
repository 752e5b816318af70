"""What ``search.py`` does, as functions: build ``S(·)`` from an Experiment, run a mode, write
``circuit_searched.json`` (or ``circuit_verified.json``) with its certificate.

Modes: ``cold`` (from all heads), ``warm`` (from a train.py run's ``gates.json``), ``verify``
(certificate only, for any circuit JSON). The search runs on the ``val`` split; the certificate
on ``test`` (``verify_split``), which the search never sees.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from kmshc.distributed import barrier, is_main, main_then_all, world_size
from kmshc.cost import total_example_forwards
from kmshc.experiment import Experiment
from kmshc.memory import peak_rss_mb
from kmshc.scoring import Scorer
from kmshc.search.certificate import Certificate, CertificateConfig
from kmshc.search.common import indices, mask_of, names
from kmshc.search.decide import RecoveryScores, point_scores, split_chunks
from kmshc.search.refine import cold_search, refine
from kmshc.search.rundir import acquire_lock, read_gates, release_lock
from kmshc.search.state import Recorder
from kmshc.search.verify import certify
from kmshc.types import Circuit, KmshcError, ensure_writable_dir, read_circuit

STATE, SEARCHED, VERIFIED = "search_state.json", "circuit_searched.json", "circuit_verified.json"


@dataclass
class SearchConfig:
    """One search run. ``name``: output folder under ``runs_dir`` for cold runs (warm writes into the
    train run's folder, verify next to the circuit). ``macro``: ``null`` = on for paper semantics only."""

    mode: Literal["cold", "warm", "verify"] = "cold"
    name: str | None = None
    runs_dir: str = "runs"
    from_run: str | None = None
    circuit: str | None = None
    semantics: Literal["keep", "paper"] = "keep"
    epsilon: float = 0.9
    threshold: float | None = None
    search_margin: float = 0.0  # search against U + search_margin on val; the certificate uses plain U
    K: int = 1
    N: int = 10
    tau: float = 0.5
    weighted: bool = True
    strategy: Literal["ordered", "bundles"] = "ordered"  # warm only: deletion filter by log_alpha, or bundles
    seed: int | None = None
    macro: bool | None = None
    window: int | None = None
    window_fraction: float = 0.2
    percentile: float = 75.0
    edge_correction: bool = False
    baseline: Literal["empty", "complement"] = "empty"
    ceil: bool = False
    halve_when_large: bool = False
    macro_probe_dim: int | None = None
    max_evaluations: int | None = None
    # what S averages: 0/1 accuracy (the paper's) or the log-prob margin (lower variance)
    metric: Literal["accuracy", "margin"] = "accuracy"
    # keep semantics: decide each removal on the recovery's lower confidence bound ("confident")
    # or on the point estimate ("point", the paper's); see kmshc.search.decide
    decision: Literal["confident", "point"] = "confident"
    decision_confidence: float = 0.9
    adaptive: bool = False  # score the search split in growing chunks; stop when a decision is clear
    looks: int = 4
    certificate: CertificateConfig = field(default_factory=CertificateConfig)
    verify_split: Literal["val", "test"] = "test"
    dtype: Literal["float32", "bfloat16", "auto"] | None = None  # override the experiment's (also a warm run's) dtype
    device: str | None = None  # auto|cpu|cuda|cuda:N: override the experiment's device (also a warm run's)
    resume: bool = False
    overwrite: bool = False
    progress: bool = True
    # circuit JSON files whose heads the search may not use: they stay ablated, so the search finds a
    # backup circuit among the other heads; U still comes from the true S(M) and S(B) (docs/redundancy.md)
    exclude: list[str] = field(default_factory=list)
    out: str | None = None  # write here instead of the mode's folder (one folder per circuit in a redundancy run)
    experiment: Experiment = field(default_factory=Experiment)


def repeatable(args: list[str], flag: str = "--exclude") -> list[str]:
    """``--exclude A --exclude B`` (or ``--exclude=A``) as jsonargparse's append form ``--exclude+ A``,
    so that a list flag repeats like any command-line flag; a JSON list (``--exclude [A, B]``) is kept."""
    out, i = [], 0
    while i < len(args):
        a = args[i]
        if a == flag and i + 1 < len(args) and not args[i + 1].lstrip().startswith("["):
            out += [flag + "+", args[i + 1]]
            i += 2
            continue
        if a.startswith(flag + "=") and not a[len(flag) + 1:].lstrip().startswith("["):
            a = flag + "+=" + a[len(flag) + 1:]
        out.append(a)
        i += 1
    return out


def _experiment(d: Any, where: str) -> Experiment:
    return Experiment.from_dict(d, where=where)


def output_dir(cfg: SearchConfig) -> Path:
    if cfg.mode == "warm" and not cfg.from_run:
        raise KmshcError("warm mode needs --from_run runs/<name> (a train.py run directory)")
    if cfg.mode == "verify" and not cfg.circuit:
        raise KmshcError("verify mode needs --circuit PATH (a circuit JSON file)")
    if cfg.out:
        return Path(cfg.out)
    if cfg.mode == "warm":  # the searched circuit goes next to the gates it refines (docs/search.md)
        return Path(cfg.from_run)
    if cfg.mode == "verify":  # the certificate goes next to the circuit it checks
        return Path(cfg.circuit).parent
    if cfg.name:
        return Path(cfg.runs_dir) / cfg.name
    return Path(cfg.runs_dir) / f"{cfg.mode}-{cfg.semantics}"


def prepare(out: Path, cfg: SearchConfig) -> None:
    """Check cheap config values, take the run directory's lock, and refuse to clobber earlier
    results unless ``overwrite`` (or ``resume``)."""
    if not 0 < cfg.epsilon <= 1:
        raise KmshcError(f"epsilon: expected a value in (0, 1], got {cfg.epsilon}")
    if cfg.threshold is not None and not 0 <= cfg.threshold <= 1:
        raise KmshcError(f"threshold: expected an accuracy in [0, 1], got {cfg.threshold}")
    for key in ("K", "N"):
        if getattr(cfg, key) < 1:
            raise KmshcError(f"{key}: expected a positive integer, got {getattr(cfg, key)}")
    if cfg.exclude and (cfg.semantics == "paper" or cfg.mode == "verify"):
        raise KmshcError("exclude: only for searches with keep semantics (paper semantics keeps the heads outside C "
                         "active, so excluded heads could not stay ablated)")
    if cfg.resume and cfg.overwrite:
        raise KmshcError("--resume and --overwrite exclude each other")
    fresh_cold = cfg.mode == "cold" and not (out.exists() and any(out.iterdir()))
    ensure_writable_dir(out, "run directory")  # before the model loads: fail in seconds, not after the search
    acquire_lock(out)
    ours = [out / VERIFIED] if cfg.mode == "verify" else [out / SEARCHED, out / STATE]
    existing = [p for p in ours if p.exists()] or ([out] if cfg.mode == "cold" and not fresh_cold else [])
    if existing and not (cfg.overwrite or cfg.resume):
        release_lock(out)
        raise KmshcError(f"{existing[0]} exists; pass --overwrite true to replace it or --resume true to continue")
    if cfg.overwrite:
        for p in ours:
            p.unlink(missing_ok=True)


def _overridden(exp: Experiment, cfg: SearchConfig) -> Experiment:
    """``exp`` with the config's ``dtype``/``device`` overrides, which also apply to a warm run's experiment
    (e.g. float32 on a CPU without native bf16 matmuls, where bf16 is ~50x slower)."""
    changes = {k: getattr(cfg, k) for k in ("dtype", "device") if getattr(cfg, k) not in (None, getattr(exp, k))}
    return Experiment.from_dict({**exp.to_dict(), **changes}) if changes else exp


def _accuracies(scorer: Scorer):
    return lambda masks: scorer.outcomes(masks).accuracy.tolist()


def search_scores(cfg: SearchConfig, exp: Experiment, shape: tuple[int, int], val: Scorer):
    """``(evaluate_many, decider)`` of the search on the val split ``val``: point means of the
    metric, or recovery lower bounds (:class:`~kmshc.search.decide.RecoveryScores`)."""
    if not confident(cfg):
        return point_scores(val.outcomes, cfg.metric), None, [val]
    task = exp.splits["val"]
    parts = split_chunks(len(task), cfg.looks) if cfg.adaptive else [slice(0, len(task))]
    scorers = [val] if len(parts) == 1 else [exp.scorer_for("val", items=task.items[p], distributed=True)
                                             for p in parts]
    rs = RecoveryScores([sc.outcomes for sc in scorers], full_mask=mask_of(range(shape[0] * shape[1]), shape), base_mask=mask_of((), shape),
                        metric=cfg.metric, epsilon=cfg.epsilon, confidence=cfg.decision_confidence,
                        adaptive=cfg.adaptive)
    return rs, rs, scorers


def confident(cfg: SearchConfig) -> bool:
    """Confident decisions need a relative threshold and an empty baseline (recovery units)."""
    return (cfg.decision == "confident" and cfg.semantics == "keep" and cfg.threshold is None
            and cfg.baseline == "empty")


def run(cfg: SearchConfig, on_progress=None) -> tuple[Circuit, Path]:
    """Run one mode and write its circuit; returns ``(circuit, path)``."""
    out = output_dir(cfg)
    main_then_all(lambda: prepare(out, cfg))  # under torchrun: rank 0 takes the lock, all ranks see its verdict
    try:
        return _verify_only(cfg, out) if cfg.mode == "verify" else _search(cfg, out, on_progress)
    finally:
        release_lock(out)


def _search(cfg: SearchConfig, out: Path, on_progress) -> tuple[Circuit, Path]:
    exp, gates, ranks, source = cfg.experiment, None, None, None
    if cfg.mode == "warm":
        exp, gates, ranks = read_gates(Path(cfg.from_run))
        source = str(Path(cfg.from_run) / "gates.json")
    exp = _overridden(exp, cfg)
    shape, seed = exp.shape, cfg.seed if cfg.seed is not None else exp.seed
    excluded = excluded_heads(cfg.exclude, exp, shape)
    universe = set(range(shape[0] * shape[1])) - set(indices(excluded, shape)) if excluded else None
    val = exp.scorer_for("val", distributed=True)
    evaluate, decider, scorers = search_scores(cfg, exp, shape, val)
    others = {}
    if cfg.macro_probe_dim is not None:
        model, tok = exp.loaded
        scorers.append(Scorer(model, tok, exp.splits["val"], scorer="probe", ablation=exp.ablation_values,
                              train=exp.splits["train"], probe_dim=cfg.macro_probe_dim, seed=exp.seed,
                              distributed=True))
        others["macro"] = _accuracies(scorers[-1])
    search_cfg = {k: v for k, v in asdict(cfg).items() if k not in ("resume", "overwrite", "progress", "experiment")}
    # the cap only decides where a run stops, not its path: a capped run may resume with a larger one;
    # the certificate's settings do not change the search either, nor does the device: a run may
    # resume elsewhere (it must then replay to the same decisions); exclusions count by their heads
    ignored = ("max_evaluations", "certificate", "device", "exclude", "out")
    fingerprint = {**{k: v for k, v in search_cfg.items() if k not in ignored},
                   "experiment": exp.result_dict(), "n_val": val.n}
    if excluded:
        fingerprint["excluded_heads"] = excluded
    rec = Recorder(evaluate, out / STATE, resume=cfg.resume, fingerprint=fingerprint,
                   max_evaluations=cfg.max_evaluations, on_progress=on_progress, others=others, save_state=is_main(),
                   forwards=lambda: total_example_forwards(*(s.cost for s in scorers)))
    barrier()  # every rank has read the state before rank 0 rewrites it
    res = _run_search(cfg, rec, shape, seed, gates, ranks, source, macro_using="macro" if others else "",
                      universe=universe)
    base_on = []
    if cfg.baseline == "complement" and "macro" in res.info:
        used = res.info["macro"]["layers_corrected" if cfg.edge_correction else "layers_paper"]
        base_on = [f"L{l}H{h}" for l in range(shape[0]) if l not in used for h in range(shape[1])]
    verifier = exp.scorer_for(cfg.verify_split, distributed=True)
    cert = _certify(cfg, exp, res.heads, semantics=res.semantics, epsilon=cfg.epsilon, threshold=cfg.threshold,
                    K=cfg.K, baseline_heads=base_on, scorer=verifier,
                    pool=names(universe, shape) if universe is not None else None)
    method = "warm" if cfg.mode == "warm" else ("cold" if res.semantics == "keep" else "cold-paper")
    units = "recovery lower bound" if decider is not None else cfg.metric
    circ = Circuit(model=exp.model, task=exp.task_name, heads=res.heads, n_heads_total=shape[0] * shape[1],
                   scorer=exp.scorer, ablation=exp.ablation, semantics=res.semantics, epsilon=cfg.epsilon, K=cfg.K,
                   scores={"val": {"score": res.score, "threshold": res.threshold, "n": val.n, "units": units},
                           cfg.verify_split: _split_scores(cert)},
                   certificate=cert.to_dict(), evaluations=res.evaluations,
                   example_forwards=round(rec.example_forwards, 3), seed=seed,
                   config={"experiment": exp.to_dict(), "search": search_cfg, "threshold": cfg.threshold,
                           "baseline_heads": base_on, "excluded_heads": excluded},
                   extra={"method": method, "wall_time_s": res.wall_time_s, "peak_rss_mb": round(peak_rss_mb()),
                          "source": source, "capped": res.capped, "device": str(val.device), "processes": world_size(),
                          "verify_cost": verifier.cost.to_dict(),
                          "search_info": dict(res.info), "data_skipped": exp.data_skipped})
    if is_main():
        circ.save(out / SEARCHED)
    return circ, out / SEARCHED


def _run_search(cfg: SearchConfig, rec: Recorder, shape, seed: int, gates, ranks, source, macro_using: str,
                universe: set[int] | None = None):
    # confident decisions score sets in recovery units, where S(M) = 1, S(B) = 0 and U = epsilon
    threshold = None if confident(cfg) else cfg.threshold
    if cfg.mode == "warm":
        flat = {n: indices([n], shape, where=f"{source}: heads")[0] for n in gates}
        return refine(rec, shape, {flat[n]: g for n, g in gates.items()}, epsilon=cfg.epsilon, threshold=threshold,
                      tau=cfg.tau, N=cfg.N, weighted=cfg.weighted, seed=seed, strategy=cfg.strategy,
                      importance={flat[n]: a for n, a in ranks.items()} if ranks else None, margin=cfg.search_margin,
                      universe=universe)
    return cold_search(rec, shape, semantics=cfg.semantics, epsilon=cfg.epsilon, threshold=threshold, N=cfg.N, K=cfg.K,
                       seed=seed, macro=cfg.macro, window=cfg.window, window_fraction=cfg.window_fraction,
                       percentile=cfg.percentile, edge_correction=cfg.edge_correction, baseline=cfg.baseline,
                       ceil=cfg.ceil, halve_when_large=cfg.halve_when_large, macro_using=macro_using,
                       margin=cfg.search_margin, universe=universe)


def excluded_heads(paths: list[str], exp: Experiment, shape: tuple[int, int]) -> list[str]:
    """Sorted head names of the circuits in ``paths``, checked against this search's model and shape."""
    heads: set[str] = set()
    for path in paths:
        c = read_circuit(path)
        if c.model != exp.model or c.n_heads_total != shape[0] * shape[1]:
            raise KmshcError(f"{path}: exclude: a circuit of {c.model} ({c.n_heads_total} heads), but this search "
                             f"runs on {exp.model} ({shape[0] * shape[1]} heads)")
        heads |= set(c.heads)
    return list(names(indices(heads, shape, where=f"exclude {paths}"), shape))


def _certify(cfg: SearchConfig, exp: Experiment, heads, scorer: Scorer | None = None, **kw) -> Certificate:
    scorer = scorer or exp.scorer_for(cfg.verify_split, distributed=True)
    return certify(scorer.outcomes, exp.shape, heads, config=cfg.certificate,
                   metric=cfg.metric, skipped=exp.data_skipped,
                   split=cfg.verify_split, **{k: v for k, v in kw.items() if k != "seed"})


def _split_scores(cert: Certificate) -> dict:
    c = cert.circuit
    return {"accuracy": c.accuracy, "score": c.value, "recovery": c.recovery, "recovery_lower": c.lower,
            "metric": cert.metric, "n": cert.n}


def _verify_only(cfg: SearchConfig, out: Path) -> tuple[Circuit, Path]:
    c = read_circuit(cfg.circuit)
    exp_d = c.config.get("experiment")
    exp = _experiment(exp_d, f"{cfg.circuit}: field 'config.experiment'") if isinstance(exp_d, dict) else cfg.experiment
    exp = _overridden(exp, cfg)
    threshold = c.config.get("threshold", cfg.threshold)
    cert = _certify(cfg, exp, c.heads, semantics=c.semantics, epsilon=c.epsilon, threshold=threshold, K=c.K,
                    baseline_heads=c.config.get("baseline_heads", ()))
    d = c.to_dict()
    d["certificate"] = cert.to_dict()
    d.setdefault("scores", {})[cfg.verify_split] = _split_scores(cert)
    d["verified_from"] = str(cfg.circuit)
    from kmshc.types import circuit_from_dict
    circ = circuit_from_dict(d, where=str(cfg.circuit))
    if is_main():
        circ.save(out / VERIFIED)
    return circ, out / VERIFIED
