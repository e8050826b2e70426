"""Typed configuration of moezoo's decoder-only sparse-MoE language model.

One dataclass covers the Llama-style families moezoo reads and writes (Llama,
Qwen2, Mixtral, OLMoE, Qwen2-MoE, Qwen3-MoE), in the spirit of litgpt's single
``Config``: the family differences are a handful of switches (q/k-norm kind, qkv
bias, tied embeddings, RoPE scaling, which layers are sparse).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from moezoo.moe import MoEConfig
from moezoo.utils.checks import require

QK_NORMS = ("none", "head", "full")
# transformers model_types (``LMConfig.family``) with no MoE layer / with MoE layers.
DENSE_FAMILIES = ("llama", "qwen2")
MOE_FAMILIES = ("olmoe", "qwen3_moe", "qwen2_moe", "mixtral")
ROPE_TYPES = ("default", "linear", "llama3", "yarn")
# Keys each RoPE scaling type needs in ``rope_scaling`` (as in transformers' ``rope_parameters``).
ROPE_REQUIRED = {
    "default": (),
    "linear": ("factor",),
    "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"),
    "yarn": ("factor", "original_max_position_embeddings"),
}


@dataclass
class LMConfig:
    """Configuration of :class:`~moezoo.models.lm.MoEForCausalLM`.

    Args:
        vocab_size: number of token ids.
        dim: model width (``hidden_size``).
        num_layers: decoder blocks.
        num_heads: query heads.
        num_kv_heads: key/value heads (grouped-query attention); defaults to ``num_heads``.
        head_dim: width of one head; defaults to ``dim // num_heads``.
        ffn_dim: hidden width of the dense SwiGLU FFN of the dense layers.
        moe: the sparse FFN of the MoE layers; ``None`` gives a dense model (Llama, Qwen2).
        moe_layers: indices of the layers with a sparse FFN; ``None`` means every layer
            when ``moe`` is set. DeepSeek's "first k dense" is ``range(k, num_layers)``,
            MoE-LLaVA's "every other layer" is ``range(1, num_layers, 2)``.
        norm_eps: RMSNorm epsilon.
        rope_theta: RoPE base.
        rope_scaling: ``None`` or a dict with ``rope_type`` in ``linear``/``llama3``/``yarn``
            and that type's parameters, named as in transformers' ``rope_parameters``.
        max_position_embeddings: context the model was trained for (also sizes caches).
        qk_norm: ``"none"``; ``"head"`` = RMSNorm over each head (Qwen3); ``"full"`` = RMSNorm
            over the whole q / k projection (OLMoE).
        qkv_bias: bias on the q, k and v projections (Qwen2 families).
        attention_bias: bias on q, k, v *and* o projections (Llama / OLMoE / Qwen3 ``attention_bias``).
        clip_qkv: clamp q, k, v to ``[-clip_qkv, clip_qkv]`` (OLMoE), or ``None``.
        tie_embeddings: the LM head shares the embedding matrix.
        family: the transformers ``model_type`` this config came from or exports to by
            default (``None``: inferred at export).
        bos_token_id / eos_token_id / pad_token_id: special ids; ``eos_token_id`` may be a list.
        init_std: standard deviation of the random initialisation.

    Example:
        >>> cfg = LMConfig(vocab_size=64, dim=32, num_layers=2, num_heads=4, ffn_dim=64,
        ...                moe=MoEConfig(dim=32, expert_dim=16, num_experts=4, top_k=2), moe_layers=[1])
        >>> [cfg.is_moe_layer(i) for i in range(2)], cfg.num_kv_heads, cfg.head_dim
        ([False, True], 4, 8)
        >>> LMConfig.from_dict(cfg.to_dict()) == cfg
        True
    """

    vocab_size: int
    dim: int
    num_layers: int
    num_heads: int
    ffn_dim: int
    num_kv_heads: int | None = None
    head_dim: int | None = None
    moe: MoEConfig | None = None
    moe_layers: list[int] | None = None
    norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None
    max_position_embeddings: int = 4096
    qk_norm: str = "none"
    qkv_bias: bool = False
    attention_bias: bool = False
    clip_qkv: float | None = None
    tie_embeddings: bool = False
    family: str | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None
    init_std: float = 0.02

    def __post_init__(self) -> None:
        if isinstance(self.moe, dict):
            self.moe = MoEConfig(**self.moe)
        self.num_kv_heads = self.num_kv_heads or self.num_heads
        self.head_dim = self.head_dim or self.dim // self.num_heads
        for name in ("vocab_size", "dim", "num_layers", "num_heads", "ffn_dim", "num_kv_heads", "head_dim",
                     "max_position_embeddings"):
            require(self, name, getattr(self, name) >= 1, "must be >= 1")
        require(self, "num_heads", self.num_heads % self.num_kv_heads == 0,
                f"must be a multiple of num_kv_heads={self.num_kv_heads}")
        require(self, "head_dim", self.head_dim % 2 == 0, "must be even (RoPE rotates pairs)")
        require(self, "qk_norm", self.qk_norm in QK_NORMS, f"must be one of {QK_NORMS}")
        require(self, "norm_eps", self.norm_eps > 0, "must be > 0")
        if self.moe is not None:
            require(self, "moe", self.moe.dim == self.dim, f"has dim={self.moe.dim}, expected dim={self.dim}")
        if self.moe_layers is not None:
            self.moe_layers = sorted(int(i) for i in self.moe_layers)
            require(self, "moe_layers", self.moe is not None or not self.moe_layers, "needs `moe` to be set")
            require(self, "moe_layers", all(0 <= i < self.num_layers for i in self.moe_layers),
                    f"must be layer indices in [0, num_layers={self.num_layers})")
        if self.rope_scaling is not None:
            kind = self.rope_scaling.get("rope_type", "default")
            require(self, "rope_scaling", kind in ROPE_TYPES,
                    f"has unsupported rope_type {kind!r}; supported: {ROPE_TYPES}")
            missing = [k for k in ROPE_REQUIRED[kind] if k not in self.rope_scaling]
            require(self, "rope_scaling", not missing, f"lacks {missing} for rope_type {kind!r}")
        if self.clip_qkv is not None:
            require(self, "clip_qkv", self.clip_qkv > 0, "must be > 0 or None")

    def sparse_layers(self) -> list[int]:
        """Indices of the layers whose FFN is an MoE layer."""
        if self.moe is None:
            return []
        return list(range(self.num_layers)) if self.moe_layers is None else list(self.moe_layers)

    def is_moe_layer(self, index: int) -> bool:
        """Whether layer ``index`` has a sparse FFN."""
        return index in self.sparse_layers()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; :meth:`from_dict` inverts it."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["moe"] = dataclasses.asdict(self.moe) if self.moe is not None else None
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LMConfig:
        """Build from :meth:`to_dict`'s output; unknown keys are an error that lists them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"LMConfig got unknown keys {unknown}; known keys: {sorted(known)}")
        return cls(**data)

    def replace(self, **changes: Any) -> LMConfig:
        """A copy with ``changes`` applied (and re-validated)."""
        return dataclasses.replace(self, **changes)


def id_list(ids: int | list[int] | None) -> list[int]:
    """A token id, a list of ids or ``None`` (as ``eos_token_id`` may be) as a list.

    Example:
        >>> id_list(2), id_list([2, 3]), id_list(None)
        ([2], [2, 3], [])
    """
    if ids is None:
        return []
    return [ids] if isinstance(ids, int) else list(ids)
