"""The transformers text families moezoo reads and writes: one entry each.

Everything that differs between Mixtral, OLMoE, Qwen2-MoE, Qwen3-MoE, Llama and Qwen2
is stated here as data, read from transformers 5's ``configuration_*.py`` and
``modeling_*.py`` of each family; :mod:`~moezoo.convert.hf_config`,
:mod:`~moezoo.convert.hf_weights` and :mod:`~moezoo.convert.testing` only read the
entries (one cfg table, as timm keeps per family file). A new family whose layers
transformers builds from mechanisms already listed here is one more entry; a new
mechanism (another q/k-norm, a shared-expert layout, a router) also needs code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from moezoo.models.lm.config import QK_NORMS
from moezoo.utils.checks import require

QKV_BIASES = ("none", "always", "field")
SLIDING_WINDOWS = ("none", "switch", "always")
SPARSE_LAYOUTS = ("all", "step")


@dataclass(frozen=True)
class TextFamily:
    """A transformers decoder-only text family, as the facts moezoo's conversion needs.

    Example:
        >>> FAMILIES["mixtral"].num_experts_keys[0], FAMILIES["qwen2"].qkv_bias
        ('num_local_experts', 'always')
        >>> TextFamily("x", "XForCausalLM", "XConfig", sparse_layers="step")
        Traceback (most recent call last):
        ...
        ValueError: TextFamily.sparse_layers='step' needs moe=True
    """

    # config.json "model_type", the key transformers' Auto classes dispatch on
    model_type: str
    # the *ForCausalLM class registered for it (config.json "architectures")
    architecture: str
    # its configuration class in `transformers` (builds the tiny test model)
    config_class: str
    # has sparse-MoE FFN layers (else every FFN is a dense SwiGLU MLP)
    moe: bool = False
    # hard-wired q/k RMSNorm: "head" per head (Qwen3 q_norm/k_norm), "full" over the projection (OLMoE)
    qk_norm: str = "none"
    # q/k/v-only bias: "always" (hard-wired, Qwen2Attention), "field" (config `qkv_bias`, default True), "none"
    qkv_bias: str = "none"
    # config `attention_bias`: bias on the q, k, v and o projections
    attention_bias_field: bool = False
    # config `mlp_bias`: bias on the dense FFN (moezoo rejects True)
    mlp_bias_field: bool = False
    # config `head_dim` is written; without it heads must be hidden_size // num_attention_heads wide
    head_dim_field: bool = False
    # config `clip_qkv`: clamp q, k, v to [-clip_qkv, clip_qkv]
    clip_qkv_field: bool = False
    # when `sliding_window` windows attention: "always", "switch" (only with `use_sliding_window`), "none"
    sliding_window: str = "none"
    # the RoPE base transformers assumes when config.json has no rope_theta
    rope_theta: float = 10000.0
    # config keys of the routed-expert count; first is written, all read (attribute_map aliases)
    num_experts_keys: tuple[str, ...] = ()
    # config key of each routed expert's hidden width
    expert_dim_key: str | None = None
    # top-k weights renormalised: hard-wired True/False, or None: config `norm_topk_prob` (default False)
    norm_topk_prob: bool | None = None
    # one sigmoid-gated shared expert: `shared_expert` + `shared_expert_gate`, `shared_expert_intermediate_size` wide
    shared_expert: bool = False
    # "all" layers MoE, or "step": layer i iff i not in `mlp_only_layers` and (i + 1) % `decoder_sparse_step` == 0
    sparse_layers: str = "all"
    # the MoE block's module name in per-expert (published) checkpoints
    moe_block: str = "mlp"
    # per-expert (gate, up, down) weight names
    expert_projections: tuple[str, str, str] = ("gate_proj", "up_proj", "down_proj")
    # the tiny test model's config overrides, chosen to exercise the family's peculiarities (moezoo.convert.testing)
    tiny: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        require(self, "qk_norm", self.qk_norm in QK_NORMS, f"must be one of {QK_NORMS}")
        require(self, "qkv_bias", self.qkv_bias in QKV_BIASES, f"must be one of {QKV_BIASES}")
        require(self, "sliding_window", self.sliding_window in SLIDING_WINDOWS, f"must be one of {SLIDING_WINDOWS}")
        require(self, "sparse_layers", self.sparse_layers in SPARSE_LAYOUTS, f"must be one of {SPARSE_LAYOUTS}")
        require(self, "expert_projections", len(self.expert_projections) == 3, "must name (gate, up, down)")
        if self.moe:
            require(self, "num_experts_keys", bool(self.num_experts_keys), "must name at least one key when moe=True")
            require(self, "expert_dim_key", bool(self.expert_dim_key), "must be set when moe=True")
        else:  # MoE facts on a dense family would be silently ignored
            for name, default in (("num_experts_keys", ()), ("expert_dim_key", None), ("norm_topk_prob", None),
                                  ("shared_expert", False), ("sparse_layers", "all")):
                require(self, name, getattr(self, name) == default, "needs moe=True")
        object.__setattr__(self, "tiny", MappingProxyType(dict(self.tiny)))  # entries are shared: read-only


# Ordered as the tests' parametrisations (and their seeds) expect; `infer_family` prefers
# families in `moezoo.models.lm.config`'s DENSE_FAMILIES / MOE_FAMILIES order.
_ENTRIES = (
    # transformers/models/mixtral: experts as `block_sparse_moe.experts.{e}.w1/w3/w2` in published files.
    TextFamily("mixtral", "MixtralForCausalLM", "MixtralConfig", moe=True, head_dim_field=True,
               sliding_window="always", rope_theta=1e6, num_experts_keys=("num_local_experts", "num_experts"),
               expert_dim_key="intermediate_size", norm_topk_prob=True, moe_block="block_sparse_moe",
               expert_projections=("w1", "w3", "w2"),
               tiny=dict(intermediate_size=24, num_local_experts=4, num_experts_per_tok=2)),
    # transformers/models/olmoe
    TextFamily("olmoe", "OlmoeForCausalLM", "OlmoeConfig", moe=True, qk_norm="full", attention_bias_field=True,
               clip_qkv_field=True, num_experts_keys=("num_experts", "num_local_experts"),
               expert_dim_key="intermediate_size",
               tiny=dict(intermediate_size=24, num_experts=8, num_experts_per_tok=2, clip_qkv=8.0)),
    # transformers/models/qwen2_moe
    TextFamily("qwen2_moe", "Qwen2MoeForCausalLM", "Qwen2MoeConfig", moe=True, qkv_bias="field",
               sliding_window="switch", num_experts_keys=("num_experts",), expert_dim_key="moe_intermediate_size",
               shared_expert=True, sparse_layers="step",
               tiny=dict(num_hidden_layers=3, intermediate_size=48, moe_intermediate_size=16,
                         shared_expert_intermediate_size=40, num_experts=4, num_experts_per_tok=2,
                         decoder_sparse_step=2, mlp_only_layers=[2], norm_topk_prob=False)),
    # transformers/models/qwen3_moe (5.x writes `num_local_experts`, published files `num_experts`)
    TextFamily("qwen3_moe", "Qwen3MoeForCausalLM", "Qwen3MoeConfig", moe=True, qk_norm="head",
               attention_bias_field=True, head_dim_field=True, sliding_window="switch",
               num_experts_keys=("num_experts", "num_local_experts"), expert_dim_key="moe_intermediate_size",
               sparse_layers="step",
               tiny=dict(intermediate_size=48, moe_intermediate_size=16, num_experts=6, num_experts_per_tok=2,
                         head_dim=12, mlp_only_layers=[0], norm_topk_prob=True)),
    # transformers/models/llama
    TextFamily("llama", "LlamaForCausalLM", "LlamaConfig", attention_bias_field=True, mlp_bias_field=True,
               head_dim_field=True,
               tiny=dict(intermediate_size=48, rope_parameters={
                   "rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
                   "high_freq_factor": 4.0, "original_max_position_embeddings": 32})),
    # transformers/models/qwen2
    TextFamily("qwen2", "Qwen2ForCausalLM", "Qwen2Config", qkv_bias="always", sliding_window="switch",
               tiny=dict(intermediate_size=48, tie_word_embeddings=True)),
)
# model_type -> its entry.
FAMILIES: dict[str, TextFamily] = {f.model_type: f for f in _ENTRIES}


def supported() -> str:
    """Human-readable list of the supported architectures, for error messages.

    Example:
        >>> supported().split(", ")[0]
        "MixtralForCausalLM (model_type 'mixtral')"
    """
    return ", ".join(f"{f.architecture} (model_type {mt!r})" for mt, f in FAMILIES.items())


def text_family(model_type: str) -> TextFamily:
    """The entry of ``model_type``; a ``ValueError`` listing the supported ones otherwise.

    Example:
        >>> text_family("olmoe").qk_norm
        'full'
    """
    if model_type not in FAMILIES:
        raise ValueError(f"unknown family {model_type!r}; supported: {', '.join(FAMILIES)}")
    return FAMILIES[model_type]
