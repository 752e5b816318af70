"""Classification tasks: minimal pairs, label-token prompts, seeded generators and splits."""
from kmshc.tasks.base import LabelItem, PairItem, Task, split_task
from kmshc.tasks.circuits import greater_than_task, induction_task, ioi_task
from kmshc.tasks.files import load_blimp_jsonl, load_label_jsonl
from kmshc.tasks.generators import (ARITHMETIC_PRESETS, arithmetic_task, grammar_task,
                                    word_problem_task)
from kmshc.tasks.toy_induction import toy_induction_task

__all__ = ["PairItem", "LabelItem", "Task", "split_task", "load_blimp_jsonl", "load_label_jsonl",
           "grammar_task", "arithmetic_task", "word_problem_task", "ARITHMETIC_PRESETS", "make_task",
           "ioi_task", "greater_than_task", "induction_task", "toy_induction_task", "GENERATED_TASKS", "TASKS"]

# Generated task families (no files needed), by CLI name.
GENERATED_TASKS = {"grammar": grammar_task, "arithmetic": arithmetic_task, "word_problems": word_problem_task,
                   "ioi": ioi_task, "greater_than": greater_than_task, "induction": induction_task,
                   "toy_induction": toy_induction_task}  # toy_induction: for the model of `kmshc toy`
TASKS = (*GENERATED_TASKS, "blimp", "labels")


def make_task(name: str, data: str | None = None, seed: int = 0, n: int | None = None,
              labels: list[str] | None = None, on_defect: str = "skip", **kwargs) -> Task:
    """Build a task by family name: one of :data:`TASKS` (generated families, ``blimp``, ``labels``).

    ``on_defect`` (``skip``/``error``) decides what a defective item of a data file does
    (:mod:`kmshc.tasks.defects`); identical tokenisation is checked later, with the tokenizer.
    """
    from kmshc.types import KmshcError
    if name == "blimp":
        if not data:
            raise KmshcError("task 'blimp' needs a data file: pass --data PATH to a BLiMP jsonl file")
        return load_blimp_jsonl(data, on_defect=on_defect)
    if name == "labels":
        if not data or not labels:
            raise KmshcError("task 'labels' needs --data PATH (jsonl with 'prompt' and 'label') and --labels WORD...")
        return load_label_jsonl(data, labels)
    if name not in GENERATED_TASKS:
        raise KmshcError(f"unknown task {name!r}; expected one of: {', '.join(TASKS)}")
    if n is not None:
        kwargs["n"] = n
    return GENERATED_TASKS[name](seed=seed, **kwargs)
