"""What a search does when its certificate is refuted because a head is removable.

The certificate's rounds hold many more items than the search split, so a removable head found
there is usually one of several the search kept only for want of data. :func:`repair` turns
those spent items into a search split: it runs the search's own ordered deletion and
single-head pass on them (the rounds as the adaptive looks, every mask the certificate scored
read back for free), then certifies the smaller circuit on items no earlier certificate saw.
When that search removes nothing (the certificate's bar ``ε − τ`` sits below the search's),
the single most removable head goes instead. Either way each repaired circuit is certified on
unseen items, so a repair never grades its own work.
"""
from __future__ import annotations

from typing import Any, Protocol

from kmshc.search.common import NoSufficientSet, indices, mask_of, names
from kmshc.search.decide import RecoveryScores
from kmshc.search.refine import refine
from kmshc.search.state import Recorder


def search_on_spent_items(spent: list, shape: tuple[int, int], heads: list[str], removals, *, cfg: Any,
                          seed: int = 0) -> tuple[list[str], int]:
    """Ordered deletion then a single-head pass over ``heads`` on a certificate's rounds.

    Args:
        spent: the rounds' outcome functions (``masks [M, L, H] -> per-example outcomes``), in
            round order; their cumulative sizes double, as the adaptive looks assume.
        removals: the certificate's :class:`~kmshc.search.certificate.Removal` records: heads
            whose removal kept the most recovery are tried first.
        cfg: the :class:`~kmshc.search.config.SearchConfig` whose bar, confidence and metric decide.
    Returns ``(heads kept, evaluations)``; ``heads`` unchanged when no removal clears the bar.
    """
    rs = RecoveryScores(spent, full_mask=mask_of(range(shape[0] * shape[1]), shape), base_mask=mask_of((), shape),
                        metric=cfg.metric, epsilon=cfg.bar, confidence=cfg.decision_confidence, adaptive=True,
                        spending_power=cfg.spending_power)
    rec = Recorder(rs)
    flat = dict(zip(heads, indices(heads, shape)))
    kept = {r.head: r.estimate.recovery for r in removals if r.head in flat}
    importance = {flat[h]: -kept.get(h, 0.0) for h in heads}  # least important = most recovery without it
    try:
        res = refine(rec, shape, {i: 1.0 for i in flat.values()}, epsilon=cfg.bar, threshold=None,
                     gate_threshold=0.5, seed=seed, strategy="ordered", importance=importance,
                     margin=cfg.search_margin)
    except NoSufficientSet:  # the circuit itself misses the bar on these items: nothing to search
        return list(heads), rec.evaluations
    return list(names(indices(res.heads, shape), shape)), rec.evaluations


class Recertifies(Protocol):
    """What :func:`repair` needs of a certifier (:class:`~kmshc.search.rounds.Certifier` is one)."""

    spent: list  # the last certificate's rounds (outcome functions); empty: none to search again

    def certify(self, heads: list[str], **kw) -> Any: ...

    def can_certify_again(self) -> bool: ...


def repair(certifier: Recertifies, heads: list[str], cert, *, tries: int, shape: tuple[int, int] | None = None,
           cfg: Any = None, **kw) -> tuple[list[str], object, list[dict]]:
    """While ``cert`` is refuted because a head is removable, shrink ``heads`` and certify the
    smaller set on fresh items; at most ``tries`` times.

    With ``cfg`` and ``shape`` (and a non-empty ``certifier.spent``), the
    search runs again on the spent items (:func:`search_on_spent_items`); without them, or when
    it removes nothing, the removable head with the highest lower bound goes. Returns the final
    heads, their certificate and one record per repair (``removed``: the heads taken out)."""
    steps: list[dict] = []
    while cert.verdict == "refuted" and len(steps) < tries:
        removable = [r for r in cert.removals if r.cls == "removable"]
        if not removable or any(c.verified for c in cert.controls):
            break
        # a data file with no unused items left: keep the refuted certificate (its reasons say so,
        # rounds.file_note) rather than shrink to a circuit nothing could certify
        if not certifier.can_certify_again():
            break
        smaller, evaluations = heads, 0
        # the search's recovery units need keep semantics and the empty baseline
        searchable = kw.get("semantics", "keep") == "keep" and not kw.get("baseline_heads")
        if cfg is not None and shape is not None and searchable and certifier.spent:
            smaller, evaluations = search_on_spent_items(certifier.spent, shape, heads, cert.removals, cfg=cfg,
                                                         seed=len(steps))
        if len(smaller) < len(heads):
            because = (f"the search, run again on the certificate's {cert.n} items, removed them "
                       f"({evaluations} evaluations)")
        else:
            best = max(removable, key=lambda r: (r.estimate.lower, r.head))
            smaller = [h for h in heads if h != best.head]
            because = (f"C without it still recovers {best.estimate.recovery} (lower bound "
                       f"{best.estimate.lower} >= eps - tau) on {cert.n} test items")
        steps.append({"removed": [h for h in heads if h not in smaller], "items": cert.n, "because": because,
                      "evaluations": evaluations})
        heads = smaller
        cert = certifier.certify(heads, **kw)
    return heads, cert, steps


def removed_heads(steps: list[dict]) -> list[str]:
    """Every head the repairs took out, in order (older records name one head as a string)."""
    return [h for s in steps for h in ([s["removed"]] if isinstance(s["removed"], str) else s["removed"])]
