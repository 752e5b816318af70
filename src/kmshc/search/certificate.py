"""The certificate's types: what ``verified`` claims and every number behind it (docs/certificate.md).

A certificate is computed on a split the search never saw. Its claim, at confidence
``confidence`` (default 95%), for a circuit ``C``, tolerance ``τ`` and target ``ε``:

* the full-vs-baseline gap is real: its lower bound in accuracy is at least ``min_gap``;
* ``C`` recovers at least ``ε − τ`` of that gap (lower Fieller bound of ``r(C)``);
* without any one head ``h`` the recovery falls below ``ε + τ`` (upper bound of ``r(C \\ {h})``),
  and the drop ``S(C) − S(C \\ {h})`` is significant in a paired test, Holm-corrected over ``C``.

Together: ``C`` is 1-minimal-sufficient at some ``ε'`` within ``τ`` of ``ε``. ``epsilon_range``
is the set of targets ``ε'`` for which every check passes. All types are frozen dataclasses
with ``to_dict``/``from_dict`` so that circuit files round-trip.
"""
from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, Optional

from kmshc.types import KmshcError


@dataclass(frozen=True)
class CertificateConfig:
    """Every default of the certificate, in one place.

    ``confidence``: the claim's level. ``tau``: the tolerance around ``epsilon``. ``min_gap``: the
    smallest usable lower bound of the full-vs-baseline *accuracy* gap. Controls:
    ``random_controls`` random sets of ``|C|`` heads and one ``C`` plus ``extra_heads`` random
    heads, besides ``C`` minus its most important head. ``restore_samples``: paper semantics,
    K-bundles sampled at most. ``seed`` draws the controls and bundles.
    """

    confidence: float = 0.95
    tau: float = 0.05
    min_gap: float = 0.1
    random_controls: int = 3
    extra_heads: int = 2
    restore_samples: int = 100
    seed: int = 0
    # rho of the error spending alpha * t**rho over the rounds of a certificate that draws more items
    # (kmshc.search.sequential): 1 spends in proportion to the items read, so a circuit that needs a
    # few hundred more items than the test split is decided at the next round or two
    spending_power: float = 1.0

    def __post_init__(self) -> None:
        if not 0.5 < self.confidence < 1:
            raise KmshcError(f"certificate.confidence: expected a value in (0.5, 1), got {self.confidence}")
        if not 0 <= self.tau < 1:
            raise KmshcError(f"certificate.tau: expected a value in [0, 1), got {self.tau}")
        if isinstance(self.spending_power, bool) or not isinstance(self.spending_power, (int, float)) \
                or not self.spending_power > 0:
            raise KmshcError(f"certificate.spending_power: expected a positive number, got {self.spending_power!r}")
        for k in ("random_controls", "extra_heads", "restore_samples"):
            if getattr(self, k) < 0:
                raise KmshcError(f"certificate.{k}: expected a non-negative integer, got {getattr(self, k)}")

    @property
    def alpha(self) -> float:
        return 1 - self.confidence


@dataclass(frozen=True)
class Estimate:
    """A score in metric units with its accuracy, and the recovery with one-sided bounds."""

    value: float
    accuracy: float
    recovery: Optional[float] = None
    lower: Optional[float] = None
    upper: Optional[float] = None


@dataclass(frozen=True)
class Removal:
    """``C`` without one head. ``cls``: ``necessary`` (significant drop and recovery below
    ``ε + τ``), ``removable`` (``C \\ {h}`` itself clears ``ε − τ``) or ``undecided``."""

    head: str
    estimate: Estimate
    drop: float
    p_value: float
    p_holm: float
    cls: str


@dataclass(frozen=True)
class Control:
    """A negative control, certified by the same rules; ``verified`` must be False."""

    kind: str
    heads: list[str]
    verified: bool
    reason: str


@dataclass(frozen=True)
class Knockout:
    """``S(M \\ C)``: the full model with ``C`` ablated. ``verdict``: ``backup`` (the rest still
    recovers ``≥ ε − τ``), ``collapse`` (upper bound ``≤ 0.5``) or ``partial``."""

    estimate: Estimate
    verdict: str


@dataclass(frozen=True)
class Restore:
    """Paper semantics: ``(M \\ C) ∪ bundle``; ``passes`` when its lower bound is ``≥ ε − τ``."""

    heads: list[str]
    estimate: Estimate
    passes: bool


@dataclass(frozen=True)
class Look:
    """One round of a certificate: ``n`` items in all, ``new`` of them drawn for this round, the
    error ``alpha`` it spent, where its items came from and the checks still open after it."""

    n: int
    new: int
    alpha: float
    source: str
    open: list[str]


@dataclass(frozen=True)
class OpenCheck:
    """A check no look decided: why, and the items one more look would likely need (``None``: the
    effect seen points the wrong way, so no size would pass it)."""

    check: str
    reason: str
    n_needed: Optional[int] = None


VERDICTS = ("verified", "refuted", "undecided")


@dataclass(frozen=True)
class Certificate:
    """See the module docstring. ``verdict``: ``verified`` (every check passes), ``refuted`` (a
    check fails significantly the wrong way, or a control verifies) or ``undecided``; ``verified``
    is ``verdict == "verified"``. ``rounds``: the looks, test split first, then fresh items while
    undecided. ``undecided``: each open check with its reason. ``n_needed``: items that would
    likely decide the open checks (80% power), ``None`` when decided or when no size would."""

    split: str
    n: int
    metric: str
    confidence: float
    epsilon: float
    tau: float
    semantics: str
    K: int
    full: Estimate
    baseline: Estimate
    circuit: Estimate
    threshold: float
    gap_accuracy_lower: float
    usable_gap: bool
    removals: list[Removal]
    epsilon_range: Optional[list[float]]
    knockout: Optional[Knockout]
    controls: list[Control]
    verified: bool
    failing_heads: list[str]
    reasons: list[str]
    n_needed: Optional[int] = None
    restores: list[Restore] = field(default_factory=list)
    restore_bound: Optional[float] = None
    skipped: Optional[dict] = None
    evaluations: int = 0
    wall_time_s: float = 0.0
    verdict: str = "undecided"
    rounds: list[Look] = field(default_factory=list)
    undecided: list[OpenCheck] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any, where: str = "certificate") -> "Certificate":
        if not isinstance(d, dict):
            raise KmshcError(f"{where}: expected an object")
        missing = [f.name for f in fields(cls) if f.name not in d and f.default is MISSING
                   and f.default_factory is MISSING]
        if missing:
            raise KmshcError(f"{where}: missing field(s) {', '.join(missing)} (written by an older kmshc?)")
        try:
            kw = dict(d)
            for k in ("full", "baseline", "circuit"):
                kw[k] = Estimate(**d[k])
            kw["removals"] = [Removal(**{**r, "estimate": Estimate(**r["estimate"])}) for r in d["removals"]]
            kw["controls"] = [Control(**c) for c in d["controls"]]
            kw["restores"] = [Restore(**{**r, "estimate": Estimate(**r["estimate"])}) for r in d.get("restores", [])]
            kw.setdefault("verdict", "verified" if d["verified"] else "undecided")  # older files: two outcomes
            if kw["verdict"] not in VERDICTS:
                raise KmshcError(f"{where}: field 'verdict': expected one of {', '.join(VERDICTS)}, got {kw['verdict']!r}")
            kw["rounds"] = [Look(**r) for r in d.get("rounds", [])]
            kw["undecided"] = [OpenCheck(**u) for u in d.get("undecided", [])]
            kw["knockout"] = (Knockout(Estimate(**d["knockout"]["estimate"]), d["knockout"]["verdict"])
                              if d.get("knockout") else None)
            return cls(**{k: v for k, v in kw.items() if k in {f.name for f in fields(cls)}})
        except (TypeError, KeyError) as e:
            raise KmshcError(f"{where}: malformed certificate ({e})") from None

    def summary(self) -> list[str]:
        """A few lines a person reads in five seconds."""
        c, rng = self.circuit, self.epsilon_range
        drawn = f", {len(self.rounds)} rounds" if len(self.rounds) > 1 else ""
        lines = [f"certificate on {self.split} (n = {self.n}{drawn}, metric {self.metric}, {self.confidence:.0%}): "
                 f"{self.verdict.upper()}",
                 f"  {self.metric}: full model {self.full.value}, all heads ablated {self.baseline.value}, "
                 f"circuit {c.value} (accuracy {self.full.accuracy} / {self.baseline.accuracy} / {c.accuracy})",
                 f"  recovery r(C) = {c.recovery} (lower bound {c.lower}); target eps = {self.epsilon} ± {self.tau}; "
                 f"epsilon_range = {rng if rng else 'none'}"]
        classes: dict[str, int] = {}
        for r in self.removals:
            classes[r.cls] = classes.get(r.cls, 0) + 1
        if self.removals:
            lines.append("  heads: " + ", ".join(f"{v} {k}" for k, v in sorted(classes.items())))
        if self.knockout:
            k = self.knockout.estimate
            lines.append(f"  knockout S(M \\ C): recovery {k.recovery} [{k.lower}, {k.upper}] -> {self.knockout.verdict}")
        n_ok = sum(not c.verified for c in self.controls)
        lines.append(f"  controls: {n_ok} of {len(self.controls)} fail, as they must")
        lines += [f"  - {r}" for r in self.reasons]
        lines += [f"  - undecided {u.check}: {u.reason}" for u in self.undecided]
        if self.n_needed:
            lines.append(f"  about n = {self.n_needed} test items would likely decide it")
        return lines
