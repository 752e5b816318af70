"""Search-K-MSHC: macro layer search, micro head search (keep and paper semantics), refinement
from learned gates, and the held-out certificate. Searches are pure functions of a
:class:`Recorder`, which wraps ``evaluate_many(masks [M, L, H]) -> M scores``.

Modules: ``settings`` (the drivers' defaults) and ``config`` (one run's settings); ``macro``,
``micro`` and ``refine`` (the searches); ``decide`` (point or confident scores); ``state`` (the
recorder, resume); ``plan``, ``checks``, ``controls``, ``verify`` and ``certificate`` (the
certificate); ``run`` and ``rundir`` (a search run with its files)."""
from kmshc.search.common import SearchResult, draw_bundles, mask_of, threshold_value
from kmshc.search.macro import MacroResult, macro_layer_search
from kmshc.search.micro import removal_loop, restore_loop, single_head_pass
from kmshc.search.refine import cold_search, refine
from kmshc.search.state import BudgetExhausted, Recorder, batched
from kmshc.search.verify import certify
from kmshc.search.certificate import Certificate, CertificateConfig

__all__ = ["SearchResult", "MacroResult", "Recorder", "BudgetExhausted", "macro_layer_search", "restore_loop",
           "removal_loop", "single_head_pass", "refine", "cold_search", "certify", "threshold_value",
           "draw_bundles", "mask_of", "batched", "Certificate", "CertificateConfig"]
