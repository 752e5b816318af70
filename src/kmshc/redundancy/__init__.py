"""Redundancy: disjoint sufficient circuits one after another (``kmshc redundancy``). The pure
core is ``disjoint`` (find ``C1``, exclude it, find ``C2``, ...; score knock-outs and mixes),
``run`` runs it on a model, ``report`` writes the report."""
from kmshc.redundancy.disjoint import (Analysis, Dynamics, Found, Mix, Point, analyze, find_circuits, grid,
                                       importance_order)

__all__ = ["Analysis", "Dynamics", "Found", "Mix", "Point", "analyze", "find_circuits", "grid", "importance_order"]
