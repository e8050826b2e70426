"""Expert analysis: statistics of the routing that MoE layers record (issue H starts it, issue J extends it).

- :mod:`moezoo.analysis.routing`: :func:`routing_stats`, every statistic of one site's routing (frequencies,
  entropies, margin, per-expert accuracy, modality shares), and :func:`chosen_experts` (a
  :class:`~moezoo.moe.Routing`'s choice in the form it takes);
- :mod:`moezoo.analysis.switch`: :func:`switch_rate` between two checkpoints' routes (three definitions);
- :mod:`moezoo.analysis.ablation`: :func:`ablate`, one expert of one site taken out (reroute, drop, zero);
- :mod:`moezoo.analysis.sites`: the short site names (``llm.3``, ``connector``, ``vision.5``) and
  :func:`site_routings`, a forward's routings by site;
- :mod:`moezoo.analysis.stats`: :func:`topk_counts`, :func:`load_entropy` (``H(topk_frequency) / ln E``),
  :func:`entropy`;
- :mod:`moezoo.analysis.answers`: a model's load at the answer positions of a VQA test split
  (:func:`answer_load_entropy`), the figure the router family's cards record;
- ``moezoo analyze`` (:mod:`moezoo.cli.analyze`) is built from :mod:`moezoo.analysis.records` (a model run over a
  task, each site's routing with its tokens' modality, position role and correctness),
  :mod:`moezoo.analysis.report` (``report.json``, the ablation table), :mod:`moezoo.analysis.figures` (the PNGs)
  and :mod:`moezoo.analysis.html` (the self-contained ``report.html``). They import matplotlib and the
  evaluation tasks, so they are imported by name, not from here.

Example:
    >>> import torch
    >>> load_entropy(expert_idx=torch.tensor([[0, 1], [0, 1]]), num_experts=4)  # 2 of 4 experts, evenly
    0.5
"""

from moezoo.analysis.ablation import ABLATION_MODES, Ablation, ablate, ablated_routing
from moezoo.analysis.answers import answer_load_entropy, answer_topk_counts, selected_topk_counts
from moezoo.analysis.routing import chosen_experts, routing_stats
from moezoo.analysis.sites import find_site, site_names, site_routings
from moezoo.analysis.stats import entropy, load_entropy, normalized_load_entropy, topk_counts, topk_experts
from moezoo.analysis.switch import SWITCH_RATES, switch_rate

__all__ = ["ABLATION_MODES", "SWITCH_RATES", "Ablation", "ablate", "ablated_routing", "answer_load_entropy",
           "answer_topk_counts", "chosen_experts", "entropy", "find_site", "load_entropy", "normalized_load_entropy",
           "routing_stats", "selected_topk_counts", "site_names", "site_routings", "switch_rate", "topk_counts",
           "topk_experts"]
