"""What a computation costs, counted as rows that really ran through the model's decoder layers.

The unit is the **example forward**: one example (a minimal pair's two sentences, or one prompt)
run once through all ``L`` decoder layers. Rows are counted where they run, at every decoder
layer's attention output projection (:func:`kmshc.engine.hooks.count_rows`), so every saving is
reflected exactly and nothing that did not run is counted:

* a masked row that starts at layer ``ℓ`` (the prefix cache, :mod:`kmshc.engine.prefix`) counts
  ``(L − ℓ)/L``; the shared prefix of a batch counts ``ℓ/L`` per example when it is computed, and
  nothing when it comes from the cache;
* a prefix run stops before layer ``ℓ`` and counts only the layers below it;
* forwards that score no mask but feed one (resample ablation values, a probe's training
  features) are counted too, since they run;
* a backward pass through a layer counts like a forward through it: the model's weights are
  frozen, so only activation gradients flow, about one forward's arithmetic. A training or
  attribution row that goes forward and back through the whole model is 2 example forwards.

Counted apart, in sequence positions: ``logit_positions``, where vocabulary logits were formed.
The shared-token saving (a pair's identical prefix is not scored) acts only there; it does not
change the decoder rows. Not counted anywhere: the one-time fit of mean-ablation values (one
forward over the train split), which every route (training, attribution, search) pays alike.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from kmshc.types import KmshcError


@dataclass
class RowCount:
    """Running counts in **sequence** rows; the properties convert them to example units.

    Args:
        n_layers: decoder layers ``L`` of the model.
        rows_per_example: sequences per example (2 for minimal pairs, 1 for prompts).
    """

    n_layers: int
    rows_per_example: int = 1
    seq_rows: int = 0                 # sequences whose forward reached the last decoder layer
    seq_layer_rows: int = 0           # Σ over decoder layers run forward of the sequences through it
    seq_backward_layer_rows: int = 0  # the same for backward passes
    logit_positions: int = 0          # positions at which vocabulary logits were formed

    def add_forward(self, rows: int, last_layer: bool) -> None:
        self.seq_layer_rows += rows
        if last_layer:
            self.seq_rows += rows

    def add_backward(self, rows: int) -> None:
        self.seq_backward_layer_rows += rows

    def add_logits(self, positions: int) -> None:
        self.logit_positions += positions

    @property
    def example_rows(self) -> float:
        """Example × mask rows whose forward completed (each counts 1, whatever layer it started at)."""
        return self.seq_rows / self.rows_per_example

    @property
    def forward_example_forwards(self) -> float:
        """Forward work in example forwards: ``Σ layers run / L``, per example."""
        return self.seq_layer_rows / (self.n_layers * self.rows_per_example)

    @property
    def backward_example_forwards(self) -> float:
        return self.seq_backward_layer_rows / (self.n_layers * self.rows_per_example)

    @property
    def example_forwards(self) -> float:
        """All the work, forward and backward, in example forwards (module docstring)."""
        return self.forward_example_forwards + self.backward_example_forwards

    def to_dict(self, scale: int = 1) -> dict[str, Any]:
        """The JSON record (every count multiplied by ``scale``, e.g. the number of DDP ranks)."""
        return {"example_forwards": round(scale * self.example_forwards, 3),
                "forward": round(scale * self.forward_example_forwards, 3),
                "backward": round(scale * self.backward_example_forwards, 3),
                "example_rows": round(scale * self.example_rows, 3),
                "layer_rows": round(scale * self.seq_layer_rows / self.rows_per_example, 3),
                "logit_positions": scale * self.logit_positions,
                "n_layers": self.n_layers, "rows_per_example": self.rows_per_example}

    def state(self) -> dict[str, int]:
        """The raw counters (checkpoints): :meth:`restore` adds them back."""
        return {"seq_rows": self.seq_rows, "seq_layer_rows": self.seq_layer_rows,
                "seq_backward_layer_rows": self.seq_backward_layer_rows, "logit_positions": self.logit_positions}

    def restore(self, state: Mapping[str, int]) -> None:
        for key in self.state():
            setattr(self, key, getattr(self, key) + int(state.get(key, 0)))


def total_example_forwards(*counts: RowCount) -> float:
    """The summed :attr:`RowCount.example_forwards` of several counters (e.g. one per scorer)."""
    return sum(c.example_forwards for c in counts)


@dataclass(frozen=True)
class CostRecord:
    """A cost as recorded in a run file (:meth:`RowCount.to_dict`), in example forwards."""

    example_forwards: float
    forward: float
    backward: float

    @classmethod
    def from_dict(cls, d: Any, where: str = "cost") -> "CostRecord":
        """Read a recorded cost; a missing or non-numeric field is a :class:`KmshcError` naming it."""
        if not isinstance(d, Mapping):
            raise KmshcError(f"{where}: expected an object with 'example_forwards', got {type(d).__name__}")
        values = {}
        for key in ("example_forwards", "forward", "backward"):
            v = d.get(key, 0.0 if key != "example_forwards" else None)
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise KmshcError(f"{where}: field '{key}' must be a number, got {v!r}")
            values[key] = float(v)
        return cls(**values)
