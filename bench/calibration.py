"""The certificate's calibration table for docs/certificate.md (simulation, no model).

    python bench/calibration.py --reps 400

Prints one markdown row per cell of :func:`kmshc.search.calibration.grid`: the truth, and the
share of draws the certificate verified. False cases must stay at or below alpha (5%); the
"with margin" cases show the power.
"""
from __future__ import annotations

import argparse
import math

from kmshc.search.calibration import grid, simulate
from kmshc.search.certificate import CertificateConfig


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=400)
    p.add_argument("--epsilon", type=float, default=0.9)
    args = p.parse_args()
    cfg = CertificateConfig()
    print(f"| metric | n | gap | case | truly certifiable | verified (of {args.reps}) |")
    print("|---|---|---|---|---|---|")
    false_hits = false_total = 0
    for metric in ("accuracy", "margin"):
        for i, c in enumerate(grid(args.epsilon, cfg.tau, ns=(200, 400, 800), metric=metric)):
            rate = simulate(c, reps=args.reps, epsilon=args.epsilon, cfg=cfg, seed=i)
            truth = c.truly_certifiable(args.epsilon, cfg.tau)
            if not truth:
                false_hits += round(rate * args.reps)
                false_total += args.reps
            print(f"| {metric} | {c.n} | {c.gap} | {c.name} | {'yes' if truth else 'no'} | {rate:.3f} |", flush=True)
    mc = 3 * math.sqrt(cfg.alpha * (1 - cfg.alpha) / false_total)
    print(f"\nAll false cases: {false_hits} of {false_total} verified ({false_hits / false_total:.4f}; "
          f"alpha = {cfg.alpha:.2f}, three Monte-Carlo SE = {mc:.4f}).")


if __name__ == "__main__":
    main()
