"""The transformers text families moezoo reads and writes: one entry each.

Everything that differs between Mixtral, OLMoE, Qwen2-MoE, Qwen3-MoE, Llama, Qwen2,
StableLM, Phi-2 and Phi-3 is stated here as data, read from transformers 5's ``configuration_*.py`` and
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

from moezoo.models.lm.config import NORMS, QK_NORMS
from moezoo.utils.checks import require

QKV_BIASES = ("none", "always", "field")
SLIDING_WINDOWS = ("none", "switch", "always")
SPARSE_LAYOUTS = ("all", "step")
PARALLEL_BLOCKS = ("never", "always", "field")
FFNS = ("swiglu", "fc")


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
    # q/k norm: "head" per head (Qwen3 q_norm/k_norm, Phi q_layernorm), "full" over the projection (OLMoE),
    # "each_head" one weight per head (StableLM); hard-wired, or switched on by config `qk_norm_key`
    qk_norm: str = "none"
    # the config key that switches `qk_norm` on (default False); None: hard-wired
    qk_norm_key: str | None = None
    # q/k/v-only bias: "always" (hard-wired, Qwen2Attention), "field" (config `qkv_bias_key`), "none"
    qkv_bias: str = "none"
    # the config key of a "field" q/k/v bias, and its default when config.json lacks it
    qkv_bias_key: str = "qkv_bias"
    qkv_bias_default: bool = True
    # config `attention_bias`: bias on the q, k, v and o projections
    attention_bias_field: bool = False
    # hard-wired biases on the q, k, v and o projections (PhiAttention's q/k/v_proj and dense)
    attention_bias_always: bool = False
    # "rms" (RMSNorm, config `rms_norm_eps`) or "layer" (LayerNorm with bias, config `layer_norm_eps`)
    norm: str = "rms"
    # config `partial_rotary_factor` is read (this is its default when config.json lacks it); None: must be 1
    partial_rotary_default: float | None = None
    # attention and FFN side by side on one norm: "never", "always" (Phi), "field" (`use_parallel_residual`)
    parallel_block: str = "never"
    # the dense FFN: "swiglu" (gate/up/down, `hidden_act` silu) or "fc" (biased fc1/fc2, a GELU `hidden_act`)
    ffn: str = "swiglu"
    # a bias on the LM head (PhiForCausalLM); weights without one read as a bias-free head (LLaVA's,
    # MoE-LLaVA's), and a bias-free head exports with a zero bias
    lm_head_bias: bool = False
    # q/k/v in one `qkv_proj` and the dense gate/up in one `gate_up_proj` (Phi3Attention / Phi3MLP)
    fused_projections: bool = False
    # moezoo module path -> the family's (a dotted path, matched whole), e.g. Phi's `self_attn.dense`
    weight_names: Mapping[str, str] = field(default_factory=dict)
    # rope_type spellings the family's config class reads as another type (Phi3Config: "su" -> longrope)
    rope_type_aliases: Mapping[str, str] = field(default_factory=dict)
    # the config class has a top-level `original_max_position_embeddings` (with this default), which
    # transformers prefers over the one in `rope_parameters`; None: no such field
    original_max_default: int | None = None
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
        require(self, "norm", self.norm in NORMS, f"must be one of {NORMS}")
        require(self, "parallel_block", self.parallel_block in PARALLEL_BLOCKS, f"must be one of {PARALLEL_BLOCKS}")
        require(self, "ffn", self.ffn in FFNS, f"must be one of {FFNS}")
        require(self, "qk_norm_key", self.qk_norm_key is None or self.qk_norm != "none", "needs a qk_norm kind")
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
        for name in ("tiny", "weight_names", "rope_type_aliases"):  # entries are shared: read-only
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))

    @property
    def norm_eps_key(self) -> str:
        """The config key of the norms' epsilon."""
        return "rms_norm_eps" if self.norm == "rms" else "layer_norm_eps"


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
    # transformers/models/stablelm: LayerNorm, partial rotary (0.25 by default), StableLmLayerNormPerHead
    # (`q_layernorm.norms.{h}`, no bias) under `qk_layernorm`, `use_parallel_residual`. MoE-LLaVA's base.
    TextFamily("stablelm", "StableLmForCausalLM", "StableLmConfig", qk_norm="each_head", qk_norm_key="qk_layernorm",
               qkv_bias="field", qkv_bias_key="use_qkv_bias", qkv_bias_default=False, norm="layer",
               partial_rotary_default=0.25, parallel_block="field",
               weight_names={"self_attn.q_norm": "self_attn.q_layernorm", "self_attn.k_norm": "self_attn.k_layernorm"},
               tiny=dict(intermediate_size=48, use_qkv_bias=True, qk_layernorm=True, partial_rotary_factor=0.5)),
    # transformers/models/phi (Phi-1.5 / Phi-2): one LayerNorm feeds attention and the biased fc1/fc2 GELU
    # MLP side by side; biased q/k/v/dense, `final_layernorm`, an LM head with bias; partial rotary (0.5).
    # Like every family here, its dropouts (Phi-2's resid_pdrop=0.1) are not applied: exact in eval,
    # and fine-tuning in moezoo runs without them.
    TextFamily("phi", "PhiForCausalLM", "PhiConfig", qk_norm="head", qk_norm_key="qk_layernorm",
               attention_bias_always=True, norm="layer", partial_rotary_default=0.5, parallel_block="always",
               ffn="fc", lm_head_bias=True,
               weight_names={"self_attn.o_proj": "self_attn.dense", "mlp.up_proj": "mlp.fc1",
                             "mlp.down_proj": "mlp.fc2",
                             "self_attn.q_norm": "self_attn.q_layernorm", "self_attn.k_norm": "self_attn.k_layernorm",
                             "norm": "final_layernorm"},
               tiny=dict(intermediate_size=48, qk_layernorm=True, partial_rotary_factor=0.5)),
    # transformers/models/phi3 (Phi-3, Phi-3.5; LibMoE's base): fused qkv_proj and gate_up_proj, LongRoPE
    # (`su` and `yarn` read as `longrope`) with a top-level `original_max_position_embeddings`, a sliding window.
    TextFamily("phi3", "Phi3ForCausalLM", "Phi3Config", sliding_window="always", partial_rotary_default=1.0,
               fused_projections=True, rope_type_aliases={"su": "longrope", "yarn": "longrope"},
               original_max_default=4096,
               tiny=dict(intermediate_size=48, sliding_window=8, original_max_position_embeddings=16,
                         rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0,
                                          "short_factor": [1.0, 1.1, 1.3, 1.6], "long_factor": [1.5, 2.0, 3.0, 5.0]})),
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
