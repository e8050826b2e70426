"""Tiny random transformers checkpoints of every supported family, for tests and benchmarks.

Each is built with the family's own transformers config class and written with
``save_pretrained`` (so the files are exactly what transformers produces: the
per-expert key layout, ``config.json``, ``generation_config.json``), together with a
small word-level tokenizer. Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

TINY_VOCAB = 96
_COMMON = dict(vocab_size=TINY_VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=256, bos_token_id=1, eos_token_id=2,
               pad_token_id=0)
# Per family: (config class name, overrides that exercise its peculiarities).
TINY_FAMILIES: dict[str, tuple[str, dict[str, Any]]] = {
    "mixtral": ("MixtralConfig", dict(intermediate_size=24, num_local_experts=4, num_experts_per_tok=2)),
    "olmoe": ("OlmoeConfig", dict(intermediate_size=24, num_experts=8, num_experts_per_tok=2, clip_qkv=8.0)),
    "qwen2_moe": ("Qwen2MoeConfig", dict(num_hidden_layers=3, intermediate_size=48, moe_intermediate_size=16,
                                         shared_expert_intermediate_size=40, num_experts=4, num_experts_per_tok=2,
                                         decoder_sparse_step=2, mlp_only_layers=[2], norm_topk_prob=False)),
    "qwen3_moe": ("Qwen3MoeConfig", dict(intermediate_size=48, moe_intermediate_size=16, num_experts=6,
                                         num_experts_per_tok=2, head_dim=12, mlp_only_layers=[0],
                                         norm_topk_prob=True)),
    "llama": ("LlamaConfig", dict(intermediate_size=48, rope_parameters={
        "rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 32})),
    "qwen2": ("Qwen2Config", dict(intermediate_size=48, tie_word_embeddings=True)),
}


def tiny_tokenizer(vocab_size: int = TINY_VOCAB) -> Any:
    """A word-level ``PreTrainedTokenizerFast`` with ``<pad> <s> </s> <unk>`` at ids 0-3."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    vocab = {tok: i for i, tok in enumerate(specials + [f"w{i}" for i in range(vocab_size - len(specials))])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")


def tiny_hf_config(family: str, **overrides: Any) -> Any:
    """The transformers config object of the tiny ``family`` model."""
    import transformers

    cls_name, extra = TINY_FAMILIES[family]
    return getattr(transformers, cls_name)(**{**_COMMON, **extra, **overrides})


def tiny_hf_model(family: str, seed: int = 0, std: float = 0.02, **overrides: Any) -> Any:
    """A random transformers ``*ForCausalLM`` of ``family`` in eval mode.

    Norm weights are randomised too, so a wrongly placed norm cannot hide behind ones.
    """
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_hf_config(family, **overrides), attn_implementation="sdpa")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or "layernorm" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
            else:
                p.copy_(std * torch.randn_like(p))
    return model.eval()


def tiny_hf_checkpoint(family: str, path: str | Path, seed: int = 0, **save_kwargs: Any) -> Any:
    """Write a tiny random ``family`` checkpoint (model + tokenizer) to ``path``; return the model."""
    model = tiny_hf_model(family, seed=seed)
    model.save_pretrained(str(path), **save_kwargs)
    tiny_tokenizer().save_pretrained(str(path))
    return model
