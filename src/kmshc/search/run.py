"""What ``search.py`` does, as functions: build ``S(·)`` from an Experiment, run a mode, write
``circuit_searched.json`` (or ``circuit_verified.json``) with its certificate.

Modes: ``cold`` (from all heads), ``warm`` (from a train.py run's ``gates.json``), ``verify``
(certificate only, for any circuit JSON). The search runs on the ``val`` split; the certificate
on ``test`` (``verify_split``), which the search never sees.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from kmshc.engine.distributed import barrier, is_main, main_then_all, world_size
from kmshc.engine.cost import total_example_forwards
from kmshc.experiment import Experiment
from kmshc.engine.memory import peak_rss_mb
from kmshc.engine.scoring import Scorer
from kmshc.search.certificate import Certificate
from kmshc.search.common import indices, mask_of, names
from kmshc.search.decide import RecoveryScores, point_scores, split_chunks
from kmshc.search.config import SearchConfig
from kmshc.search.refine import cold_search, refine
from kmshc.search.rundir import SEARCHED, SEEN, STATE, VERIFIED, output_dir, prepare, release_lock
from kmshc.search.gates_file import read_gates
from kmshc.search.seen import SeenSets
from kmshc.search.state import Recorder
from kmshc.search.repair import repair
from kmshc.search.rounds import ROUNDS, Certifier, ScoredRounds
from kmshc.types import Circuit, KmshcError, circuit_from_dict, read_circuit


def _experiment(d: Any, where: str) -> Experiment:
    return Experiment.from_dict(d, where=where)


def _overridden(exp: Experiment, cfg: SearchConfig) -> Experiment:
    """``exp`` with the config's ``dtype``/``device`` overrides, which also apply to a warm run's experiment
    (e.g. float32 on a CPU without native bf16 matmuls, where bf16 is ~50x slower)."""
    changes = {k: getattr(cfg, k) for k in ("dtype", "device") if getattr(cfg, k) not in (None, getattr(exp, k))}
    return Experiment.from_dict({**exp.to_dict(), **changes}) if changes else exp


def _accuracies(scorer: Scorer):
    return lambda masks: scorer.outcomes(masks).accuracy.tolist()


def search_scores(cfg: SearchConfig, exp: Experiment, shape: tuple[int, int], val: Scorer, *,
                  seen: SeenSets | None = None):
    """``(evaluate_many, scorers)`` of the search on the val split ``val``: point means of the metric,
    or recovery lower bounds (:class:`~kmshc.search.decide.RecoveryScores`) when ``cfg.confident``;
    ``scorers``: every scorer used, for the cost count. ``seen`` keeps what adaptive decisions
    score (default: in memory)."""
    if not cfg.confident:
        return point_scores(val.outcomes, cfg.metric), [val]
    task = exp.splits["val"]
    parts = split_chunks(len(task), cfg.looks) if cfg.adaptive else [slice(0, len(task))]
    scorers = [val] if len(parts) == 1 else [exp.scorer_for("val", items=task.items[p], distributed=True)
                                             for p in parts]
    seen = (seen or SeenSets()) if cfg.adaptive_controls else None
    rs = RecoveryScores([sc.outcomes for sc in scorers], full_mask=mask_of(range(shape[0] * shape[1]), shape),
                        base_mask=mask_of((), shape), metric=cfg.metric, epsilon=cfg.bar, confidence=cfg.decision_confidence,
                        adaptive=cfg.adaptive, spending_power=cfg.spending_power, seen=seen)
    return rs, scorers


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
    evaluate, scorers = search_scores(cfg, exp, shape, val,
                                      seen=SeenSets(out / SEEN, resume=cfg.resume, save=is_main()))
    others = {}
    if cfg.macro_probe_dim is not None:
        model, tok = exp.loaded
        scorers.append(Scorer(model, tok, exp.splits["val"], scorer="probe", ablation=exp.ablation_values,
                              train=exp.splits["train"], probe_dim=cfg.macro_probe_dim, seed=exp.seed,
                              distributed=True))
        others["macro"] = _accuracies(scorers[-1])
    search_cfg = cfg.recorded()
    # the cap only decides where a run stops, not its path: a capped run may resume with a larger one;
    # the certificate's settings do not change the search either, nor does the device: a run may
    # resume elsewhere (it must then replay to the same decisions); exclusions count by their heads
    fingerprint = {**{k: v for k, v in search_cfg.items() if k not in RESUME_IGNORES},
                   "experiment": exp.result_dict(), "n_val": val.n}
    if excluded:
        fingerprint["excluded_heads"] = excluded
    if fingerprint.get("start") == "gates":  # every search saved before the start was a setting began so
        del fingerprint["start"]
    rec = Recorder(evaluate, out / STATE, resume=cfg.resume, fingerprint=fingerprint, older=older_fingerprint,
                   max_evaluations=cfg.max_evaluations, on_progress=on_progress, others=others, save_state=is_main(),
                   forwards=lambda: total_example_forwards(*(s.cost for s in scorers)))
    barrier()  # every rank has read the state before rank 0 rewrites it
    res = drive(cfg, rec, shape, seed=seed, gates=gates, ranks=ranks, source=source or "gates",
                macro_using="macro" if others else "", universe=universe)
    base_on = []
    if cfg.baseline == "complement" and "macro" in res.info:
        used = res.info["macro"]["layers_corrected" if cfg.edge_correction else "layers_paper"]
        base_on = [f"L{l}H{h}" for l in range(shape[0]) if l not in used for h in range(shape[1])]
    certifier = Certifier(cfg, exp, ScoredRounds(out / ROUNDS, resume=cfg.resume, save=is_main()), [])
    kw = dict(semantics=res.semantics, epsilon=cfg.epsilon, threshold=cfg.threshold, K=cfg.K, baseline_heads=base_on,
              pool=names(universe, shape) if universe is not None else None)
    cert = certifier.certify(res.heads, **kw)
    heads, cert, repairs = repair(certifier, list(res.heads), cert, tries=cfg.repairs, shape=shape, cfg=cfg, **kw)
    method = "warm" if cfg.mode == "warm" else ("cold" if res.semantics == "keep" else "cold-paper")
    circ = searched_circuit(cfg, exp, res, val.n, seed=seed, heads=heads, scores={cfg.verify_split: split_scores(cert)},
                            certificate=cert.to_dict(), example_forwards=round(rec.example_forwards, 3),
                            config={"baseline_heads": base_on, "excluded_heads": excluded},
                            extra={"method": method, "wall_time_s": res.wall_time_s, "peak_rss_mb": round(peak_rss_mb()),
                                   "source": source, "capped": res.capped, "device": str(val.device),
                                   "processes": world_size(), "verify_cost": _summed_cost(certifier.scorers),
                                   "repairs": repairs, "searched_heads": list(res.heads),
                                   "search_info": dict(res.info), "data_skipped": exp.data_skipped})
    if is_main():
        circ.save(out / SEARCHED)
    return circ, out / SEARCHED


# what a search may change and still resume (see _search)
RESUME_IGNORES = ("max_evaluations", "certificate", "certify_until_decided", "max_test_items", "repairs", "device",
                  "exclude", "out")


def older_fingerprint(saved: dict) -> dict:
    """A saved search fingerprint in today's terms: the gate threshold was called ``tau``, and
    fields that no longer enter the fingerprint are dropped."""
    d = {k: v for k, v in saved.items() if k not in RESUME_IGNORES}
    if "tau" in d and "gate_threshold" not in d:
        d["gate_threshold"] = d.pop("tau")
    return d


def drive(cfg: SearchConfig, rec: Recorder, shape: tuple[int, int], *, seed: int,
          gates: Mapping[str, float] | None = None, ranks: Mapping[str, float] | None = None, source: str = "gates",
          macro_using: str = "", universe: set[int] | None = None):
    """The search driver ``cfg`` asks for, on ``rec``: :func:`~kmshc.search.refine.refine` from
    ``gates`` (``{head name: gate}``, ranked by ``ranks``; ``source`` names them in errors) when
    given, else :func:`~kmshc.search.refine.cold_search`."""
    # confident decisions score sets in recovery units, where S(M) = 1, S(B) = 0 and U = epsilon
    threshold = None if cfg.confident else cfg.threshold
    if gates is not None:
        flat = {n: indices([n], shape, where=f"{source}: heads")[0] for n in gates}
        return refine(rec, shape, {flat[n]: g for n, g in gates.items()}, epsilon=cfg.bar, threshold=threshold,
                      gate_threshold=cfg.gate_threshold, N=cfg.N, weighted=cfg.weighted, seed=seed, strategy=cfg.strategy,
                      importance={flat[n]: a for n, a in ranks.items()} if ranks else None, margin=cfg.search_margin,
                      universe=universe, start=cfg.start)
    return cold_search(rec, shape, semantics=cfg.semantics, epsilon=cfg.bar, threshold=threshold, N=cfg.N, K=cfg.K,
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


def _summed_cost(scorers) -> dict:
    """The cost record of every scorer a certificate used (test split and fresh rounds), summed."""
    total: dict = {}
    for sc in scorers:
        for k, v in sc.cost.to_dict().items():
            total[k] = v if k in ("n_layers", "rows_per_example") else round(total.get(k, 0) + v, 3)
    return total


def searched_circuit(cfg: SearchConfig, exp: Experiment, res, n_val: int, *, seed: int, heads=None,
                     scores: dict | None = None, config: dict | None = None, extra: dict | None = None,
                     **fields: Any) -> Circuit:
    """The :class:`Circuit` of a search's result ``res`` (``heads``: the certified ones, when they
    differ): what every searched circuit records, its val score and settings; ``scores``,
    ``config`` and ``extra`` add to those, ``fields`` (certificate, cost) set the rest."""
    n_layers, n_heads = exp.shape
    return Circuit(model=exp.model, task=exp.task_name, heads=tuple(res.heads if heads is None else heads),
                   n_heads_total=n_layers * n_heads, scorer=exp.scorer, ablation=exp.ablation,
                   semantics=res.semantics, epsilon=cfg.epsilon, K=cfg.K, evaluations=res.evaluations, seed=seed,
                   scores={"val": {"score": res.score, "threshold": res.threshold, "n": n_val, "units": cfg.units},
                           **(scores or {})},
                   config={"experiment": exp.to_dict(), "search": cfg.recorded(), "threshold": cfg.threshold,
                           **(config or {})},
                   extra=extra or {}, **fields)


def split_scores(cert: Certificate) -> dict:
    """A certified split's entry in a circuit's ``scores``."""
    c = cert.circuit
    return {"accuracy": c.accuracy, "score": c.value, "recovery": c.recovery, "recovery_lower": c.lower,
            "metric": cert.metric, "n": cert.n}


def _verify_only(cfg: SearchConfig, out: Path) -> tuple[Circuit, Path]:
    c = read_circuit(cfg.circuit)
    exp_d = c.config.get("experiment")
    exp = _experiment(exp_d, f"{cfg.circuit}: field 'config.experiment'") if isinstance(exp_d, dict) else cfg.experiment
    exp = _overridden(exp, cfg)
    threshold = c.config.get("threshold", cfg.threshold)
    certifier = Certifier(cfg, exp, ScoredRounds(out / ROUNDS, resume=cfg.resume, save=is_main()), [])
    cert = certifier.certify(c.heads, semantics=c.semantics, epsilon=c.epsilon, threshold=threshold, K=c.K,
                             baseline_heads=c.config.get("baseline_heads", ()))
    d = c.to_dict()
    d["certificate"] = cert.to_dict()
    d.setdefault("scores", {})[cfg.verify_split] = split_scores(cert)
    d["verified_from"] = str(cfg.circuit)
    circ = circuit_from_dict(d, where=str(cfg.circuit))
    if is_main():
        circ.save(out / VERIFIED)
    return circ, out / VERIFIED
