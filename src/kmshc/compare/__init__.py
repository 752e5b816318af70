"""Comparing circuits: learned vs searched, across tasks and across seeds.

Imports run one way, so there is no cycle::

    entries  (Entry, loading, set maths)  <-  tables  <-  report  ->  plots, wandb_log
    kmshc.entry.compare (the CLI verb) -> report, lazily

``entries`` and ``tables`` hold the pure functions, re-exported here; ``report`` writes the
files of ``kmshc compare``; ``plots`` draws PNGs; ``wandb_log`` is imported only with ``--wandb``.
"""
from kmshc.compare.entries import (LEVELS, Entry, classify_heads, depth_summary, head_frequency, infer_shape,
                                   jaccard, layer_counts, load_entries, mean_layer_distribution,
                                   mean_pairwise_jaccard, overlap_matrix, pair_stats, precision_recall)
from kmshc.compare.tables import (bootstrap_means, circuit_row, cross_analysis, group, pair_rows, percentile_ci,
                                  recorded_scores, rescore, same_run_agreement)

__all__ = ["LEVELS", "Entry", "classify_heads", "depth_summary", "head_frequency", "infer_shape", "jaccard",
           "layer_counts", "load_entries", "mean_layer_distribution", "mean_pairwise_jaccard", "overlap_matrix",
           "pair_stats", "precision_recall", "bootstrap_means", "circuit_row", "cross_analysis", "group",
           "pair_rows", "percentile_ci", "recorded_scores", "rescore", "same_run_agreement"]
