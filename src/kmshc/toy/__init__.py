"""Toys with a known answer: a 2-layer model trained to copy, whose induction circuit is known
(``induction``, behind ``kmshc toy``), and the reference circuit a search is checked against
(``ground_truth``)."""
from kmshc.toy.induction import (N_SPECIAL, ToyConfig, ToyResult, copy_accuracy, num_threads, save_toy, toy_model,
                                 toy_tokenizer, train_toy)

__all__ = ["N_SPECIAL", "ToyConfig", "ToyResult", "copy_accuracy", "num_threads", "save_toy", "toy_model",
           "toy_tokenizer", "train_toy"]
