"""The settings of one search run (:class:`SearchConfig`), which own every search default: the
command line (``kmshc search``, ``search.py``), the configs in ``configs/search/`` and the Python
API (:func:`kmshc.search_circuit`) all start from them."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from kmshc.experiment import Experiment
from kmshc.search.certificate import CertificateConfig
from kmshc.search.settings import SearchSettings
from kmshc.types import KmshcError


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
    # confident decisions remove a head while r(C \ {h}) stays >= epsilon - bar_slack * certificate.tau
    # (see SearchConfig.bar for why half of tau)
    bar_slack: float = 0.5
    adaptive: bool = False  # score the search split in growing chunks; stop when a decision is clear
    looks: int = 5
    # adaptive decisions before the last look borrow from the nearest set already read further (a
    # control variate, kmshc.search.decide); false: each decision from its own examples only
    adaptive_controls: bool = True
    certificate: CertificateConfig = field(default_factory=CertificateConfig)
    # while the certificate is undecided, score fresh test items in rounds (doubling the sample) up to
    # max_test_items in all: new draws of a generated task, or a data file's items no split used
    certify_until_decided: bool = True
    max_test_items: int = 4000
    # a refuted certificate whose circuit has a removable head: remove it and certify the smaller set on
    # fresh items, at most this many times (0: report the refutation as it is); a search on a small val
    # split keeps every head it cannot confidently remove, and the certificate's larger samples find them
    repairs: int = 10
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

    def __post_init__(self) -> None:
        """Check the values that need no file or model, so a bad one fails before anything loads
        (the command line, a config file and the Python API all construct this class)."""
        for key in ("epsilon", "threshold", "K", "N", "looks", "spending_power", "decision_confidence", "bar_slack"):
            v = getattr(self, key)
            # a YAML ``null`` or a string can reach here through a config file; compare only numbers
            if not (v is None and key == "threshold") and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise KmshcError(f"{key}: expected a number, got {v!r}")
        if not 0 < self.epsilon <= 1:
            raise KmshcError(f"epsilon: expected a value in (0, 1], got {self.epsilon}")
        if self.threshold is not None and not 0 <= self.threshold <= 1:
            raise KmshcError(f"threshold: expected an accuracy in [0, 1], got {self.threshold}")
        for key in ("max_test_items", "repairs"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < (1 if key == "max_test_items" else 0):
                raise KmshcError(f"{key}: expected a {'positive' if key == 'max_test_items' else 'non-negative'} "
                                 f"integer, got {v!r}")
        for key in ("K", "N", "looks"):
            if getattr(self, key) < 1:
                raise KmshcError(f"{key}: expected a positive integer, got {getattr(self, key)}")
        if not self.spending_power > 0:
            raise KmshcError(f"spending_power: expected a positive number, got {self.spending_power}")
        if not 0.5 < self.decision_confidence < 1:
            raise KmshcError(f"decision_confidence: expected a value in (0.5, 1), got {self.decision_confidence}")
        if not 0.0 <= self.bar_slack <= 1.0:
            raise KmshcError(f"search config field bar_slack: {self.bar_slack} is outside [0, 1] (0 decides "
                             "against epsilon, 1 against the certificate's sufficiency bar epsilon - tau)")
        if self.exclude and (self.semantics == "paper" or self.mode == "verify"):
            raise KmshcError("exclude: only for searches with keep semantics (paper semantics keeps the heads outside "
                             "C active, so excluded heads could not stay ablated)")
        if self.resume and self.overwrite:
            raise KmshcError("--resume and --overwrite exclude each other")

    @property
    def confident(self) -> bool:
        """Whether removals are decided on the recovery's lower confidence bound: ``decision`` asks
        for it and the scores are in recovery units (keep semantics, a relative threshold, an empty
        baseline); otherwise on the point estimate of the metric."""
        return (self.decision == "confident" and self.semantics == "keep" and self.threshold is None
                and self.baseline == "empty")

    @property
    def bar(self) -> float:
        """The ε the search decides against: ``ε − bar_slack·τ`` for confident decisions (τ the
        certificate's tolerance), ``ε`` otherwise.

        A confident search removes a head while the lower ``decision_confidence`` bound of
        ``r(C \\ {h})`` on val clears the bar, so it prunes until the last removals sit just above
        it. The certificate then asks two things on test: the final set's lower 97.5% bound
        ``≥ ε − τ`` (sufficiency), and for every kept head, whose removal left a val bound just
        under the bar, an upper 97.5% bound ``< ε + τ`` (necessity). With standard error ``s`` on
        both splits, a bar ``b`` passes the first when ``b ≥ ε − τ + (1.96 − 1.28)·s`` and the
        second when ``b ≤ ε + τ − (1.28 + 1.96)·s``. A bar at ``ε − τ`` (slack 1) fails the
        first for any ``s`` when the last removal lands on the bar; a bar at ``ε`` (slack 0)
        needs ``s ≤ 0.015`` at τ = 0.05 for the second. Half of τ passes both for ``s`` up to
        about 0.023 and sufficiency up to 0.037, and it errs towards sufficiency, the check that
        always sits at the edge (docs/certificate.md, "The search's bar")."""
        return self.epsilon - self.bar_slack * self.certificate.tau if self.confident else self.epsilon

    @property
    def units(self) -> str:
        """What the search's scores and ``U`` are in: recovery lower bounds, or the metric."""
        return "recovery lower bound" if self.confident else self.metric

    def recorded(self) -> dict[str, Any]:
        """The fields a circuit records as its search settings: all but the experiment (recorded on
        its own) and the run's housekeeping (``resume``, ``overwrite``, ``progress``)."""
        return {k: v for k, v in asdict(self).items() if k not in ("resume", "overwrite", "progress", "experiment")}


# search fields under their earlier names, read as the field now: {old name: field}
RENAMED = {"tau": "gate_threshold"}
# what a recorded search without adaptive_controls ran with
BEFORE_CONTROLS = {"adaptive_controls": False, "spending_power": 2.0}


def legacy_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` (a config's, a recorded search's or keywords) with each renamed field under its
    name now; an old name that is ``None`` (a parser's unset flag) is dropped."""
    out = {k: v for k, v in fields.items() if k not in RENAMED}
    for old, new in RENAMED.items():
        if fields.get(old) is not None:
            out[new] = fields[old]
    return out


def settings_of(circuit) -> dict[str, Any]:
    """The search settings ``circuit`` (a :class:`~kmshc.types.Circuit`) was found with, to run the
    same search again (e.g. with another decision rule or start). A circuit written before
    ``bar_slack`` was recorded decided against ``ε − τ``; its slack is read back from the bar it
    reports on val (``scores.val.threshold`` in recovery units), so the rerun decides alike. A
    circuit whose settings predate ``adaptive_controls`` was searched without controls and at
    spending power 2, and is rerun so. A gate threshold recorded as ``tau`` is read as ``gate_threshold``."""
    cfg = legacy_fields(dict(circuit.config.get("search") or {}))
    if cfg and "adaptive_controls" not in cfg:
        cfg = {**BEFORE_CONTROLS, **cfg}
    val = (circuit.scores or {}).get("val") or {}
    if "bar_slack" not in cfg and val.get("units") == "recovery lower bound" and "threshold" in val:
        tau = float((cfg.get("certificate") or {}).get("tau", CertificateConfig.tau))
        cfg["bar_slack"] = round((float(cfg.get("epsilon", circuit.epsilon)) - float(val["threshold"])) / tau, 9)
    return cfg
