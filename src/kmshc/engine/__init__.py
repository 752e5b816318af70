"""The scoring engine every step stands on: load a model (``models``, ``tiny``), find its
attention heads (``architectures``), switch heads off (``hooks``, ``ablation``), encode a task's
prompts (``encoding``, ``prefix``), and score a head mask (``scoring``, ``readout``), with its
device, memory, cost and multi-process helpers."""
