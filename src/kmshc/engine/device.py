"""Where the model computes: the ``--device`` option, ``device_map`` placement across devices,
and the execution device of any module (also when accelerate offloads its weights).

``auto`` means CUDA when present. Under a launcher that sets ``LOCAL_RANK`` (torchrun,
Lightning's DDP), ``auto`` and ``cuda`` mean this process's own GPU, ``cuda:LOCAL_RANK``.
A model placed by ``device_map`` may sit on several devices: each layer computes where its
weights live (or, when accelerate offloads them to the CPU or disk, on its hook's execution
device), and every tensor the library adds to a layer is moved to that layer's activations.
"""
from __future__ import annotations

import os
import re
import tempfile
from typing import Any, Mapping

import torch
from torch import nn

from kmshc.types import KmshcError

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"
_OFFLOAD = ("cpu", "disk", "meta")  # device_map values that never compute on a GPU


def parse_device_spec(spec: str | torch.device | None) -> tuple[str, int | None]:
    """``auto|cpu|cuda|cuda:N`` -> ``(kind, index or None)``, checking the spelling only."""
    text = "auto" if spec is None else str(spec).strip().lower()
    m = re.fullmatch(r"(auto|cpu|cuda)(?::(\d+))?", text)
    if m is None or (m.group(1) != "cuda" and m.group(2)):
        raise KmshcError(f"device: expected {DEVICE_CHOICES}, got {spec!r}")
    return m.group(1), int(m.group(2)) if m.group(2) else None


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """``auto|cpu|cuda|cuda:N`` -> a concrete ``torch.device``; a missing GPU is a clear error."""
    kind, index = parse_device_spec(spec)
    if kind == "cpu" or (kind == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise KmshcError(f"device {spec!r}: CUDA is not available on this machine (torch {torch.__version__}); "
                         "use --device cpu or auto")
    if index is None:  # this process's GPU: the launcher's local rank, else torch's current device
        local = os.environ.get("LOCAL_RANK")
        index = int(local) if local is not None else torch.cuda.current_device()
    if index >= torch.cuda.device_count():
        raise KmshcError(f"device {spec!r}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                         f"(0..{torch.cuda.device_count() - 1})")
    return torch.device("cuda", index)


def map_computes_on_gpu(device_map: str | Mapping[str, Any]) -> bool:
    """Whether a ``device_map`` (``"auto"`` or module name -> device) puts any layer on a GPU."""
    if isinstance(device_map, str):
        return device_map != "cpu" and torch.cuda.is_available()
    return any(str(v) not in _OFFLOAD for v in device_map.values())


def execution_device(module: nn.Module) -> torch.device:
    """Where ``module`` computes: accelerate's hook device when it has one (offloaded weights sit on
    ``meta``), else the device of its first parameter or buffer, else the CPU."""
    hook = getattr(module, "_hf_hook", None)
    dev = getattr(hook, "execution_device", None)
    if dev is not None:
        return torch.device(dev if not isinstance(dev, int) else f"cuda:{dev}")
    for t in (*module.parameters(recurse=True), *module.buffers(recurse=True)):
        if t.device.type != "meta":
            return t.device
    return torch.device("cpu")


def input_device(model: nn.Module) -> torch.device:
    """Where token ids must go: the input embedding's execution device."""
    return execution_device(model.get_input_embeddings())


def model_devices(model: nn.Module) -> list[torch.device]:
    """The distinct devices the embedding and the decoder layers compute on, in layer order."""
    from kmshc.engine.architectures import decoder_layers
    seen: list[torch.device] = []
    for module in (model.get_input_embeddings(), *decoder_layers(model)):
        dev = execution_device(module)
        if dev not in seen:
            seen.append(dev)
    return seen


def dispatch(model: nn.Module, device_map: str | Mapping[str, Any]) -> nn.Module:
    """Spread an already-built model over devices with accelerate (a strategy name infers the map).

    Used for models that transformers did not load itself (tiny test models, GGUF files read
    without a cache). Layers mapped to ``disk`` are offloaded to a temporary folder.
    """
    try:
        from accelerate import dispatch_model, infer_auto_device_map
    except ImportError:
        raise KmshcError("device_map needs 'accelerate': pip install accelerate") from None
    dm = infer_auto_device_map(model) if isinstance(device_map, str) else dict(device_map)
    gpu = [v for v in dm.values() if str(v) not in _OFFLOAD]
    main = gpu[0] if gpu else "cpu"
    offload = tempfile.mkdtemp(prefix="kmshc-offload-") if "disk" in map(str, dm.values()) else None
    return dispatch_model(model, device_map=dm, main_device=main, offload_dir=offload)


def lightning_accelerator(spec: str) -> tuple[str, list[int] | None]:
    """``--device`` as Lightning Trainer arguments: ``(accelerator, devices or None to keep)``.

    ``cuda:N`` pins GPU N; ``cuda`` and ``cpu`` keep the trainer's ``devices`` (a DDP run's count).
    """
    kind, index = parse_device_spec(spec)
    accelerator = {"auto": "auto", "cpu": "cpu", "cuda": "gpu"}[kind]
    return accelerator, [index] if index is not None else None
