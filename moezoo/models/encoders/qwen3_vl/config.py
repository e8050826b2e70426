"""The Qwen3-VL tower's typed config, 1:1 with transformers' ``Qwen3VLMoeVisionConfig``, and its checkpoint keys."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from moezoo.moe.mlp_experts import ACTIVATIONS
from moezoo.utils.checks import check_min, require
from moezoo.utils.config import Config

HF_PREFIX = "model.visual."  # where Qwen3VL(Moe)ForConditionalGeneration keeps the tower
# Keys of a transformers vision config that say nothing about the tower's maths (PretrainedConfig's own).
_HF_GENERIC = {"model_type", "transformers_version", "architectures", "dtype", "torch_dtype", "_name_or_path",
               "return_dict", "output_hidden_states", "output_attentions", "chunk_size_feed_forward",
               "is_encoder_decoder", "id2label", "label2id", "problem_type", "_attn_implementation_autoset"}


@dataclass
class Qwen3VLVisionConfig(Config):
    """The tower's shape, field for field transformers' ``Qwen3VLMoeVisionConfig`` / ``Qwen3VLVisionConfig``.

    Defaults are Qwen3-VL-30B-A3B's tower (``vision_config`` of ``Qwen/Qwen3-VL-30B-A3B-Instruct``), except
    ``out_hidden_size``, which is transformers' default; the 30B-A3B checkpoint sets it to its LLM's 2048.

    Args:
        depth / hidden_size / num_heads / intermediate_size / hidden_act: the blocks (``hidden_act`` a name of
            :data:`~moezoo.moe.mlp_experts.ACTIVATIONS`; the mergers always use the exact GELU).
        in_channels / patch_size / temporal_patch_size: the Conv3d patch: ``temporal_patch_size`` frames of
            ``patch_size``² pixels (a still image is repeated over the frames by the processor).
        spatial_merge_size: ``m``: each ``m × m`` window of patches becomes one output token.
        out_hidden_size: width of the merged and deepstack tokens (the LLM's hidden size).
        num_position_embeddings: size of the learned absolute position grid (a square number).
        deepstack_visual_indexes: blocks (0-based) after which a deepstack merger taps the hidden states;
            merger ``k`` serves block ``deepstack_visual_indexes[k]``.
        rope_theta: base of the 2-D rotary (``rope_parameters["rope_theta"]`` in transformers).
        initializer_range: std of the normal init of a fresh tower (transformers' ``_init_weights``).

    Example:
        >>> cfg = Qwen3VLVisionConfig(depth=2, hidden_size=32, num_heads=4, intermediate_size=64,
        ...                           deepstack_visual_indexes=[0])
        >>> cfg.head_dim, Qwen3VLVisionConfig.from_hf(cfg.to_hf()) == cfg
        (8, True)
        >>> Qwen3VLVisionConfig(depth=2, deepstack_visual_indexes=[2])
        Traceback (most recent call last):
        ...
        ValueError: Qwen3VLVisionConfig.deepstack_visual_indexes=[2] must be distinct block indices in [0, depth=2)
    """

    kind: ClassVar[str] = "qwen3_vl"
    depth: int = 27
    hidden_size: int = 1152
    hidden_act: str = "gelu_pytorch_tanh"
    intermediate_size: int = 4304
    num_heads: int = 16
    in_channels: int = 3
    patch_size: int = 16
    spatial_merge_size: int = 2
    temporal_patch_size: int = 2
    out_hidden_size: int = 3584
    num_position_embeddings: int = 2304
    deepstack_visual_indexes: list[int] = field(default_factory=lambda: [8, 16, 24])
    rope_theta: float = 10000.0
    initializer_range: float = 0.02

    def __post_init__(self) -> None:
        self.deepstack_visual_indexes = [int(i) for i in self.deepstack_visual_indexes]
        check_min(self, depth=1, hidden_size=1, intermediate_size=1, num_heads=1, in_channels=1, patch_size=1,
                  spatial_merge_size=1, temporal_patch_size=1, out_hidden_size=1, num_position_embeddings=1)
        require(self, "hidden_size", self.hidden_size % self.num_heads == 0,
                f"must be a multiple of num_heads={self.num_heads}")
        require(self, "hidden_size", self.head_dim % 4 == 0,
                f"gives head_dim={self.head_dim}; the 2-D rotary needs a multiple of 4 (a quarter per axis and half)")
        side = round(self.num_position_embeddings ** 0.5)
        require(self, "num_position_embeddings", side * side == self.num_position_embeddings,
                "must be a square number (the learned position grid is square)")
        require(self, "hidden_act", self.hidden_act in ACTIVATIONS, f"must be one of {sorted(ACTIVATIONS)}")
        indexes = self.deepstack_visual_indexes
        require(self, "deepstack_visual_indexes", len(set(indexes)) == len(indexes)
                and all(0 <= i < self.depth for i in indexes),
                f"must be distinct block indices in [0, depth={self.depth})")
        require(self, "rope_theta", self.rope_theta > 0, "must be > 0")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @classmethod
    def from_hf(cls, vision_config: dict[str, Any]) -> Qwen3VLVisionConfig:
        """From a transformers ``vision_config`` dict (``Qwen3VLMoeVisionConfig.to_dict()`` or a checkpoint's
        ``config.json["vision_config"]``); PretrainedConfig's generic keys are ignored, any other unknown key
        and a rotary other than ``"axial"`` are refused."""
        data = {k: v for k, v in vision_config.items() if k not in _HF_GENERIC}
        rope = data.pop("rope_parameters", None) or {}
        if rope.get("rope_type", "axial") != "axial":
            raise ValueError(f"vision_config.rope_parameters={rope} is not supported: the Qwen3-VL tower's rotary "
                             "is 'axial' (2-D over rows and columns)")
        if "rope_theta" in rope:
            data["rope_theta"] = float(rope["rope_theta"])
        for name in ("patch_size", "temporal_patch_size"):
            value = data.get(name)
            if isinstance(value, (list, tuple)):  # transformers' type allows a pair; the tower uses one int
                if len(set(value)) != 1:
                    raise ValueError(f"vision_config.{name}={value} is not supported: the patch must be square")
                data[name] = int(value[0])
        return cls.from_dict(data)

    def to_hf(self) -> dict[str, Any]:
        """The transformers ``vision_config`` dict (``model_type`` ``"qwen3_vl_moe_vision"``)."""
        out = {k: v for k, v in self.to_dict().items() if k not in ("kind", "rope_theta")}
        out["rope_parameters"] = {"rope_type": "axial", "rope_theta": self.rope_theta}
        return {"model_type": "qwen3_vl_moe_vision", **out}


def hf_state_dict_key(name: str) -> str:
    """This tower's parameter name -> its key in a transformers Qwen3-VL(-MoE) checkpoint.

    Example:
        >>> hf_state_dict_key("blocks.0.attn.qkv.weight")
        'model.visual.blocks.0.attn.qkv.weight'
    """
    return HF_PREFIX + name


def from_hf_state_dict_key(key: str) -> str | None:
    """A transformers checkpoint key -> this tower's parameter name (``None`` for keys outside the tower).

    Example:
        >>> from_hf_state_dict_key("model.visual.merger.norm.weight"), from_hf_state_dict_key("lm_head.weight")
        ('merger.norm.weight', None)
    """
    return key[len(HF_PREFIX):] if key.startswith(HF_PREFIX) else None
