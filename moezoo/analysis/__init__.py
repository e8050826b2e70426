"""Expert analysis: statistics of the routing that MoE layers record (issue H starts it, issue J extends it).

- :mod:`moezoo.analysis.stats`: per-site statistics of router outputs, DESIGN.md's definitions:
  :func:`topk_counts`, :func:`load_entropy` (``H(topk_frequency) / ln E``), :func:`entropy`.
- :mod:`moezoo.analysis.answers`: a model's load at the answer positions of a VQA test split
  (:func:`answer_load_entropy`), the figure the router family's cards record.

Example:
    >>> import torch
    >>> load_entropy(expert_idx=torch.tensor([[0, 1], [0, 1]]), num_experts=4)  # 2 of 4 experts, evenly
    0.5
"""

from moezoo.analysis.answers import answer_load_entropy, answer_topk_counts, selected_topk_counts
from moezoo.analysis.stats import entropy, load_entropy, normalized_load_entropy, topk_counts, topk_experts

__all__ = ["answer_load_entropy", "answer_topk_counts", "entropy", "load_entropy", "normalized_load_entropy",
           "selected_topk_counts", "topk_counts", "topk_experts"]
