"""Rank heads without training: attribution patching and integrated gradients
(``attribution``), forward selection (``forward_selection``), and the ranking run that writes a
warm-startable ``gates.json`` (``run``, behind ``kmshc rank``)."""
