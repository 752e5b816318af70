"""The Python API in a few calls: learn gates, search, certify, and run a model on a circuit.

    exp = kmshc.Experiment(model="smollm2-135m", task="grammar", n=300)
    gates = kmshc.learn_gates(exp, steps=200)            # Lightning fit of hard-concrete gates
    circuit = kmshc.search_circuit(exp, gates=gates)      # Search-K-MSHC on the val split
    circuit = kmshc.certify_circuit(exp, circuit)         # held-out certificate (test split)
    with kmshc.only_heads(model, circuit, ablation=exp.ablation_values):
        ...                                               # the model with only the circuit's heads

These are thin layers over :mod:`kmshc.train.module` (training), :mod:`kmshc.search` (searches and
certificate) and :mod:`kmshc.engine.hooks` (interventions); the command line runs the same code.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Iterable, Iterator, Mapping

import torch
from torch import nn

from kmshc.engine.ablation import Ablation, MeanAblation, ZeroAblation
from kmshc.engine.architectures import head_shape
from kmshc.experiment import Experiment
from kmshc.engine.hooks import gated
from kmshc.search.config import SearchConfig, legacy_fields
from kmshc.search.gates_file import order_scores
from kmshc.search.settings import DEFAULTS
from kmshc.types import Circuit, KmshcError, head_name, heads_to_mask, mask_to_heads


@dataclass(frozen=True)
class LearnedGates:
    """Gates learned by :func:`learn_gates`: ``log_alpha`` and deterministic ``gates``, both ``[L, H]``;
    after a regularisation path (``path_steps``), ``order``: every head, most important first."""

    log_alpha: torch.Tensor
    gates: torch.Tensor
    gate_threshold: float = DEFAULTS.gate_threshold
    order: tuple[str, ...] = ()

    def ranks(self) -> dict[str, float]:
        """``{head: score}``, higher = more important: by ``order`` when there is one, else ``log_alpha``."""
        return order_scores(list(self.order)) if self.order else self.by_head(self.log_alpha)

    @property
    def heads(self) -> tuple[str, ...]:
        """The relaxed circuit: heads whose deterministic gate exceeds ``gate_threshold``."""
        return tuple(h.name for h in mask_to_heads(self.gates, self.gate_threshold))

    def by_head(self, values: torch.Tensor | None = None) -> dict[str, float]:
        """``{"L0H0": value, ...}`` of ``values`` ``[L, H]`` (default: the gates)."""
        v = self.gates if values is None else values
        return {head_name(l, h): float(v[l, h]) for l in range(v.shape[0]) for h in range(v.shape[1])}


def learn_gates(experiment: Experiment, *, steps: int = 200, batch_size: int = 16, seed: int = 0,
                progress: bool = False, **module_args: Any) -> LearnedGates:
    """Learn one hard-concrete gate per head with Lightning (what ``kmshc train`` fits, without
    run files, checkpoints or loggers).

    ``module_args`` go to :class:`~kmshc.train.module.GateModule` (``objective``, ``sparsity``, ``lam``,
    ``target``, ``lr``, ``gate_threshold``, ...). Validation is skipped: score the result with
    :func:`search_circuit` or ``experiment.scorer_for("val")``.
    """
    import lightning as L

    from kmshc.train.datamodule import GateDataModule
    from kmshc.train.module import GateModule
    from kmshc.engine.quiet import quiet_lightning
    L.seed_everything(seed, verbose=False)
    module = GateModule(experiment, **module_args)
    with quiet_lightning(info=False):
        trainer = L.Trainer(max_steps=steps, devices=1, logger=False, enable_checkpointing=False,
                            enable_model_summary=False, enable_progress_bar=progress, limit_val_batches=0,
                            num_sanity_val_steps=0)
        trainer.fit(module, datamodule=GateDataModule(experiment, batch_size=batch_size))
    gates = module.gates
    return LearnedGates(gates.log_alpha.detach().float().cpu().clone(),
                        gates.deterministic().detach().float().cpu(), gate_threshold=module.hparams.gate_threshold,
                        order=tuple(module.head_order() or ()))


def rank_heads(experiment: Experiment, *, method: str = "attribution", split: str = "train",
               **settings: Any) -> LearnedGates:
    """Rank heads without training, as ``kmshc rank`` does (docs/ranking.md): ``method`` is
    ``attribution``, ``integrated_gradients`` or ``forward_selection``; ``settings`` are
    :class:`~kmshc.rank.run.RankSettings`' other fields (``steps``, ``coverage``, ``target``,
    ``per_round``, ``max_heads``). Returns :class:`LearnedGates` with ``log_alpha`` = the
    method's scores and ``gates`` 1 on its starting set, so ``search_circuit(experiment,
    gates=...)`` starts from it as from learned gates."""
    from kmshc.rank.run import RankSettings, rank
    try:
        cfg = RankSettings(method=method, **settings)
    except TypeError as e:  # an unknown keyword: name it
        raise KmshcError(f"rank_heads: {e}; the settings are RankSettings' fields") from None
    result, start, _ = rank(experiment.scorer_for(split), split, cfg)
    return LearnedGates(log_alpha=result.scores.float(), gates=heads_to_mask(start, *experiment.shape))


def search_circuit(experiment: Experiment, *, gates: LearnedGates | Mapping[str, float] | None = None,
                   config: SearchConfig | None = None, **settings: Any) -> Circuit:
    """Search-K-MSHC on the experiment's ``val`` split, as ``kmshc search`` runs it; returns the
    circuit (not yet certified).

    With ``gates`` (from :func:`learn_gates`, or ``{head name: gate}``) the search refines the
    learned circuit (warm; ``gate_threshold``, ``strategy``); without, it searches from all heads (cold;
    ``semantics``). The settings are ``config`` (a :class:`~kmshc.search.config.SearchConfig`;
    default: its defaults, e.g. removals decided on the recovery's lower confidence bound) with
    ``settings`` replaced, e.g. ``epsilon=0.8, N=4, max_evaluations=200``; ``threshold`` is an
    absolute accuracy instead of ``U_ε`` (decisions are then on point estimates).
    """
    from kmshc.search import Recorder
    from kmshc.search.run import drive, search_scores, searched_circuit
    try:
        cfg = replace(config or SearchConfig(), experiment=experiment, **legacy_fields(settings))
    except TypeError as e:  # an unknown keyword: name it
        raise KmshcError(f"search_circuit: {e}; the settings are SearchConfig's fields") from None
    shape, seed = experiment.shape, experiment.seed if cfg.seed is None else cfg.seed
    val = experiment.scorer_for("val")
    evaluate, _ = search_scores(cfg, experiment, shape, val)
    by_name = ranks = None
    if gates is not None:
        by_name = gates.by_head() if isinstance(gates, LearnedGates) else dict(gates)
        ranks = gates.ranks() if isinstance(gates, LearnedGates) else None
    res = drive(cfg, Recorder(evaluate, max_evaluations=cfg.max_evaluations), shape, seed=seed, gates=by_name,
                ranks=ranks)
    return searched_circuit(cfg, experiment, res, val.n, seed=seed,
                            extra={"method": "cold" if gates is None else "warm", "capped": res.capped})


def certify_circuit(experiment: Experiment, circuit: Circuit, *, split: str = "test",
                    metric: str = SearchConfig.metric, config=None,
                    until_decided: bool = SearchConfig.certify_until_decided,
                    max_test_items: int = SearchConfig.max_test_items) -> Circuit:
    """``circuit`` with its certificate on ``split`` (one the search never saw), with the circuit's
    own ε, threshold, semantics and seed; ``metric``: ``accuracy`` or ``margin`` (default: the search
    config's); ``config``: a :class:`~kmshc.search.certificate.CertificateConfig` (confidence,
    tolerance, controls). ``until_decided``: while the verdict is undecided, score fresh items no
    split used, up to ``max_test_items`` in all (``certificate.verdict`` says what it found)."""
    from kmshc.search import CertificateConfig
    from kmshc.search.rounds import Certifier, ScoredRounds
    from kmshc.search.run import split_scores
    cfg = SearchConfig(experiment=experiment, metric=metric, certificate=config or CertificateConfig(seed=circuit.seed),
                       verify_split=split, certify_until_decided=until_decided, max_test_items=max_test_items)
    cert = Certifier(cfg, experiment, ScoredRounds(None, resume=False), []).certify(
        circuit.heads, semantics=circuit.semantics, epsilon=circuit.epsilon, threshold=circuit.config.get("threshold"),
        K=circuit.K)
    return replace(circuit, certificate=cert.to_dict(), scores={**circuit.scores, split: split_scores(cert)})


def _fixed_values(ablation: str | Ablation) -> list[torch.Tensor] | None:
    """Per-layer ablation values that do not depend on the batch: ``None`` (zero) or the means."""
    if ablation == "zero" or isinstance(ablation, ZeroAblation):
        return None
    if isinstance(ablation, MeanAblation) and not ablation.per_position:
        return list(ablation.means)
    name = ablation if isinstance(ablation, str) else ablation.name
    raise KmshcError(f"only_heads: ablation {name!r} (or per-position means) depends on the batch; use 'zero', "
                     "or the mean ablation of an Experiment with per_position=False (experiment.ablation_values)")


@contextmanager
def only_heads(model: nn.Module, circuit: Circuit | Iterable[str], *,
               ablation: str | Ablation) -> Iterator[nn.Module]:
    """Inside the block, ``model`` runs with only the circuit's heads; every other head's output
    is replaced by its ablation value. Hooks are removed on exit, also after an exception.

    ``circuit``: a :class:`Circuit` or head names (``"L3H5"``). ``ablation``: ``"zero"``, or an
    :class:`~kmshc.engine.ablation.Ablation` whose values do not depend on the batch, such as
    ``experiment.ablation_values`` for the default mean ablation. It has no default: the
    Experiment's default (mean) needs the means of a train split, which only the Experiment has.
    """
    n_layers, n_heads = head_shape(model)
    names = circuit.heads if isinstance(circuit, Circuit) else list(circuit)
    mask = heads_to_mask(names, n_layers, n_heads)
    with gated(model, mask, _fixed_values(ablation)):
        yield model
