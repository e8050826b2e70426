"""Typed configuration of moezoo's decoder-only sparse-MoE language model.

One dataclass covers the Llama-style families moezoo reads and writes (Llama,
Qwen2, Mixtral, OLMoE, Qwen2-MoE, Qwen3-MoE, StableLM, Phi-2, Phi-3), in the spirit of
litgpt's single ``Config``: the family differences are a handful of switches (norm kind,
q/k-norm kind, biases, tied embeddings, RoPE scaling and rotary fraction, a parallel
attention + FFN block, the dense FFN's activation, which layers are sparse). Every new
switch defaults to the Llama-style behaviour, so older configs read unchanged.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from moezoo.moe import MoEConfig
from moezoo.utils.checks import require

QK_NORMS = ("none", "head", "full", "each_head")
NORMS = ("rms", "layer")
# Dense FFN activations: SwiGLU (gate_proj, up_proj, down_proj), or an ungated up/down pair with
# exact GELU or its tanh approximation (transformers' ``gelu_new`` / ``gelu_pytorch_tanh``, Phi-2's).
MLP_ACTIVATIONS = ("swiglu", "gelu", "gelu_tanh")
# transformers model_types (``LMConfig.family``) with no MoE layer / with MoE layers.
DENSE_FAMILIES = ("llama", "qwen2", "stablelm", "phi", "phi3")
MOE_FAMILIES = ("olmoe", "qwen3_moe", "qwen2_moe", "mixtral")
ROPE_TYPES = ("default", "linear", "llama3", "yarn", "longrope")
# Keys each RoPE scaling type needs in ``rope_scaling`` (as in transformers' ``rope_parameters``).
ROPE_REQUIRED = {
    "default": (),
    "linear": ("factor",),
    "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"),
    "yarn": ("factor", "original_max_position_embeddings"),
    "longrope": ("factor", "original_max_position_embeddings", "short_factor", "long_factor"),
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
        norm_eps: epsilon of the norms.
        rope_theta: RoPE base.
        rope_scaling: ``None`` or a dict with ``rope_type`` in ``linear``/``llama3``/``yarn``/``longrope``
            and that type's parameters, named as in transformers' ``rope_parameters``. ``longrope``
            (Phi-3) rotates with ``short_factor`` while every position is below
            ``original_max_position_embeddings`` and with ``long_factor`` once one is not.
        max_position_embeddings: context the model was trained for (also sizes caches).
        qk_norm: ``"none"``; ``"head"`` = one norm (of kind ``norm``) over each head, shared by
            the heads (Qwen3's RMSNorm, Phi's LayerNorm); ``"full"`` = over the whole q / k
            projection (OLMoE); ``"each_head"`` = a bias-free norm per head with its own weight
            (StableLM's ``qk_layernorm``).
        qkv_bias: bias on the q, k and v projections (Qwen2 families).
        attention_bias: bias on q, k, v *and* o projections (Llama / OLMoE / Qwen3 ``attention_bias``).
        clip_qkv: clamp q, k, v to ``[-clip_qkv, clip_qkv]`` (OLMoE), or ``None``.
        tie_embeddings: the LM head shares the embedding matrix.
        family: the transformers ``model_type`` this config came from or exports to by
            default (``None``: inferred at export).
        bos_token_id / eos_token_id / pad_token_id: special ids; ``eos_token_id`` may be a list.
        init_std: standard deviation of the random initialisation.
        norm: ``"rms"`` (RMSNorm, default) or ``"layer"`` (LayerNorm with bias: StableLM, Phi-2).
        rotary_fraction: the fraction of each head that RoPE rotates (its first
            ``int(head_dim * rotary_fraction)`` channels; transformers' ``partial_rotary_factor``).
        parallel_block: one norm feeds both attention and FFN, ``x + attn(norm(x)) + ffn(norm(x))``
            (Phi-2, GPT-J; StableLM's ``use_parallel_residual``); else the sequential pre-norm block.
        mlp_activation: the dense FFN's, one of ``MLP_ACTIVATIONS`` (MoE layers set their own).
        mlp_bias: biases on the dense FFN's projections (Phi-2's ``fc1`` / ``fc2``).
        lm_head_bias: a bias on the LM head (Phi-2).
        sliding_window: each query attends to the last ``sliding_window`` positions only
            (Mistral-style, the query's own included), or ``None`` for full causal attention.
        mrope_section: multimodal RoPE (Qwen2-VL, arXiv 2409.12191; Qwen3-VL): how many of the
            ``rotary_dim // 2`` frequencies follow each of the three position axes (time, height, width),
            read from ``position_ids`` of shape ``(3, B, T)``; ``None``: plain RoPE. With ``(B, T)`` position
            ids (text alone: the three axes equal) it is plain RoPE exactly.
        mrope_interleaved: the axes take the frequencies in turn, ``t h w t h w ... t t`` (Qwen3-VL's
            ``apply_interleaved_mrope``), rather than in three consecutive chunks (Qwen2-VL).

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
    norm: str = "rms"
    rotary_fraction: float = 1.0
    parallel_block: bool = False
    mlp_activation: str = "swiglu"
    mlp_bias: bool = False
    lm_head_bias: bool = False
    sliding_window: int | None = None
    mrope_section: list[int] | None = None
    mrope_interleaved: bool = False

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
        require(self, "norm", self.norm in NORMS, f"must be one of {NORMS}")
        require(self, "mlp_activation", self.mlp_activation in MLP_ACTIVATIONS, f"must be one of {MLP_ACTIVATIONS}")
        require(self, "rotary_fraction",
                0 < self.rotary_fraction <= 1 and self.rotary_dim >= 2 and self.rotary_dim % 2 == 0,
                f"(transformers' partial_rotary_factor) must be in (0, 1] and rotate an even number "
                f"of channels (head_dim={self.head_dim})")
        require(self, "lm_head_bias", not (self.lm_head_bias and self.tie_embeddings),
                "is not supported with tie_embeddings=True")
        if self.sliding_window is not None:
            require(self, "sliding_window", self.sliding_window >= 1, "must be >= 1 or None")
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
            if kind == "longrope":
                lengths = {len(self.rope_scaling[k]) for k in ("short_factor", "long_factor")}
                require(self, "rope_scaling", lengths == {self.rotary_dim // 2},
                        f"needs short_factor and long_factor of rotary_dim // 2 = {self.rotary_dim // 2} values")
        if self.mrope_section is not None:
            self.mrope_section = [int(n) for n in self.mrope_section]
            require(self, "mrope_section", len(self.mrope_section) == 3 and min(self.mrope_section) >= 0
                    and sum(self.mrope_section) == self.rotary_dim // 2,
                    f"must be 3 counts (time, height, width) summing to rotary_dim // 2 = {self.rotary_dim // 2}")
            require(self, "mrope_section", self.rope_scaling is None or
                    self.rope_scaling.get("rope_type", "default") == "default",
                    "is only supported with the default RoPE (rope_scaling=None)")
            if self.mrope_interleaved:
                require(self, "mrope_section", 3 * max(self.mrope_section[1:]) <= self.rotary_dim // 2,
                        "interleaved: 3 * the height or width count must not pass rotary_dim // 2")
        if self.clip_qkv is not None:
            require(self, "clip_qkv", self.clip_qkv > 0, "must be > 0 or None")

    @property
    def rotary_dim(self) -> int:
        """How many channels of each head RoPE rotates (``head_dim`` unless ``rotary_fraction < 1``)."""
        return int(self.head_dim * self.rotary_fraction)

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
