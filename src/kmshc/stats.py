"""Paired statistics over per-example outcomes: the one statistics module of kmshc.

Everything here is a pure function of per-example values. "Paired" means that every head set
is scored on the *same* examples, so a difference between two sets is a mean of per-example
differences, whose variance is small when the sets agree on most examples.

* The **recovery** of a head set ``A`` is ``r(A) = (S(A) − S(B)) / (S(M) − S(B))``, a ratio of
  two paired means. Its one-sided confidence bounds come from Fieller's theorem: ``r ≥ ρ`` is
  tested through the linear contrast ``d_i(ρ) = (x_i(A) − x_i(B)) − ρ (x_i(M) − x_i(B))``, whose
  mean is 0 exactly when ``r = ρ``; the bounds are the roots of ``mean(d)² = q² var(d)/n``
  (Fieller 1954; the t quantile ``q`` keeps small splits honest). Unlike a bootstrap of the
  ratio, this is exact for normal means and needs no resampling.
* The **drop** of a head is tested with a one-sided paired test: the exact McNemar (binomial)
  test on discordant examples for 0/1 outcomes, a one-sample t-test on the differences for
  continuous margins (scipy.stats). Tests over the heads of one circuit are Holm-corrected.
* Bootstrap helpers remain for intervals that have no closed form (compare reports).
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Sequence

import numpy as np
import torch
from scipy import special
from scipy import stats as st

Array = np.ndarray


def as_array(x) -> Array:
    """A float64 numpy copy of a tensor or sequence ``[n]``."""
    if isinstance(x, torch.Tensor):
        x = x.detach().double().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def is_binary(x: Array) -> bool:
    return bool(np.all((x == 0) | (x == 1)))


@lru_cache(maxsize=4096)
def t_quantile(level: float, n: int) -> float:
    """One-sided quantile of Student's t with ``n − 1`` degrees of freedom (normal for n ≤ 1).

    The scipy.special ufuncs that ``st.t.ppf`` / ``st.norm.ppf`` call, without their argument
    checking (~1 ms a call); cached because the searches and the calibration simulation ask for
    the same few (level, n) thousands of times."""
    return float(special.stdtrit(n - 1, level)) if n > 1 else float(special.ndtri(level))


def mean_bound(x, level: float, side: str) -> float:
    """One-sided ``level`` confidence bound of the mean of ``x`` ``[n]``: ``side`` is lower/upper."""
    x = as_array(x)
    n = x.size
    se = x.std(ddof=1) / math.sqrt(n) if n > 1 else 0.0
    q = t_quantile(level, n)
    return float(x.mean() - q * se if side == "lower" else x.mean() + q * se)


def recovery(x_a, x_b, x_m) -> float:
    """Point estimate ``(mean x_a − mean x_b) / (mean x_m − mean x_b)``; nan when the gap is 0."""
    gap = float(np.mean(as_array(x_m)) - np.mean(as_array(x_b)))
    return float(np.mean(as_array(x_a)) - np.mean(as_array(x_b))) / gap if gap else float("nan")


def recovery_bounds(x_a, x_b, x_m, level: float) -> tuple[float, float]:
    """Fieller one-sided ``level`` bounds ``(lower, upper)`` of ``r(A)`` from paired values ``[n]``.

    ``lower`` is the largest ρ for which "r ≤ ρ" is still rejected at ``1 − level``; ``upper`` the
    smallest ρ for which "r ≥ ρ" is rejected. When the gap itself is not significantly positive
    at this level, the ratio is unbounded: ``(-inf, inf)``.
    """
    u = as_array(x_a) - as_array(x_b)
    v = as_array(x_m) - as_array(x_b)
    n = u.size
    ub, vb = float(u.mean()), float(v.mean())
    # the sample covariance matrix of (u, v), written out: np.cov costs more than the rest here
    du, dv = u - ub, v - vb
    dof = max(n - 1, 1)  # one example: du = dv = 0, so zero variance
    su, sv, suv = float(du @ du) / dof, float(dv @ dv) / dof, float(du @ dv) / dof
    return _fieller(ub, vb, (su / n, suv / n, sv / n), t_quantile(level, n) ** 2)


def recovery_bounds_with_control(x_a, x_c, x_b, x_m, level: float) -> tuple[float, float]:
    """:func:`recovery_bounds` of ``A`` seen on the first ``m`` examples only (``x_a [m]``), helped by
    a control set ``C`` seen on all ``n ≥ m`` (``x_c, x_b, x_m [n]``).

    ``S(A) − S(B)`` is estimated as ``mean_n(x_c − x_b) + mean_m(x_a − x_c)`` (a control variate with
    coefficient 1): when ``C`` differs from ``A`` by a head or two, the per-example differences
    ``x_a − x_c`` vary far less than ``x_a`` itself, so ``m`` examples of ``A`` pin down almost as
    much as ``n`` would. The contrast ``N̂ − ρD̂`` has variance
    ``var(c − ρg)/n + var(δ)/m + 2 cov(c − ρg, δ)/n`` (``c = x_c − x_b``, ``g = x_m − x_b``,
    ``δ = x_a − x_c``; the covariance from the ``m`` shared examples), and the bounds are its Fieller
    roots with ``m − 1`` degrees of freedom. With ``m = n`` it is exactly :func:`recovery_bounds`.
    """
    xa, xc, xb, xm = as_array(x_a), as_array(x_c), as_array(x_b), as_array(x_m)
    m, n = xa.size, xc.size
    if m == n:
        return recovery_bounds(xa, xb, xm, level)
    if not (m < n == xb.size == xm.size):
        raise ValueError(f"need len(x_a) <= len(x_c) == len(x_b) == len(x_m); got {m}, {n}, {xb.size}, {xm.size}")
    c, g = xc - xb, xm - xb
    d = xa - xc[:m]
    cb, gb, db = float(c.mean()), float(g.mean()), float(d.mean())
    dc, dg = c - cb, g - gb
    scc, scg, sgg = (float(dc @ dc) / (n - 1), float(dc @ dg) / (n - 1), float(dg @ dg) / (n - 1))
    dd, dcm, dgm = d - db, c[:m] - c[:m].mean(), g[:m] - g[:m].mean()
    dof = max(m - 1, 1)
    sdd, scd, sgd = float(dd @ dd) / dof, float(dcm @ dd) / dof, float(dgm @ dd) / dof
    return _fieller(cb + db, gb, (scc / n + sdd / m + 2 * scd / n, (scg + sgd) / n, sgg / n),
                    t_quantile(level, m) ** 2)


def _fieller(num: float, den: float, var: tuple[float, float, float], q2: float) -> tuple[float, float]:
    """The roots ρ of ``(num − ρ·den)² = q2·(var₀ − 2ρ·var₁ + ρ²·var₂)``, where ``var`` holds the
    variance of ``num``, its covariance with ``den`` and the variance of ``den``; unbounded when
    ``den`` is not significantly positive."""
    a = den * den - q2 * var[2]
    if den <= 0 or a <= 0:
        return -math.inf, math.inf
    b = num * den - q2 * var[1]
    c = num * num - q2 * var[0]
    root = math.sqrt(max(b * b - a * c, 0.0))
    return (b - root) / a, (b + root) / a


def drop_p_value(x_with, x_without) -> float:
    """One-sided paired p-value for "removing the head lowers the score" (H0: mean drop ≤ 0).

    0/1 outcomes: exact McNemar, i.e. a binomial test of the examples the head turns from right
    to wrong against those it turns from wrong to right. Continuous values: a t-test of the
    per-example drops. No change at all gives p = 1.
    """
    a, b = as_array(x_with), as_array(x_without)
    d = a - b
    if not np.any(d):
        return 1.0
    # The p-values of st.binomtest(alternative="greater") and st.ttest_1samp(alternative="greater"),
    # from the scipy.special functions behind them: the wrappers cost ~1 ms a call, and the
    # calibration simulation makes thousands (tests compare both ways).
    if is_binary(a) and is_binary(b):
        lost, gained = int(np.sum(d > 0)), int(np.sum(d < 0))
        return 1.0 if lost == 0 else float(special.bdtrc(lost - 1, lost + gained, 0.5))  # P(X ≥ lost)
    sd = float(np.std(d, ddof=1)) if d.size > 1 else 0.0
    if sd == 0:
        return 0.0 if d.mean() > 0 else 1.0
    t = float(d.mean()) / (sd / math.sqrt(d.size))
    return float(special.stdtr(d.size - 1, -t))


def holm(p_values: Sequence[float], alpha: float) -> tuple[list[bool], list[float]]:
    """Holm step-down over a family: ``(rejected, adjusted p-values)``.

    Written out rather than taken from ``statsmodels.stats.multitest.multipletests``, which
    gives the same numbers (a test checks it) but calls ``gc.collect()`` on every call: about
    0.8 s each once torch is loaded, and the calibration simulation makes thousands of calls.
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * float(p_values[i])))
        adjusted[i] = running
    return [a <= alpha for a in adjusted], adjusted


def n_needed(d, alpha: float, power: float = 0.8) -> int | None:
    """Examples a one-sided test of ``mean(d) > 0`` at level ``alpha`` needs for ``power``,
    from the observed mean and sd of the contrast ``d`` ``[n]`` (normal approximation).
    ``None`` when the observed mean is not positive: no split size would pass it."""
    d = as_array(d)
    mu, sd = float(d.mean()), float(d.std(ddof=1)) if d.size > 1 else 0.0
    if mu <= 0:
        return None
    z = st.norm.ppf(1 - alpha) + st.norm.ppf(power)
    return max(2, math.ceil((z * sd / mu) ** 2))


# ---------------------------------------------------------------- bootstrap (compare reports)
def bootstrap_means(x: torch.Tensor, n_boot: int = 1000, seed: int = 0) -> torch.Tensor:
    """Bootstrap means ``[M, n_boot]`` of ``x`` ``[M, n]``, resampling the same examples for every
    row (paired: rows can be subtracted resample by resample); reproducible from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, x.shape[1], (n_boot, x.shape[1]), generator=g)
    return x.double()[:, idx].mean(-1)


def percentile_interval(samples: torch.Tensor, confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided percentile interval of 1-D bootstrap ``samples``."""
    a = (1 - confidence) / 2
    q = torch.quantile(samples.double(), torch.tensor([a, 1 - a], dtype=torch.float64))
    return float(q[0]), float(q[1])


def zero_failure_bound(n_samples: int, confidence: float = 0.95) -> float:
    """Upper bound on the failing fraction when ``n_samples`` random draws all passed.

    Solves ``(1 - p)^n = 1 - confidence`` (the "rule of three" for n large: about 3/n at 95%).
    """
    if n_samples <= 0:
        return 1.0
    return float(1 - (1 - confidence) ** (1 / n_samples))
