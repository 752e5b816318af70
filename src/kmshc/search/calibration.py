"""Calibration of the certificate by simulation: per-example outcomes with a known truth.

Each simulated case fixes the true recoveries of ``C`` and of ``C`` without each of its heads,
draws per-example values for ``M``, ``B``, ``C`` and the removals on ``n`` shared examples, and
asks :func:`~kmshc.search.checks.verify_values` for the verdict. A case is *truly*
minimal-sufficient within ``τ`` when ``r(C) ≥ ε − τ``, every ``r(C \\ {h}) < ε + τ`` and every
drop is positive; the certificate must verify the others at most ``α`` of the time.

Outcomes share each example's difficulty, as nested head sets do on real data:
* ``accuracy``: example ``i`` has a latent ``u_i ~ U(0, 1)``; a set with success probability
  ``p`` is right when ``u_i < p``, except that with probability ``1 − coupling`` it draws its
  own uniform (so sets also disagree on some examples in both directions);
* ``margin``: ``x_i(A) = μ_A + s_i + e_iA`` with a shared ``s_i ~ N(0, 2²)`` and ``e ~ N(0, 1)``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from kmshc.search.certificate import CertificateConfig
from kmshc.search.checks import verify_values
from kmshc.search.sequential import Sequential, look_alphas, run_looks, schedule


@dataclass(frozen=True)
class Case:
    """One cell of the grid: true recoveries of ``C`` and of each removal, on ``n`` examples."""

    name: str
    n: int
    gap: float
    r_circuit: float
    r_removals: tuple[float, ...]
    metric: str = "accuracy"

    def truly_certifiable(self, epsilon: float, tau: float) -> bool:
        return (self.r_circuit >= epsilon - tau and all(r < epsilon + tau for r in self.r_removals)
                and all(r < self.r_circuit for r in self.r_removals))


def draw(case: Case, rng: np.random.Generator, *, reps: int, coupling: float = 0.9,
         base: float = 0.5) -> np.ndarray:
    """``reps`` independent draws at once, ``[reps, 3 + k, n]``: rows ``M, B, C, C \\ h_1..h_k``."""
    rs = np.array([1.0, 0.0, case.r_circuit, *case.r_removals])[None, :, None]  # [1, 3 + k, 1]
    shape = (reps, rs.shape[1], case.n)
    if case.metric == "margin":
        shared = rng.normal(0, 2, (reps, 1, case.n))
        return base + case.gap * 10 * rs + shared + rng.normal(0, 1, shape)
    u = rng.uniform(size=(reps, 1, case.n))
    own = np.where(rng.uniform(size=shape) < coupling, u, rng.uniform(size=shape))
    return (own < base + case.gap * rs).astype(float)


def simulate(case: Case, *, reps: int, epsilon: float = 0.9, cfg: CertificateConfig = CertificateConfig(),
             coupling: float = 0.9, seed: int = 0) -> float:
    """Share of ``reps`` draws of ``case`` that the certificate verifies.

    The draws are made in one vectorised call; the verdict stays the certificate's own
    (:func:`verify_values`, one call per draw), since that is what the simulation checks."""
    x = draw(case, np.random.default_rng(seed), reps=reps, coupling=coupling)
    acc = (x[:, :3] > 0).astype(float) if case.metric == "margin" else None
    hits = sum(verify_values(xr[0], xr[1], xr[2], list(xr[3:]), epsilon=epsilon, cfg=cfg, metric=case.metric,
                             acc=None if acc is None else list(acc[i]))
               for i, xr in enumerate(x))
    return hits / reps


def grid(epsilon: float = 0.9, tau: float = 0.05, ns: tuple[int, ...] = (200, 400, 800),
         gaps: tuple[float, ...] = (0.2, 0.4), metric: str = "accuracy") -> list[Case]:
    """The standard grid: false cases at and beyond each edge of the claim, true ones with margin."""
    lo, hi = epsilon - tau, epsilon + tau
    cases = []
    for n in ns:
        for gap in gaps:
            def c(name, rc, rr):
                return Case(name, n, gap, rc, tuple(rr), metric)
            cases += [
                c("insufficient, at the edge", lo - 0.001, [0.5, 0.5, 0.5]),
                c("insufficient", lo - 0.05, [0.5, 0.5, 0.5]),
                c("one head irrelevant", 0.95, [0.5, 0.5, 0.95]),
                c("one removal at the upper edge", 1.0, [0.5, 0.5, hi]),
                c("one removal above the window", 1.0, [0.5, 0.5, hi + 0.05]),
                c("minimal-sufficient with margin", 1.0, [0.7, 0.7, 0.7]),
                c("minimal-sufficient, close to eps", epsilon, [epsilon - 0.15] * 3),
            ]
    return cases


def sequential_verdicts(case: Case, *, reps: int, cap: int, epsilon: float = 0.9,
                        cfg: CertificateConfig = CertificateConfig(), coupling: float = 0.9,
                        seed: int = 0, alphas: list[float] | None = None) -> dict[str, float]:
    """Shares of ``reps`` sequential certificates of ``case`` ending ``verified``, ``refuted`` and
    ``undecided``: the test split holds ``case.n`` examples, and each later look draws fresh ones
    from the same truth, up to ``cap`` in all (:mod:`kmshc.search.sequential`). ``alphas``: the
    error each look spends, instead of the certificate's spending (to show what a wrong one does)."""
    rng = np.random.default_rng(seed)
    heads = [f"h{i}" for i in range(len(case.r_removals))]

    def values(n: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        x = draw(replace(case, n=n), rng, reps=1, coupling=coupling)[0]
        acc = (x > 0).astype(float) if case.metric == "margin" else x
        return {k: (x[i], acc[i]) for i, k in enumerate(["full", "base", "circuit", *heads])}

    sizes = schedule(case.n, cap)
    alphas = alphas or look_alphas(sizes, cfg.alpha, cfg.spending_power)
    counts = {"verified": 0, "refuted": 0, "undecided": 0}
    for _ in range(reps):
        seq = Sequential(heads, epsilon, cfg, case.metric)
        run_looks(seq, values(case.n), lambda k, count, rows: ({r: v for r, v in values(count).items() if r in rows},
                                                               "simulated"), sizes, alphas, "test")
        counts[seq.verdict] += 1
    return {k: v / reps for k, v in counts.items()}


# ------------------------------------------------------- resampling real per-example values
Population = dict[str, tuple[np.ndarray, np.ndarray]]  # row -> (metric values [N], 0/1 accuracy [N])


def place_truth(pop: Population, row: str, r: float) -> Population:
    """``pop`` with row ``row`` shifted by a constant so that its population recovery
    ``(mean x_row − mean x_B) / (mean x_M − mean x_B)`` is exactly ``r``: the truth placed on a
    boundary of the claim, with the row's real per-example spread and its pairing kept."""
    xm, xb = pop["full"][0].mean(), pop["base"][0].mean()
    x, acc = pop[row]
    shifted = x + (r * (xm - xb) + xb - x.mean())
    return {**pop, row: (shifted, acc)}


def population_recovery(pop: Population, row: str) -> float:
    xm, xb = pop["full"][0].mean(), pop["base"][0].mean()
    return float((pop[row][0].mean() - xb) / (xm - xb))


def resampled_verdicts(pop: Population, heads: list[str], *, n0: int, cap: int, reps: int, epsilon: float,
                       cfg: CertificateConfig = CertificateConfig(), metric: str = "margin",
                       seed: int = 0) -> dict[str, float]:
    """Shares of ``reps`` sequential certificates ending verified / refuted / undecided when every
    round draws its items from ``pop`` (with replacement, rows kept paired), and the mean number of
    items they used (``"items"``)."""
    rng = np.random.default_rng(seed)
    size = len(pop["full"][0])

    def values(n: int, rows) -> Population:
        idx = rng.integers(0, size, n)
        return {r: (pop[r][0][idx], pop[r][1][idx]) for r in rows}

    sizes = schedule(n0, cap)
    alphas = look_alphas(sizes, cfg.alpha, cfg.spending_power)
    counts = {"verified": 0, "refuted": 0, "undecided": 0}
    used = 0
    for _ in range(reps):
        seq = Sequential(heads, epsilon, cfg, metric)
        looks, _ = run_looks(seq, values(n0, ["full", "base", "circuit", *heads]),
                             lambda k, count, rows: (values(count, rows), "resampled"), sizes, alphas, "test")
        counts[seq.verdict] += 1
        used += looks[-1].n
    return {**{k: v / reps for k, v in counts.items()}, "items": used / reps}
