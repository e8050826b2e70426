"""``moezoo.load`` of a MoE-LLaVA checkpoint dir (``model_type`` ``moe_llava_{stablelm,phi,qwen1_5}``).

The config and weights are mapped by :mod:`moezoo.convert.moe_llava`. Weights are read from safetensors
only: a dir that holds only pickled ``pytorch_model*.bin`` / ``*.pt`` files is refused with the way to
convert it. With tokenizer files the model gets a :class:`~moezoo.processing.processor.Processor`: the
tokenizer plus ``<image>`` (MoE-LLaVA splices its image in at the id -200, which no tokenizer holds), the
tower's image processor (the dir's ``preprocessor_config.json`` if it has one, else the tower family's at its
size: ``CLIPImageProcessor`` for CLIP, ``SiglipImageProcessor`` for SigLIP: resize to the square, mean and
std 0.5, no crop), and the Jinja equivalent of MoE-LLaVA's conversation template as
``chat_template`` (also set on the tokenizer). A tokenizer that exists only as Hub remote code
(MoE-LLaVA-StableLM's ``Arcade100kTokenizer``) is never run: its ``tokenizer.json`` is read if present, else
the model loads without a processor and a warning says how to add one.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from moezoo.checkpoint.files import read_safetensors
from moezoo.checkpoint.reader import build_model
from moezoo.convert.hf_import import checkpoint_dtype, read_hf_config
from moezoo.convert.llava import IMAGE_TOKEN, add_image_token
from moezoo.convert.llava_import import processor_files
from moezoo.convert.moe_llava import BASES, REFUSED, chat_template, moe_llava_to_moezoo, multimodal_fields
from moezoo.models.encoders.hf_vision import FAMILIES as TOWERS
from moezoo.models.multimodal import MULTIMODAL_SPEC, MultimodalConfig, MultimodalMoEForCausalLM
from moezoo.models.spec import register_importer
from moezoo.processing.processor import Processor
from moezoo.processing.tokenizer import load_tokenizer


def import_moe_llava(path: str | Path, device: str | torch.device = "cpu",
                     dtype: torch.dtype | str | None = None) -> MultimodalMoEForCausalLM:
    """Load a MoE-LLaVA checkpoint dir as a :class:`MultimodalMoEForCausalLM`.

    Raises:
        ValueError: a config field moezoo cannot express (the file and field named), a pickle-only
            checkpoint (how to convert it said), missing or unexpected weights (listed), or a tokenizer
            with no free embedding row for ``<image>``.

    Example:
        >>> import tempfile
        >>> from moezoo.convert.moe_llava_testing import tiny_moe_llava_checkpoint
        >>> path = tempfile.mkdtemp()
        >>> _ = tiny_moe_llava_checkpoint(path, "phi")
        >>> model = import_moe_llava(path)
        >>> model.config.llm.moe.router, model.config.llm.moe_layers, model.num_tokens
        ('deepspeed_top2', [1, 2], {'image': 16})
    """
    path = Path(path)
    cfg, generation = read_hf_config(path)
    fields = multimodal_fields(cfg, generation, path)
    tokenizer = _tokenizer(path)
    vocab = fields["llm"].vocab_size
    if tokenizer is not None:
        fields["image_token_id"] = add_image_token(tokenizer, vocab, path)
    else:  # no tokenizer to extend: the last embedding row holds the placeholder
        fields["image_token_id"] = vocab - 1
    files = processor_files(path, TOWERS[fields["vision"]["vision_config"]["model_type"]].image_processor)
    fields["vision"]["image_processor"] = files["image_processor"]
    config = MultimodalConfig(**fields)
    state = moe_llava_to_moezoo(read_safetensors(path), config.llm)
    model = build_model(config, state, str(path), device, checkpoint_dtype(cfg, dtype))
    if tokenizer is not None:
        template = chat_template(cfg["model_type"])
        tokenizer.chat_template = template
        model.processor = Processor(tokenizer, dict(model.num_tokens), image=model.preprocess_specs()["image"],
                                    placeholders={"image": IMAGE_TOKEN}, chat_template=template)
    return model


def _tokenizer(path: Path) -> Any:
    """The dir's tokenizer, or ``None`` with a warning when it exists only as remote code.

    MoE-LLaVA-StableLM's ``Arcade100kTokenizer`` is a tiktoken class shipped as Hub code (``auto_map``), and
    moezoo runs no remote code: with a ``tokenizer.json`` beside it, that file is read as a fast tokenizer.
    """
    import json

    settings = path / "tokenizer_config.json"
    remote = settings.is_file() and "AutoTokenizer" in (json.loads(settings.read_text()).get("auto_map") or {})
    if not remote:
        return load_tokenizer(path, required=False)
    if (path / "tokenizer.json").is_file():
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast(tokenizer_file=str(path / "tokenizer.json"))
    warnings.warn(f"{settings}: the tokenizer is remote code (auto_map) and there is no tokenizer.json; the model "
                  "loads without a processor. Save a transformers tokenizer with the same ids into the dir (for "
                  "MoE-LLaVA-StableLM: stabilityai/stablelm-2-1_6b's tokenizer.json) to get one", stacklevel=3)
    return None


for _model_type, (_family, _architecture) in BASES.items():
    register_importer(MULTIMODAL_SPEC, _model_type, import_moe_llava, _architecture)
for _model_type in REFUSED:  # multimodal_fields refuses them, with the reason, before anything is read
    register_importer(MULTIMODAL_SPEC, _model_type, import_moe_llava, "MoELLaVAQWenForCausalLM")
