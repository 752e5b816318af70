"""The settings of one search run (:class:`SearchConfig`), which own every search default: the
command line (``kmshc search``, ``search.py``), the configs in ``configs/search/`` and the Python
API (:func:`kmshc.search_circuit`) all start from them."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from kmshc.experiment import Experiment
from kmshc.search.certificate import CertificateConfig
from kmshc.search.settings import SearchSettings


@dataclass(frozen=True)
class SearchConfig(SearchSettings):
    """One search run: the search's :class:`~kmshc.search.settings.SearchSettings` plus its mode, data,
    files and certificate. ``name``: output folder under ``runs_dir`` for cold runs (warm writes into
    the train run's folder, verify next to the circuit)."""

    mode: Literal["cold", "warm", "verify"] = "cold"
    name: str | None = None
    runs_dir: str = "runs"
    from_run: str | None = None
    circuit: str | None = None
    seed: int | None = None
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

    @property
    def confident(self) -> bool:
        """Whether removals are decided on the recovery's lower confidence bound: ``decision`` asks
        for it and the scores are in recovery units (keep semantics, a relative threshold, an empty
        baseline); otherwise on the point estimate of the metric."""
        return (self.decision == "confident" and self.semantics == "keep" and self.threshold is None
                and self.baseline == "empty")

    @property
    def bar(self) -> float:
        """The ε the search decides against. Confident decisions remove a head when ``C \\ {h}``
        would still pass the certificate's sufficiency check, ``r ≥ ε − τ``, judged with
        ``decision_confidence`` on val. A bar at ε itself keeps heads whose removal leaves a
        recovery between ε − τ and ε plus the search's noise; the certificate must then show each
        of them *necessary* (``r(C \\ {h}) < ε + τ``), a check every kept head has to pass, while the
        lower bar risks only the one sufficiency check of the final set (docs/certificate.md)."""
        return self.epsilon - self.certificate.tau if self.confident else self.epsilon

    @property
    def units(self) -> str:
        """What the search's scores and ``U`` are in: recovery lower bounds, or the metric."""
        return "recovery lower bound" if self.confident else self.metric

    def recorded(self) -> dict[str, Any]:
        """The fields a circuit records as its search settings: all but the experiment (recorded on
        its own) and the run's housekeeping (``resume``, ``overwrite``, ``progress``)."""
        return {k: v for k, v in asdict(self).items() if k not in ("resume", "overwrite", "progress", "experiment")}
