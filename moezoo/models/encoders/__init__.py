"""Modality encoders: each turns one modality's preprocessed input into feature tokens.

============== =======================================================================
kind           what it is
============== =======================================================================
``timm``       any timm model; features of a chosen block / stage (``forward_intermediates``)
``open_clip``  an open_clip CLIP / SigLIP vision tower; patch tokens of a chosen block
``hf_vision``  transformers' ``CLIPVisionModel`` / ``SiglipVisionModel`` with LLaVA's feature selection
``cnn``        a small CNN trained from scratch, optionally FiLM-conditioned on the prompt
``whisper``    transformers' Whisper encoder on log-mel features (audio)
============== =======================================================================

Videos go through the image encoder frame by frame (:class:`VideoEncoder`).

The Qwen3-VL tower (:mod:`moezoo.models.encoders.qwen3_vl`) is no registered kind: it takes packed images
and videos of any size with their ``grid_thw``, so its token count varies per input.

Example:
    >>> from moezoo.models.encoders import build_encoder
    >>> enc = build_encoder({"kind": "timm", "model_name": "test_convnext", "feature_index": 2,
    ...                      "image_size": 64})
    >>> enc(torch.randn(1, 3, 64, 64)).shape == (1, enc.num_tokens, enc.out_dim)
    True
"""

import torch  # noqa: F401  (doctest namespace)

from moezoo.models.encoders import cnn, hf_vision, open_clip, timm, whisper  # noqa: F401  (the kinds register)
from moezoo.models.encoders.base import ENCODERS, Encoder, build_encoder
from moezoo.models.encoders.video import VideoConfig, VideoEncoder

__all__ = ["ENCODERS", "Encoder", "VideoConfig", "VideoEncoder", "build_encoder"]
