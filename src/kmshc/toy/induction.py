"""A toy model whose circuit is known: a 2-layer transformer trained in about a minute to copy.

The training data are random tokens ``t0 … t{V-1}`` in which a segment of random length is
repeated at a random later offset; the loss is on the repeated tokens that can be predicted
(every one but the first of the copy). The only general way to predict them is the textbook
induction circuit: a layer-0 *previous-token head* writes "the token before me was A" into
each position, and a layer-1 *induction head* at a position holding A attends to the
position whose previous token was A and copies its token.

Why random offsets: with the segment always at the same positions, a model solves the task
positionally (one head attending a fixed distance back) and no induction circuit forms.
Drawing both the segment's start and the gap between the copies at random leaves
content-based induction as the only general solution.

``kmshc toy --seed S --out DIR`` writes a ``save_pretrained`` folder (model, word-level
tokenizer and ``toy.json``) that every ``--model DIR`` / ``experiment.model: DIR`` loads.
The matching task is ``toy_induction`` (:func:`toy_induction_task`).
"""
from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import torch

from kmshc.tasks.toy_induction import (MAX_SEGMENT, MIN_SEGMENT, SEQ_LEN, VOCAB, InductionBatch, check_layout,
                                       sample_induction)
from kmshc.types import KmshcError, atomic_write_json, ensure_writable_dir

START, UNK = "<|endoftext|>", "<unk>"
N_SPECIAL = 2  # ids 0 and 1 are START and UNK; token t_i has id i + N_SPECIAL


@dataclass(frozen=True)
class ToyConfig:
    """The toy model and its training. ``seq_len`` counts the random tokens (the start token is extra)."""

    seed: int = 0
    vocab: int = VOCAB
    seq_len: int = SEQ_LEN
    min_segment: int = MIN_SEGMENT
    max_segment: int = MAX_SEGMENT
    n_layers: int = 2
    n_heads: int = 4
    width: int = 64
    mlp: int = 64       # a small MLP: the task needs none, and a 4x-width one doubles the compute
    steps: int = 3000   # at most; training stops once the check batch reaches ``target``
    target: float = 0.95
    check_every: int = 50
    warmup: int = 100
    batch_size: int = 32
    lr: float = 5e-3
    threads: int = 1

    def __post_init__(self) -> None:
        check_layout(seq_len=self.seq_len, vocab=self.vocab, min_segment=self.min_segment,
                     max_segment=self.max_segment)


def toy_tokenizer(vocab: int = 64):
    """A word-level tokenizer: ``<|endoftext|>`` (start, pad, id 0), ``<unk>`` (1), ``t0 …`` (2 …)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    words = {START: 0, UNK: 1, **{f"t{i}": i + N_SPECIAL for i in range(vocab)}}
    tk = Tokenizer(models.WordLevel(vocab=words, unk_token=UNK))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token=START, eos_token=START, pad_token=START,
                                   unk_token=UNK)


def toy_model(cfg: ToyConfig):
    """A randomly initialised Llama-architecture model for ``cfg`` (no dropout, no GQA).

    Rotary position embeddings make "attend to the previous position" easy to learn, so the
    previous-token heads, and with them the induction heads, form within a minute of CPU.
    """
    from transformers import LlamaConfig, LlamaForCausalLM
    config = LlamaConfig(vocab_size=cfg.vocab + N_SPECIAL, hidden_size=cfg.width, intermediate_size=cfg.mlp,
                         num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
                         num_key_value_heads=cfg.n_heads, head_dim=cfg.width // cfg.n_heads,
                         max_position_embeddings=cfg.seq_len + 1, bos_token_id=0, eos_token_id=0, pad_token_id=0,
                         tie_word_embeddings=False)
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        return LlamaForCausalLM(config)


@contextmanager
def num_threads(n: int) -> Iterator[None]:
    """Run with ``n`` torch threads (CPU float sums depend on it), restoring the old count after."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _sample(cfg: ToyConfig, gen: torch.Generator, n: int) -> InductionBatch:
    return sample_induction(gen, n, seq_len=cfg.seq_len, vocab=cfg.vocab, min_segment=cfg.min_segment,
                            max_segment=cfg.max_segment)


def _with_start(tokens: torch.Tensor) -> torch.Tensor:
    """Token indices ``[B, T]`` -> model ids ``[B, T+1]`` with the start token first."""
    return torch.cat([torch.zeros(len(tokens), 1, dtype=torch.long), tokens + N_SPECIAL], dim=1)


def copy_accuracy(model, batch: InductionBatch) -> float:
    """Next-token accuracy of ``model`` on the predictable copied tokens of ``batch``."""
    with torch.no_grad():
        logits = model(_with_start(batch.tokens), use_cache=False).logits[:, :-1]  # position p predicts token p
    mask = batch.loss_mask()
    return float((logits.argmax(-1) - N_SPECIAL == batch.tokens)[mask].float().mean())


@dataclass(frozen=True)
class ToyResult:
    """A trained toy model, the steps it took, and its copy accuracy on 2000 held-out sequences."""

    model: object
    steps: int
    copy_accuracy: float


def _step(model, opt, sched, batch: InductionBatch) -> float:
    """One optimiser step on the predictable copied tokens; returns the loss."""
    logits = model(_with_start(batch.tokens), use_cache=False).logits[:, :-1]  # position p predicts token p
    mask = batch.loss_mask()
    loss = torch.nn.functional.cross_entropy(logits[mask], batch.tokens[mask] + N_SPECIAL)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()
    return loss.item()


def train_toy(cfg: ToyConfig, log=None) -> ToyResult:
    """Train until the copy accuracy on a fixed check batch reaches ``cfg.target`` (or ``cfg.steps``).

    The loss sits on a plateau until the induction circuit forms, then falls within ~100 steps;
    the step of that transition varies with the seed, so training stops on accuracy, checked
    every ``cfg.check_every`` steps, rather than after a fixed count. Deterministic for a given
    ``cfg`` on CPU (fixed seeds, fixed thread count, no dropout). ``log``: called with a line.
    """
    model = toy_model(cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    check = _sample(cfg, torch.Generator().manual_seed(cfg.seed + 10_000), 256)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / cfg.warmup))
    step = 0
    with num_threads(cfg.threads):
        while step < cfg.steps:
            model.train()
            loss = _step(model, opt, sched, _sample(cfg, gen, cfg.batch_size))
            step += 1
            if step % cfg.check_every == 0:
                model.eval()
                acc = copy_accuracy(model, check)
                if log:
                    log(f"step {step}: loss {loss:.3f}, copy accuracy {acc:.3f}")
                if acc >= cfg.target:
                    break
        model.eval()
        held_out = _sample(cfg, torch.Generator().manual_seed(cfg.seed + 20_000), 2000)
        return ToyResult(model, step, copy_accuracy(model, held_out))


def save_toy(result: ToyResult, cfg: ToyConfig, out: str | Path) -> Path:
    """Write model, tokenizer and ``toy.json`` to ``out`` atomically (a temp folder, then rename)."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise KmshcError(f"{out}: exists and is not empty; choose another --out or remove it")
    ensure_writable_dir(out.parent, "output folder")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        result.model.save_pretrained(tmp)
        toy_tokenizer(cfg.vocab).save_pretrained(tmp)
        atomic_write_json(tmp / "toy.json", {"config": asdict(cfg), "steps": result.steps,
                                             "copy_accuracy": round(result.copy_accuracy, 4)})
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
