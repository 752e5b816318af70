"""Classification tasks: minimal pairs, label-token prompts, seeded generators and splits."""
from kmshc.tasks.base import LabelItem, PairItem, Task, split_task
from kmshc.tasks.files import load_blimp_jsonl, load_label_jsonl
from kmshc.tasks.generators import (ARITHMETIC_PRESETS, arithmetic_task, grammar_task,
                                    word_problem_task)
from kmshc.tasks.toy_induction import toy_induction_task

__all__ = ["PairItem", "LabelItem", "Task", "split_task", "load_blimp_jsonl", "load_label_jsonl",
           "grammar_task", "arithmetic_task", "word_problem_task", "ARITHMETIC_PRESETS", "make_task",
           "toy_induction_task"]


def make_task(name: str, data: str | None = None, seed: int = 0, n: int | None = None,
              labels: list[str] | None = None, **kwargs) -> Task:
    """Build a task by family name: ``grammar``, ``arithmetic``, ``word_problems``,
    ``toy_induction`` (for the model of ``kmshc toy``), ``blimp``, ``labels``."""
    from kmshc.types import KmshcError
    if name == "blimp":
        if not data:
            raise KmshcError("task 'blimp' needs a data file: pass --data PATH to a BLiMP jsonl file")
        return load_blimp_jsonl(data)
    if name == "labels":
        if not data or not labels:
            raise KmshcError("task 'labels' needs --data PATH (jsonl with 'prompt' and 'label') and --labels WORD...")
        return load_label_jsonl(data, labels)
    gens = {"grammar": grammar_task, "arithmetic": arithmetic_task, "word_problems": word_problem_task,
            "toy_induction": toy_induction_task}
    if name not in gens:
        raise KmshcError(f"unknown task {name!r}; expected one of: {', '.join(gens)}, blimp, labels")
    if n is not None:
        kwargs["n"] = n
    return gens[name](seed=seed, **kwargs)
