"""Plain data types of kmshc: heads, circuits, certificates, and their JSON form.

Everything here is torch-free except the small mask helpers, so that a circuit file can be
read and checked without loading a model.
"""
from __future__ import annotations

import json
import math
import os
import re
import tempfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

__all__ = [
    "Head", "head_name", "parse_head", "heads_to_mask", "mask_to_heads",
    "Circuit", "KmshcError", "atomic_write_text", "atomic_write_json", "atomic_write_bytes",
    "ensure_writable_dir", "config_errors",
    "read_circuit", "CIRCUIT_FIELDS",
]

_HEAD_RE = re.compile(r"^L(\d+)H(\d+)$")


class KmshcError(Exception):
    """A user-facing error: the message names the file, line or field and what was expected.

    The CLI prints it without a traceback (unless ``--debug``) and exits with status 2.
    """


@dataclass(frozen=True, order=True)
class Head:
    """One query head, 0-based: ``Head(3, 5)`` is ``L3H5``."""

    layer: int
    head: int

    @property
    def name(self) -> str:
        return f"L{self.layer}H{self.head}"

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.name


def head_name(layer: int, head: int) -> str:
    return f"L{layer}H{head}"


def parse_head(name: str, n_layers: int | None = None, n_heads: int | None = None,
               where: str = "head name") -> Head:
    """Parse ``L{l}H{h}``; with sizes given, also check the range."""
    m = _HEAD_RE.match(str(name).strip())
    if not m:
        raise KmshcError(f"{where}: expected a head name like 'L3H5', got {name!r}")
    h = Head(int(m.group(1)), int(m.group(2)))
    if n_layers is not None and not h.layer < n_layers:
        raise KmshcError(f"{where}: {name} has layer {h.layer}, but the model has {n_layers} layers (0..{n_layers - 1})")
    if n_heads is not None and not h.head < n_heads:
        raise KmshcError(f"{where}: {name} has head {h.head}, but the model has {n_heads} heads per layer (0..{n_heads - 1})")
    return h


def heads_to_mask(heads: Iterable[Head | str], n_layers: int, n_heads: int) -> torch.Tensor:
    """Return a float mask ``[L, H]`` with 1 for each listed head (kept) and 0 elsewhere."""
    mask = torch.zeros(n_layers, n_heads)
    for h in heads:
        h = parse_head(h, n_layers, n_heads) if isinstance(h, str) else h
        mask[h.layer, h.head] = 1.0
    return mask


def mask_to_heads(mask: torch.Tensor, threshold: float = 0.5) -> list[Head]:
    """Heads whose mask value exceeds ``threshold``, sorted by (layer, head). ``mask``: ``[L, H]``."""
    idx = (mask > threshold).nonzero().tolist()
    return sorted(Head(int(l), int(h)) for l, h in idx)


def sort_names(names: Iterable[str]) -> list[str]:
    return [h.name for h in sorted(parse_head(n) for n in names)]


# --------------------------------------------------------------------------- atomic files
_UMASK = os.umask(0o022)  # read the process umask once (os.umask can only read by setting) ...
os.umask(_UMASK)          # ... and put it back


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file in the same folder and ``os.replace``.

    A crash leaves either the old file or the new one, never half a file.
    """
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file + ``os.replace`` (PNG plots and the like).

    The file gets the usual ``0666 & ~umask`` permissions, not mkstemp's owner-only 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@contextmanager
def config_errors(what: str, expected: str):
    """Turn what config parsers let through for unreadable input (a non-UTF-8 file, a scalar where a
    section belongs: UnicodeDecodeError/TypeError/ValueError) into one clear :class:`KmshcError`."""
    try:
        yield
    except (UnicodeDecodeError, TypeError, ValueError) as e:
        raise KmshcError(f"{what}: cannot use it ({type(e).__name__}: {str(e).splitlines()[0][:120]}); "
                         f"expected {expected}") from e  # chained: --debug shows where the parser failed


def ensure_writable_dir(path: str | os.PathLike, what: str = "output directory") -> Path:
    """Create ``path`` if needed and prove it writable (a probe file), before any compute is spent."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".kmshc-write-test.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise KmshcError(f"{path}: cannot write to the {what} ({e.strerror or e}); choose a writable location "
                         "(e.g. --runs_dir)") from None
    return path


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "__dataclass_fields__"):
        return asdict(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


# --------------------------------------------------------------------------- circuits
CIRCUIT_FIELDS = ("model", "task", "scorer", "ablation", "semantics", "epsilon", "K", "heads",
                  "n_heads_total", "scores", "certificate", "evaluations", "example_forwards", "seed", "config",
                  "kmshc_version")


@dataclass(frozen=True)
class Circuit:
    """A head set with its provenance, as written to ``circuit_*.json``.

    ``heads`` are sorted ``L{l}H{h}`` names; ``scores`` maps a label (e.g. ``"val"``,
    ``"test"``) to a score dict; ``certificate`` is the verification dict or ``None``.
    ``evaluations`` counts the masks scored to find the circuit; ``example_forwards`` what they
    cost in example forwards (:mod:`kmshc.engine.cost`), ``None`` where it was not recorded.
    """

    model: str
    task: str
    heads: tuple[str, ...]
    n_heads_total: int
    scorer: str = "pair_logprob"
    ablation: str = "mean"
    semantics: str = "keep"
    epsilon: float = 0.9
    K: int = 1
    scores: Mapping[str, Any] = field(default_factory=dict)
    certificate: Mapping[str, Any] | None = None
    evaluations: int = 0
    example_forwards: float | None = None
    seed: int = 0
    config: Mapping[str, Any] = field(default_factory=dict)
    kmshc_version: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "heads", tuple(sort_names(self.heads)))
        if not self.kmshc_version:
            from kmshc import __version__
            object.__setattr__(self, "kmshc_version", __version__)

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in CIRCUIT_FIELDS}
        d["heads"] = list(self.heads)
        d.update(self.extra)
        return d

    def mask(self, n_layers: int, n_heads: int) -> torch.Tensor:
        return heads_to_mask(self.heads, n_layers, n_heads)

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Circuit":
        """Read a circuit JSON file written by :meth:`save` (checked field by field, see :func:`read_circuit`)."""
        return read_circuit(path)


def read_circuit(path: str | os.PathLike) -> Circuit:
    """Read and check a circuit JSON file; every problem is a :class:`KmshcError` naming the field."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise KmshcError(f"{path}: circuit file not found") from None
    except OSError as e:
        raise KmshcError(f"{path}: cannot read circuit file ({e.strerror})") from None
    try:
        d = json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise KmshcError(f"{path}: not valid UTF-8 JSON ({e})") from None
    except (ValueError, RecursionError) as e:  # a 5000-digit number, or nesting too deep to parse
        raise KmshcError(f"{path}: unreadable JSON ({type(e).__name__}: {str(e)[:80]})") from None
    return circuit_from_dict(d, where=str(path))


def circuit_from_dict(d: Any, where: str = "circuit") -> Circuit:
    if not isinstance(d, dict):
        raise KmshcError(f"{where}: expected a JSON object, got {type(d).__name__}")
    for key, typ in (("model", str), ("task", str), ("heads", list), ("n_heads_total", int)):
        if key not in d:
            raise KmshcError(f"{where}: missing field '{key}'")
        if not isinstance(d[key], typ) or isinstance(d[key], bool):
            raise KmshcError(f"{where}: field '{key}' must be {typ.__name__}, got {type(d[key]).__name__}")
    if d["n_heads_total"] <= 0:
        raise KmshcError(f"{where}: field 'n_heads_total' must be positive, got {d['n_heads_total']}")
    names = []
    for i, n in enumerate(d["heads"]):
        if not isinstance(n, str):
            raise KmshcError(f"{where}: field 'heads[{i}]' must be a string like 'L3H5', got {n!r}")
        names.append(parse_head(n, where=f"{where}: field 'heads[{i}]'").name)
        if names[-1] in names[:-1]:
            raise KmshcError(f"{where}: field 'heads[{i}]' repeats {names[-1]}; each head may appear once")
    kw: dict[str, Any] = {}
    checks = {"scorer": str, "ablation": str, "semantics": str, "epsilon": (int, float), "K": int,
              "scores": dict, "evaluations": int, "example_forwards": (int, float), "seed": int, "config": dict,
              "kmshc_version": str}
    for key, typ in checks.items():
        if key in d and d[key] is not None:
            if not isinstance(d[key], typ) or isinstance(d[key], bool):
                raise KmshcError(f"{where}: field '{key}' has the wrong type {type(d[key]).__name__}")
            if key == "epsilon" and not math.isfinite(d[key]):
                raise KmshcError(f"{where}: field 'epsilon' must be a finite number, got {d[key]!r}")
            kw[key] = d[key]
    if "certificate" in d:
        if d["certificate"] is not None and not isinstance(d["certificate"], dict):
            raise KmshcError(f"{where}: field 'certificate' must be an object or null")
        kw["certificate"] = d["certificate"]
    extra = {k: v for k, v in d.items() if k not in CIRCUIT_FIELDS}
    return Circuit(model=d["model"], task=d["task"], heads=tuple(names),
                   n_heads_total=d["n_heads_total"], extra=extra, **kw)
