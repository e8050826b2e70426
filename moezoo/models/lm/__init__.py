"""moezoo's decoder-only sparse-MoE language model.

Example:
    >>> from moezoo.models.lm import LMConfig, MoEForCausalLM
    >>> model = MoEForCausalLM(LMConfig(vocab_size=32, dim=16, num_layers=1, num_heads=2, ffn_dim=32))
    >>> model(input_ids=torch.tensor([[1, 2, 3]])).logits.shape
    torch.Size([1, 3, 32])
"""

import torch  # noqa: F401  (doctest namespace)

from moezoo.models.lm.attention import KVCache
from moezoo.models.lm.config import LMConfig
from moezoo.models.lm.generation import generate, sample_next
from moezoo.models.lm.model import CausalLMOutput, MoEForCausalLM, causal_lm_loss
from moezoo.models.lm.upcycle import upcycle_lm
from moezoo.models.lm.spec import LM_SPEC  # noqa: E402  (registers the family)

__all__ = ["LM_SPEC", "CausalLMOutput", "KVCache", "LMConfig", "MoEForCausalLM", "causal_lm_loss", "generate",
           "sample_next", "upcycle_lm"]
