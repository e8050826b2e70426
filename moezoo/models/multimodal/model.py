"""The multimodal MoE model: encoders -> connectors -> placeholder tokens -> the MoE LLM.

LLaVA's recipe (Liu et al. 2023, arXiv 2304.08485): each image's feature tokens,
projected by a connector, replace the ``<image>`` placeholder tokens of the prompt, and
the LLM reads the mixed sequence. Uni-MoE (arXiv 2405.11273) extends it to audio and
video with one encoder and connector per modality; MoE-LLaVA (arXiv 2401.15947) and
LibMoE (arXiv 2411.00918) make the LLM (and the connector) sparse. Module names follow
transformers' ``LlavaForConditionalGeneration`` closely enough that a LLaVA checkpoint
loads by prefix renames (``vision.vision_tower`` / ``connectors.image`` / ``llm``).

Instruction-aware parts (a FiLM-conditioned encoder, a ``film`` or ``instruct``
connector) read the *prompt*: the sample's text tokens that are neither placeholders
nor padding and, in training, come before its first answer token (labels != -100), so
they never see the answer they are asked to help predict, and read in training what they
read when the model generates (nothing of the answer turn, not even the newline after it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch
from torch import nn

from moezoo.models.base import ZooModel
from moezoo.models.lm.model import CausalLMOutput, MoEForCausalLM
from moezoo.models.multimodal.config import MultimodalConfig
from moezoo.models.multimodal.frontend import build_parts, connector_for, encoder_for, preprocess_specs, token_counts
from moezoo.models.multimodal.merge import item_index, item_samples, modality_expert_counts
from moezoo.moe import recording
from moezoo.moe.layer import RoutingStats
from moezoo.moe.recording import SiteOutput, SiteRecorder, modality_pass
from moezoo.processing.chat import IGNORE_INDEX
from moezoo.processing.processor import INPUT_KEYS, MODALITIES



@dataclass
class MultimodalOutput(CausalLMOutput):
    """:class:`~moezoo.models.lm.model.CausalLMOutput` plus the multimodal parts.

    Attributes:
        site_outputs: every call of an MoE site outside the LLM (an ``moe`` connector, an
            upcycled encoder's block MLPs) in this forward, in call order, as
            :class:`~moezoo.moe.recording.SiteOutput` ``(site, modality, call, output, config)``:
            ``site`` its module name, ``modality`` the pass (``"image"``, ``"audio"``,
            ``"video"``), ``output`` its :class:`~moezoo.moe.MoEOutput`. A vision tower that
            encodes a batch's images and then its video frames leaves two records per MoE block.
        modality_ids: ``(B, T)`` the modality of each token: 0 text, 1 image, 2 audio,
            3 video, -1 padding.
    """

    site_outputs: list[SiteOutput] = field(default_factory=list)
    modality_ids: torch.Tensor | None = None

    @cached_property
    def site_losses(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """``{site: (aux_loss (), z_loss ())}``, unweighted, each summed over the site's passes
        (:func:`~moezoo.moe.recording.site_losses`); in training ``loss`` already holds every
        pass's losses times the site's coefficients."""
        return recording.site_losses(self.site_outputs)

    @cached_property
    def site_stats(self) -> dict[str, RoutingStats]:
        """``{site: RoutingStats}`` over all the site's passes (:func:`~moezoo.moe.recording.site_stats`)."""
        return recording.site_stats(self.site_outputs)

    @cached_property
    def modality_tokens_per_expert(self) -> list[torch.Tensor]:
        """Per LLM MoE layer, ``(4, E)`` assignments by modality (text, image, audio, video) and
        expert: the Uni-MoE question of which experts serve which modality."""
        if self.modality_ids is None:
            return []
        return [modality_expert_counts(r, self.modality_ids, len(MODALITIES) + 1) for r in self.routings]


class MultimodalMoEForCausalLM(ZooModel):
    """Encoders and connectors per modality in front of a (sparse) :class:`MoEForCausalLM`.

    Example:
        >>> from moezoo.models.lm import LMConfig
        >>> cfg = MultimodalConfig(llm=LMConfig(vocab_size=64, dim=32, num_layers=1, num_heads=4, ffn_dim=64),
        ...                        vision={"kind": "cnn", "channels": [8, 8, 16, 16], "film": False})
        >>> model = MultimodalMoEForCausalLM(cfg).eval()
        >>> ids = torch.tensor([[1] + [4] * model.num_tokens["image"] + [7, 8]])
        >>> model(input_ids=ids, pixel_values=torch.randn(1, 3, 64, 64)).logits.shape
        torch.Size([1, 19, 64])
    """

    config_class = MultimodalConfig

    def __init__(self, config: MultimodalConfig, processor: Any = None):
        super().__init__()
        self.config = config
        self.llm = MoEForCausalLM(config.llm)
        self.vision, self.audio, self.connectors = build_parts(config)
        self.num_tokens = token_counts(config, self.vision, self.audio, self.connectors)
        self.processor = processor

    # -- the protocol (moezoo.models.base) ------------------------------------------------------------
    @property
    def language_model(self) -> MoEForCausalLM:
        return self.llm

    def encoders(self) -> dict[str, nn.Module]:
        return {name: m for name, m in (("vision", self.vision), ("audio", self.audio)) if m is not None}

    # -- parts by modality -----------------------------------------------------------------------------
    def encoder_for(self, modality: str) -> nn.Module:
        """The encoder of ``modality`` (videos: the image tower, frame by frame)."""
        return encoder_for(self.config, self.vision, self.audio, modality)

    def connector_for(self, modality: str) -> nn.Module:
        """The connector of ``modality`` (videos share the image connector unless they have their own)."""
        return connector_for(self.connectors, modality)

    def token_id(self, modality: str) -> int:
        """The placeholder token id of ``modality``."""
        return getattr(self.config, f"{modality}_token_id")

    def preprocess_specs(self) -> dict[str, dict]:
        """Modality -> the preprocessing spec of its encoder (what the processor applies)."""
        return preprocess_specs(self.vision, self.audio)

    # -- embedding the mixed sequence ------------------------------------------------------------------
    def embed_inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                     labels: torch.Tensor | None = None, prompt_mask: torch.Tensor | None = None,
                     **media: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """The LLM's input embeddings with every placeholder replaced by its modality's features.

        Args:
            input_ids: ``(B, T)`` with each placeholder expanded into ``num_tokens[modality]`` ids.
            attention_mask: ``(B, T)``, 0 on padding.
            labels: ``(B, T)`` training labels; the prompt ends before the first answer token.
            prompt_mask: ``(B, T)`` the tokens instruction-aware parts may read (default: see the
                module docstring).
            **media: ``pixel_values``, ``input_features``, ``pixel_values_videos``.

        Returns:
            ``(embeds (B, T, D), spans (B, T) or None, modality_ids (B, T))``: ``spans`` numbers the
            spans the LLM's mask lets attend both ways: each media item (``"bidirectional"``), or the
            whole prompt as span 1 (``"prefix"``); ``None`` when attention is causal.

        Raises:
            ValueError: placeholder tokens and inputs disagree, an unknown input is given, or the
                sequence is longer than the LLM's context.
        """
        unknown = sorted(set(media) - set(INPUT_KEYS.values()))
        if unknown:
            raise ValueError(f"unknown inputs {unknown}; the model takes {sorted(INPUT_KEYS.values())}")
        length, context = input_ids.shape[1], self.config.llm.max_position_embeddings
        if length > context:
            raise ValueError(f"the prompt has {length} tokens (placeholders expanded), more than the model's "
                             f"context of {context} (llm.max_position_embeddings)")
        embeds = self.llm.embed_tokens(input_ids)  # (B, T, D)
        real = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        modality_ids = torch.where(real, 0, -1)
        is_placeholder = torch.zeros_like(real)
        for i, modality in enumerate(MODALITIES, start=1):
            if modality in self.num_tokens:
                mask = input_ids == self.token_id(modality)
                modality_ids = torch.where(mask & real, i, modality_ids)
                is_placeholder |= mask
        before_answer = real if labels is None else real & ((labels != IGNORE_INDEX).cumsum(1) == 0)
        if prompt_mask is None:
            prompt_mask = before_answer & ~is_placeholder
        prompt = embeds  # the text embeddings the instruction-aware parts read (placeholders masked out)
        attention = self.config.modality_attention
        # Span ids for the LLM's mask: one per media item ("bidirectional"), or the whole prompt as one
        # span ("prefix": everything before the first answer token; all of the input when generating).
        spans = {"causal": None, "bidirectional": torch.zeros_like(input_ids),
                 "prefix": before_answer.long()}[attention]
        out, first_span = embeds, 1
        for modality in MODALITIES:
            inputs = media.get(INPUT_KEYS[modality])
            features = self._features(modality, input_ids, inputs, prompt, prompt_mask)
            if features is None:
                continue
            mask_BT = input_ids == self.token_id(modality)
            out = out.masked_scatter(mask_BT[..., None], features.to(out.dtype))
            if attention == "bidirectional":
                item = item_index(mask_BT, self.num_tokens[modality])
                spans = torch.where(mask_BT, item + first_span, spans)
                first_span += features.shape[0]
        return out, spans, modality_ids

    def _features(self, modality: str, input_ids: torch.Tensor, inputs: torch.Tensor | None, prompt: torch.Tensor,
                  prompt_mask: torch.Tensor) -> torch.Tensor | None:
        """``(N, num_tokens, D)`` features of the ``N`` inputs of ``modality``, checked against the placeholders."""
        key = INPUT_KEYS[modality]
        if modality not in self.num_tokens:
            if inputs is not None:
                raise ValueError(f"this model takes no {modality} input ({key}); it takes {self.config.modalities}")
            return None
        n_tok = self.num_tokens[modality]
        mask_BT = input_ids == self.token_id(modality)
        found, given = int(mask_BT.sum()), 0 if inputs is None else inputs.shape[0]
        if found != given * n_tok:
            raise ValueError(f"the input_ids hold {found} {modality} placeholder tokens but {given} {modality}(s) "
                             f"were given, which need {given * n_tok} ({n_tok} each): expand each placeholder once "
                             f"per {modality} (model.processor does)")
        if given == 0:
            return None
        sample_N = item_samples(mask_BT, n_tok)
        encoder, connector = self.encoder_for(modality), self.connector_for(modality)
        condition = encoder.pool_condition(prompt, prompt_mask)[sample_N] if encoder.conditioned else None
        with modality_pass(modality):  # names this pass in the MoE sites' records (site_outputs)
            feats_NTD = encoder(inputs, condition)
            if connector.uses_prompt:
                return connector(feats_NTD, prompt[sample_N], prompt_mask[sample_N])
            return connector(feats_NTD)

    # -- forward and generate --------------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                pixel_values: torch.Tensor | None = None, input_features: torch.Tensor | None = None,
                pixel_values_videos: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, prompt_mask: torch.Tensor | None = None,
                logits_to_keep: int = 0, router_losses: bool = True, labelled_logits: bool = False
                ) -> MultimodalOutput:
        """Run the model on a batch from :attr:`processor` (or the training collate).

        Args:
            input_ids / attention_mask: ``(B, T)``, placeholders expanded.
            pixel_values: ``(N_images, 3, H, W)`` in placeholder order over the batch.
            input_features: ``(N_audios, mel_bins, frames)``.
            pixel_values_videos: ``(N_videos, F, 3, H, W)``.
            labels: ``(B, T)`` targets, -100 on prompts, placeholders and padding.
            position_ids / logits_to_keep / router_losses / labelled_logits: as
                :meth:`MoEForCausalLM.forward`.
            prompt_mask: see :meth:`embed_inputs`.

        Returns:
            :class:`MultimodalOutput`: ``loss`` (LM loss; in training plus the weighted aux and z
            losses of every call of every MoE site), ``logits (B, T, V)``, ``aux_loss`` (the LLM's),
            ``site_outputs`` (the MoE sites' calls outside the LLM).
        """
        # Every MoEMLP call of this forward (a tower that runs for images and again for video
        # frames calls each of its MoE blocks twice) is recorded; the records are the output's.
        with SiteRecorder(self) as recorder:
            embeds, spans, modality_ids = self.embed_inputs(
                input_ids, attention_mask, labels, prompt_mask, pixel_values=pixel_values,
                input_features=input_features, pixel_values_videos=pixel_values_videos)
            out = self.llm(inputs_embeds=embeds, attention_mask=attention_mask, labels=labels,
                           position_ids=position_ids, logits_to_keep=logits_to_keep, router_losses=router_losses,
                           spans=spans, labelled_logits=labelled_logits)
        loss = out.loss
        if loss is not None and self.training:
            for record in recorder.records:  # each pass's losses, weighted by its site's coefficients
                loss = loss + record.weighted_loss
        return MultimodalOutput(out.logits, loss, out.aux_loss, out.z_loss, out.router_stats, out.routings,
                                out.lm_loss, recorder.records, modality_ids)

    @torch.inference_mode()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 pixel_values: torch.Tensor | None = None, input_features: torch.Tensor | None = None,
                 pixel_values_videos: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        """Decode after a multimodal prompt: the encoders run once, then the LLM decodes with its KV cache.

        Returns the prompt ids followed by the new ids. ``kwargs`` are
        :func:`moezoo.models.lm.generation.generate`'s (``max_new_tokens``, ``do_sample``,
        ``temperature``, ``top_k``, ``top_p``, ``eos_token_id``, ...).
        """
        from moezoo.models.lm.generation import generate

        embeds, spans, _ = self.embed_inputs(input_ids, attention_mask, pixel_values=pixel_values,
                                             input_features=input_features, pixel_values_videos=pixel_values_videos)
        return generate(self.llm, input_ids, attention_mask=attention_mask, inputs_embeds=embeds, spans=spans,
                        **kwargs)
