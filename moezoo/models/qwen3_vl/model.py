"""Qwen3-VL-MoE: the Qwen3-VL vision tower in front of a Qwen3-MoE-style LLM with multimodal RoPE and DeepStack.

Follows transformers 5.24's ``Qwen3VLMoeForConditionalGeneration`` (``models/qwen3_vl_moe/modeling_qwen3_vl_moe.py``;
Qwen3-VL technical report, arXiv 2511.21631):

* the tower (:class:`~moezoo.models.encoders.qwen3_vl.Qwen3VLVisionEncoder`) encodes ``pixel_values`` by
  ``image_grid_thw`` and ``pixel_values_videos`` by ``video_grid_thw``; its merged tokens replace the
  ``<|image_pad|>`` / ``<|video_pad|>`` embeddings in order (images first, then videos, as transformers);
* DeepStack (arXiv 2406.04334): the tower's deepstack tokens ``k`` are added to the LLM's hidden states at the
  visual tokens after decoder layer ``k`` (images and videos interleaved in sequence order);
* the LLM rotates with interleaved multimodal RoPE over ``(3, B, T)`` positions
  (:func:`~moezoo.models.qwen3_vl.positions.rope_positions`), counted over the real tokens, so a left-padded
  prompt is encoded as it would be alone; a text-only prompt gets plain RoPE positions;
* its MoE layers route as Qwen3-MoE's: softmax over the experts, top-k, weights renormalised.

Module names: ``visual`` is transformers' ``model.visual``, ``llm`` its ``model.language_model`` plus ``lm_head``
(:mod:`moezoo.convert.qwen3_vl` maps the keys).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from moezoo.models.base import ZooModel
from moezoo.models.encoders.qwen3_vl import Qwen3VLVisionEncoder
from moezoo.models.lm.model import CausalLMOutput, MoEForCausalLM
from moezoo.models.qwen3_vl.config import Qwen3VLMoEConfig
from moezoo.models.qwen3_vl.positions import rope_positions
from moezoo.processing.qwen_vl import mm_token_types


class Qwen3VLMoEForConditionalGeneration(ZooModel):
    """The Qwen3-VL-MoE model; ``model(**inputs)`` takes transformers' input names.

    Example:
        >>> from moezoo.models.qwen3_vl.testing import tiny_config
        >>> model = Qwen3VLMoEForConditionalGeneration(tiny_config()).eval()
        >>> ids = torch.tensor([[1, 5] + [model.config.image_token_id] * 4 + [7, 8]])  # a 4 x 4-patch image
        >>> pixels = torch.randn(16, model.visual.config.in_channels * 2 * model.visual.config.patch_size ** 2)
        >>> model(input_ids=ids, pixel_values=pixels, image_grid_thw=torch.tensor([[1, 4, 4]])).logits.shape
        torch.Size([1, 8, 96])
    """

    config_class = Qwen3VLMoEConfig

    def __init__(self, config: Qwen3VLMoEConfig, processor: Any = None):
        super().__init__()
        self.config = config
        self.visual = Qwen3VLVisionEncoder(config.vision)
        self.llm = MoEForCausalLM(config.llm)
        self.processor = processor

    # -- the protocol (moezoo.models.base) ------------------------------------------------------------
    @property
    def language_model(self) -> MoEForCausalLM:
        return self.llm

    def encoders(self) -> dict[str, nn.Module]:
        return {"visual": self.visual}

    def parts(self) -> dict[str, str]:
        """The tower is the encoder, except its patch mergers (the main one and DeepStack's): they map vision
        features into the LLM, so they are the connector the ``align`` stage trains (Qwen-VL's own fine-tuning
        scripts train them as the "mm MLP", apart from the tower and the LLM)."""
        return {**super().parts(), "visual.merger": "connector", "visual.deepstack_merger_list": "connector"}

    # -- the mixed sequence ----------------------------------------------------------------------------
    def embed_inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                     pixel_values: torch.Tensor | None = None, image_grid_thw: torch.Tensor | None = None,
                     pixel_values_videos: torch.Tensor | None = None, video_grid_thw: torch.Tensor | None = None,
                     mm_token_type_ids: torch.Tensor | None = None,
                     position_ids: torch.Tensor | None = None) -> dict[str, Any]:
        """The LLM's inputs: ``inputs_embeds``, ``position_ids (3, B, T)`` (the given ones, else
        :func:`rope_positions`'), ``visual_pos_masks`` and ``deepstack_visual_embeds`` (``None`` without images
        and videos).

        Raises:
            ValueError: the placeholders and the tower's tokens disagree in number, or a grid is missing.
        """
        c = self.config
        if mm_token_type_ids is None:
            mm_token_type_ids = mm_token_types(input_ids, c.image_token_id, c.video_token_id)
        embeds = self.llm.embed_tokens(input_ids)  # (B, T, D)
        masks, deepstacks = [], []
        for kind, modality, pixels, grid in ((1, "image", pixel_values, image_grid_thw),
                                             (2, "video", pixel_values_videos, video_grid_thw)):
            mask_BT = mm_token_type_ids == kind
            if pixels is None:
                if bool(mask_BT.any()):
                    raise ValueError(f"input_ids hold {int(mask_BT.sum())} {modality} placeholder tokens but no "
                                     f"{'pixel_values' if modality == 'image' else 'pixel_values_videos'} was given")
                continue
            if grid is None:
                raise ValueError(f"{modality} pixels need their {modality}_grid_thw (the processor gives both)")
            out = self.visual(pixels.to(self.visual.patch_embed.proj.weight.dtype), grid)
            if int(mask_BT.sum()) != out.merged.shape[0]:
                raise ValueError(f"input_ids hold {int(mask_BT.sum())} {modality} placeholder tokens but the "
                                 f"{modality}s give {out.merged.shape[0]} tokens ({out.token_counts} per item): "
                                 f"expand each placeholder as model.processor does")
            embeds = embeds.masked_scatter(mask_BT[..., None], out.merged.to(embeds.dtype))
            masks.append(mask_BT)
            deepstacks.append(out.deepstack)
        visual_mask, deepstack = None, None
        if masks:
            visual_mask = mm_token_type_ids > 0
            deepstack = deepstacks[0]
            if len(masks) == 2:  # images' and videos' rows interleaved in sequence order: found once, then copied
                is_image = masks[0][visual_mask]
                rows = torch.cat([is_image.nonzero().squeeze(1), (~is_image).nonzero().squeeze(1)])
                deepstack = [img.new_empty(len(is_image), img.shape[-1]).index_copy_(0, rows, torch.cat([img, vid]))
                             for img, vid in zip(*deepstacks)]
        if position_ids is None:
            position_ids, _ = rope_positions(input_ids, mm_token_type_ids, image_grid_thw, video_grid_thw,
                                             attention_mask, c.vision.spatial_merge_size)
        return {"inputs_embeds": embeds, "position_ids": position_ids, "visual_pos_masks": visual_mask,
                "deepstack_visual_embeds": deepstack}

    # -- forward and generate --------------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                pixel_values: torch.Tensor | None = None, image_grid_thw: torch.Tensor | None = None,
                pixel_values_videos: torch.Tensor | None = None, video_grid_thw: torch.Tensor | None = None,
                mm_token_type_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, logits_to_keep: int = 0, router_losses: bool = True,
                labelled_logits: bool = False) -> CausalLMOutput:
        """Run the model on a batch of ``model.processor`` (transformers' ``Qwen3VLProcessor`` keys).

        Args:
            input_ids / attention_mask: ``(B, T)``, placeholders expanded, left padding 0 in the mask.
            pixel_values / image_grid_thw: ``(N, C*T*P*P)`` patches of all images and ``(n_images, 3)`` grids.
            pixel_values_videos / video_grid_thw: the same for the videos.
            mm_token_type_ids: ``(B, T)`` 0 text, 1 image, 2 video (default: from the placeholder ids).
            labels: ``(B, T)`` targets (-100 ignored), shifted inside.
            position_ids: ``(3, B, T)`` RoPE positions (default: :func:`rope_positions`).
            logits_to_keep / router_losses / labelled_logits: as :meth:`MoEForCausalLM.forward`.

        Returns:
            the LLM's :class:`~moezoo.models.lm.model.CausalLMOutput` (``logits``, ``loss``, ``aux_loss``, ...).
        """
        inputs = self.embed_inputs(input_ids, attention_mask, pixel_values, image_grid_thw, pixel_values_videos,
                                   video_grid_thw, mm_token_type_ids, position_ids)
        return self.llm(**inputs, attention_mask=attention_mask, labels=labels, logits_to_keep=logits_to_keep,
                        router_losses=router_losses, labelled_logits=labelled_logits)

    @torch.inference_mode()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 pixel_values: torch.Tensor | None = None, image_grid_thw: torch.Tensor | None = None,
                 pixel_values_videos: torch.Tensor | None = None, video_grid_thw: torch.Tensor | None = None,
                 mm_token_type_ids: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        """Decode after a prompt with images / videos: the tower runs once, the deepstack features join the
        prefill, and each new token takes the last prompt position + 1 on every axis (transformers' rope
        deltas). Returns the prompt ids followed by the new ids; ``kwargs`` are
        :func:`moezoo.models.lm.generation.generate`'s (``max_new_tokens``, ``do_sample``, ...)."""
        from moezoo.models.lm.generation import generate

        inputs = self.embed_inputs(input_ids, attention_mask, pixel_values, image_grid_thw, pixel_values_videos,
                                   video_grid_thw, mm_token_type_ids)
        return generate(self.llm, input_ids, attention_mask=attention_mask, **inputs, **kwargs)
