"""``moezoo bench mm-model --family qwen3_vl_moe``: moezoo's Qwen3-VL-MoE against transformers'
``Qwen3VLMoeForConditionalGeneration`` on the same weights.

The same two workloads as the LLaVA family (:mod:`moezoo.bench.mm_model`), timed interleaved, medians of the rounds:

* **forward+backward**: a batch of ``--batch`` samples, each ``<|vision_start|>``, one image's merged placeholder
  tokens, ``<|vision_end|>`` and ``--seq - 2`` text tokens (so ``--seq`` text tokens with the two markers), the last
  half of the text supervised. Qwen3-VL's recipe freezes the ViT and trains the mergers (``merger`` and the
  deepstack mergers) and the LLM; so do both models here (``--train-tower`` trains the whole tower). The loss is
  the LM loss plus ``router_aux_loss_coef`` times the load-balancing loss: transformers' with
  ``output_router_logits=True``, moezoo's in training mode.
* **greedy generation**: batch 1, the first sample's prompt (one image), ``--new-tokens`` tokens, no stop token;
  tokens/s count new tokens, the tower and the prefill included.

The model: a Qwen3-VL tower (``--image-size`` px, patch ``--patch-size``, temporal patch 2, width
``--vision-dim``, ``--vision-layers`` blocks, ``--vision-heads`` heads, MLP ``--vision-ffn``, 2 x 2 merge,
the 48 x 48 learned position grid of Qwen3-VL-30B-A3B, deepstack mergers after the last three blocks), and a
Qwen3-MoE LLM with interleaved multimodal RoPE (``--layers``, ``--dim``, ``--heads`` query heads, half as many
key/value heads, head dim ``dim / heads``, ``mrope_section`` in Qwen3-VL's 24:20:20 proportions, every layer
sparse: ``--experts`` of width ``--expert-dim``, top ``--top-k``, renormalised). transformers runs SDPA attention
and the experts implementation named by ``--hf-experts`` (default ``grouped_mm``, its fastest on CPU);
moezoo is :func:`~moezoo.convert.qwen3_vl.hf_to_moezoo_state` of the same std-0.02 state dict, its experts
dispatched as ``--moe-dispatch`` says (default ``auto``, what ``moezoo.load`` gives). The result
holds both losses, the largest gradient difference and whether the generated ids are identical.
"""

from __future__ import annotations

import torch

from moezoo.bench.model import realistic_weights_
from moezoo.bench.compare import compare_generation, compare_training
from moezoo.bench.timing import max_grad_diff

# The shape the issue fixes (a tiny but realistic Qwen3-VL-MoE): tower depth 4, width 256; LLM 4 layers, d=512,
# 8 experts top-2 of width 256; one 224 x 224 image and 64 text tokens per sample, batch 2.
DEFAULTS = {"layers": 4, "dim": 512, "heads": 8, "experts": 8, "top_k": 2, "expert_dim": 256, "vocab": 4096,
            "batch": 2, "seq": 64, "image_size": 224, "patch_size": 16, "vision_dim": 256, "vision_layers": 4,
            "vision_heads": 4, "vision_ffn": 1024, "new_tokens": 64}
TEMPORAL_PATCH = 2
MERGE = 2


def mrope_section(head_dim: int) -> list[int]:
    """Qwen3-VL's ``[24, 20, 20]`` (head dim 128) scaled to ``head_dim``: time, height, width shares of the
    ``head_dim / 2`` rotary frequencies.

    Example:
        >>> mrope_section(128), mrope_section(64), mrope_section(16)
        ([24, 20, 20], [12, 10, 10], [4, 2, 2])
    """
    half = head_dim // 2
    spatial = (half * 20) // 64
    return [half - 2 * spatial, spatial, spatial]


def moezoo_config(args):
    """The :class:`~moezoo.models.qwen3_vl.Qwen3VLMoEConfig` of the benchmark's shape."""
    from moezoo.models.encoders.qwen3_vl import Qwen3VLVisionConfig
    from moezoo.models.lm.config import LMConfig
    from moezoo.models.qwen3_vl import Qwen3VLMoEConfig
    from moezoo.moe import MoEConfig

    head_dim = args.dim // args.heads
    moe = MoEConfig(dim=args.dim, expert_dim=args.expert_dim, num_experts=args.experts, top_k=args.top_k,
                    norm_topk_prob=True, aux_loss_coef=0.001, dispatch=getattr(args, "moe_dispatch", "auto"))
    llm = LMConfig(vocab_size=args.vocab, dim=args.dim, num_layers=args.layers, num_heads=args.heads,
                   num_kv_heads=max(1, args.heads // 2), head_dim=head_dim, ffn_dim=4 * args.expert_dim, moe=moe,
                   qk_norm="head", rope_theta=5_000_000.0, max_position_embeddings=4096,
                   mrope_section=mrope_section(head_dim), mrope_interleaved=True, family="qwen3_moe",
                   bos_token_id=None, eos_token_id=2, pad_token_id=0)
    deepstack = list(range(args.vision_layers))[-min(3, args.vision_layers, args.layers):]
    vision = Qwen3VLVisionConfig(depth=args.vision_layers, hidden_size=args.vision_dim, num_heads=args.vision_heads,
                                 intermediate_size=args.vision_ffn, patch_size=args.patch_size,
                                 temporal_patch_size=TEMPORAL_PATCH, spatial_merge_size=MERGE,
                                 out_hidden_size=args.dim, num_position_embeddings=48 * 48,
                                 deepstack_visual_indexes=deepstack)
    v = args.vocab
    return Qwen3VLMoEConfig(llm=llm, vision=vision, image_token_id=v - 4, video_token_id=v - 3,
                            vision_start_token_id=v - 2, vision_end_token_id=v - 1)


def qwen3_vl_pair(args, seed: int = 0):
    """``(transformers Qwen3VLMoeForConditionalGeneration, moezoo Qwen3VLMoEForConditionalGeneration)`` with the
    same std-0.02 weights; transformers' experts run ``args.hf_experts``."""
    import transformers

    from moezoo.checkpoint.reader import build_model
    from moezoo.convert.qwen3_vl import hf_config, hf_to_moezoo_state

    config = moezoo_config(args)
    torch.manual_seed(seed)
    hf = transformers.Qwen3VLMoeForConditionalGeneration(transformers.Qwen3VLMoeConfig(**hf_config(config)))
    realistic_weights_(hf)
    hf.set_experts_implementation(args.hf_experts)
    hf.generation_config.eos_token_id = None
    state = hf_to_moezoo_state({k: v.clone() for k, v in hf.state_dict().items()}, config)
    return hf, build_model(config, state, "bench")


def image_tokens(args) -> int:
    """Merged tokens of one ``--image-size`` square image.

    Example:
        >>> from argparse import Namespace
        >>> image_tokens(Namespace(image_size=224, patch_size=16))
        49
    """
    side = args.image_size // args.patch_size
    if side * args.patch_size != args.image_size or side % MERGE:
        raise ValueError(f"--image-size={args.image_size} must be a multiple of {MERGE} * --patch-size="
                         f"{args.patch_size} (Qwen3-VL merges 2 x 2 patches)")
    return (side // MERGE) ** 2


def qwen3_vl_batch(args, config) -> dict[str, torch.Tensor]:
    """transformers' input names: ``input_ids``, ``attention_mask``, ``mm_token_type_ids``, ``labels`` ``(B, T)``,
    ``pixel_values (B * patches, 3 * 2 * P * P)`` and ``image_grid_thw (B, 3)``, one image per sample.

    Example:
        >>> from argparse import Namespace
        >>> from moezoo.models.qwen3_vl.testing import tiny_config
        >>> b = qwen3_vl_batch(Namespace(batch=2, seq=6, image_size=16, patch_size=4, vocab=96), tiny_config())
        >>> b["input_ids"].shape, b["pixel_values"].shape, b["image_grid_thw"].tolist(), b["mm_token_type_ids"][0]
        (torch.Size([2, 10]), torch.Size([32, 96]), [[1, 4, 4], [1, 4, 4]], tensor([0, 1, 1, 1, 1, 0, 0, 0, 0, 0]))
        >>> (b["labels"] != -100).sum(1).tolist()
        [3, 3]
    """
    from moezoo.models.qwen3_vl import mm_token_types

    g = torch.Generator().manual_seed(0)
    n, side = image_tokens(args), args.image_size // args.patch_size
    B = args.batch
    text = torch.randint(3, config.image_token_id, (B, args.seq - 2), generator=g)
    ids = torch.cat([torch.full((B, 1), config.vision_start_token_id), torch.full((B, n), config.image_token_id),
                     torch.full((B, 1), config.vision_end_token_id), text], dim=1)
    labels = ids.masked_fill(torch.arange(ids.shape[1]) < ids.shape[1] - args.seq // 2, -100)
    pixels = torch.randn(B * side * side, 3 * TEMPORAL_PATCH * args.patch_size ** 2, generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids),
            "mm_token_type_ids": mm_token_types(ids, config.image_token_id, config.video_token_id),
            "labels": labels, "pixel_values": pixels, "image_grid_thw": torch.tensor([[1, side, side]] * B)}


_MERGERS = ("merger.", "deepstack_merger_list.")


def _set_training(hf, moe, train_tower: bool) -> None:
    """Training mode; the LLM and the mergers trained, the rest of the tower frozen unless ``train_tower``."""
    for model, tower in ((hf, hf.model.visual), (moe, moe.visual)):
        model.train().requires_grad_(True)
        for name, p in tower.named_parameters():
            p.requires_grad_(train_tower or name.startswith(_MERGERS))


def _max_grad_diff(hf, moe) -> float:
    """The largest difference between the two models' gradients, moezoo's mapped to transformers' in-memory names
    and layout (fused experts ``(E, 2I, H)`` / ``(E, H, I)``)."""
    from moezoo.convert.qwen3_vl import moezoo_to_hf_state

    grads = {name: p.grad for name, p in moe.named_parameters() if p.grad is not None}
    ours = moezoo_to_hf_state(grads, moe.config)
    ours = {k: v.transpose(1, 2) if k.endswith(("experts.gate_up_proj", "experts.down_proj")) else v
            for k, v in ours.items()}  # the hub layout back to transformers' in-memory one
    return max_grad_diff(ours, hf)


def time_training(args, hf, moe, time_pair) -> dict:
    """Forward+backward of both models, interleaved; the losses and gradients are compared."""
    _set_training(hf, moe, args.train_tower)
    batch = qwen3_vl_batch(args, moe.config)
    # transformers' loss with router logits: LM loss + router_aux_loss_coef * aux loss
    return compare_training(hf, moe, batch, lambda: hf(**batch, output_router_logits=True).loss, _max_grad_diff,
                            time_pair)


def time_generation(args, hf, moe, time_pair) -> dict:
    """Greedy decoding of ``--new-tokens`` after the first sample's prompt (one image), interleaved."""
    batch = qwen3_vl_batch(args, moe.config)
    patches = int(batch["image_grid_thw"][0].prod())
    prompt = {k: batch[k][:1] for k in ("input_ids", "attention_mask", "mm_token_type_ids", "image_grid_thw")}
    prompt["pixel_values"] = batch["pixel_values"][:patches]
    return compare_generation(hf, moe, prompt, args.new_tokens, time_pair)


def describe(args) -> str:
    """The one-line description of the model the run printed."""
    tower = "trained" if args.train_tower else "frozen but its mergers"
    return (f"Qwen3-VL tower ({args.image_size} px, patch {args.patch_size}, width {args.vision_dim}, "
            f"{args.vision_layers} blocks, {tower}), Qwen3-MoE LLM with mRoPE ({args.layers} layers, d={args.dim}, "
            f"E={args.experts}, k={args.top_k}, d_ff={args.expert_dim}, dispatch {args.moe_dispatch}); "
            f"transformers' experts: {args.hf_experts}")
