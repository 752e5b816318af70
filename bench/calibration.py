"""The certificate's calibration table for docs/certificate.md (simulation, no model).

    python bench/calibration.py --reps 400 --cap_times 8

Prints one markdown row per cell of :func:`kmshc.search.calibration.grid`: the truth, the share
of draws a one-look certificate on the test split verified, and the shares a certificate that
draws fresh items until decided (up to ``cap_times`` times the test split) ends verified, refuted
and undecided. False cases must be verified at most alpha (5%) of the time; the true ones show
the power, and how often a truly certifiable circuit is refuted.
"""
from __future__ import annotations

import argparse
import math

from kmshc.search.calibration import grid, sequential_verdicts, simulate
from kmshc.search.certificate import CertificateConfig


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=400)
    p.add_argument("--epsilon", type=float, default=0.9)
    p.add_argument("--cap_times", type=int, default=8, help="the sequential certificate's cap, in test splits")
    args = p.parse_args()
    cfg = CertificateConfig()
    print(f"| metric | n | gap | case | truly certifiable | one look: verified | until decided: verified / "
          f"refuted / undecided (of {args.reps}) |")
    print("|---|---|---|---|---|---|---|")
    false_hits = false_total = seq_hits = 0
    for metric in ("accuracy", "margin"):
        for i, c in enumerate(grid(args.epsilon, cfg.tau, ns=(200, 400, 800), metric=metric)):
            rate = simulate(c, reps=args.reps, epsilon=args.epsilon, cfg=cfg, seed=i)
            seq = sequential_verdicts(c, reps=args.reps, cap=args.cap_times * c.n, epsilon=args.epsilon, cfg=cfg, seed=i)
            truth = c.truly_certifiable(args.epsilon, cfg.tau)
            if not truth:
                false_hits += round(rate * args.reps)
                seq_hits += round(seq["verified"] * args.reps)
                false_total += args.reps
            print(f"| {metric} | {c.n} | {c.gap} | {c.name} | {'yes' if truth else 'no'} | {rate:.3f} | "
                  f"{seq['verified']:.3f} / {seq['refuted']:.3f} / {seq['undecided']:.3f} |", flush=True)
    mc = 3 * math.sqrt(cfg.alpha * (1 - cfg.alpha) / false_total)
    print(f"\nAll false cases: one look {false_hits} of {false_total} verified ({false_hits / false_total:.4f}), "
          f"until decided {seq_hits} ({seq_hits / false_total:.4f}); alpha = {cfg.alpha:.2f}, three Monte-Carlo "
          f"SE = {mc:.4f}.")


if __name__ == "__main__":
    main()
