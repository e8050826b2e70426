"""A multimodal MoE model, LLaVA-shaped or Qwen3-VL-MoE (``--family``): moezoo against transformers.

``--family llava`` (the default) is described here; ``--family qwen3_vl_moe`` compares moezoo's Qwen3-VL-MoE with
transformers' ``Qwen3VLMoeForConditionalGeneration`` (:mod:`moezoo.bench.mm_qwen3_vl`, its own default shape).
Both families print the same two ratios against the same targets (>= 1.25x forward+backward, >= 1.5x greedy).

The LLaVA family: moezoo against transformers' ``LlavaForConditionalGeneration``, one model shape,
two workloads, each timed interleaved and summarised by medians of the rounds (ratios: medians of
the per-round ratios, so both sides of a ratio ran back to back):

* **forward+backward**, a LLaVA-1.5 stage-2 step (Liu et al. 2023, arXiv 2310.03744): a batch
  of ``--batch`` samples, each ``<s>``, one image's placeholder tokens and ``--seq - 1`` text
  tokens, the answer (the last half of the text) supervised, the vision tower frozen in
  both models (``--train-tower`` trains it too), the projector and the LLM trained. The loss
  is the LM loss plus ``router_aux_loss_coef`` times the load-balancing loss, as MoE-LLaVA
  (arXiv 2401.15947) trains: transformers' LLaVA drops its text model's router logits, so
  forward hooks on the routers collect them for ``load_balancing_loss_func``, exactly what
  ``OlmoeForCausalLM`` computes. Tokens/s count image and text tokens.
* **greedy generation**: batch 1, the first sample's prompt (one image), stop tokens off so
  both produce ``--new-tokens`` tokens; tokens/s count new tokens, image encoding and
  prefill included.

The model (defaults): a SigLIP-shaped tower (224 px, patch 16, width 384, 6 layers, MLP
1536, 6 heads; ``vision_feature_layer=-2``, ``"full"`` selection, as SigLIP has no CLS),
the ``mlp2x_gelu`` projector and a 2-layer OLMoE-shaped LLM (d=512, E=64, k=8,
d_ff=256, 8 heads, vocab 4096). transformers runs the experts implementation named by
``--hf-experts`` (default ``grouped_mm``, its default and fastest on CPU) and SDPA attention;
moezoo is :func:`~moezoo.convert.llava.llava_to_moezoo` of the same state dict, weights drawn
with std 0.02 (see :mod:`moezoo.bench.model`). The result holds both losses, the largest gradient
difference and whether the generated ids are identical, so a run shows that both sides computed the
same thing.
"""

from __future__ import annotations

import torch

from moezoo.bench.model import add_arguments as add_model_arguments
from moezoo.bench.model import realistic_weights_
from moezoo.bench.compare import compare_generation, compare_training
from moezoo.bench.timing import max_grad_diff, median, paired_ratio, time_interleaved
from moezoo.moe.config import DISPATCHES

FAMILIES = ("llava", "qwen3_vl_moe")
# Each family's default shape; a flag given on the command line wins.
LLAVA_DEFAULTS = {"layers": 2, "dim": 512, "heads": 8, "experts": 64, "top_k": 8, "expert_dim": 256, "vocab": 4096,
                  "batch": 4, "seq": 64, "image_size": 224, "patch_size": 16, "vision_dim": 384, "vision_layers": 6,
                  "vision_heads": 6, "vision_ffn": 1536, "new_tokens": 64}


def add_arguments(parser) -> None:
    add_model_arguments(parser)  # the LLM's shape, --batch, --seq (text tokens per sample), --repeats
    parser.add_argument("--family", choices=FAMILIES, default="llava",
                        help="llava: LlavaForConditionalGeneration (SigLIP + OLMoE-shaped LLM); qwen3_vl_moe: "
                             "Qwen3VLMoeForConditionalGeneration (default: llava)")
    parser.add_argument("--image-size", type=int)
    parser.add_argument("--patch-size", type=int)
    parser.add_argument("--vision-dim", type=int)
    parser.add_argument("--vision-layers", type=int)
    parser.add_argument("--vision-heads", type=int)
    parser.add_argument("--vision-ffn", type=int)
    parser.add_argument("--feature-layer", type=int, default=-2, help="LLaVA's vision_feature_layer")
    parser.add_argument("--new-tokens", type=int, help="generated tokens (64, as `moezoo bench generate`)")
    parser.add_argument("--train-tower", action="store_true", help="train the vision tower too (default: frozen)")
    parser.add_argument("--hf-experts", default="grouped_mm",
                        help="transformers' experts implementation (set_experts_implementation; default grouped_mm, "
                             "its fastest on CPU)")
    parser.add_argument("--moe-dispatch", default="auto", choices=DISPATCHES,
                        help="qwen3_vl_moe: moezoo's MoEConfig.dispatch (default auto, what moezoo.load gives)")
    parser.set_defaults(**{key: None for key in LLAVA_DEFAULTS})  # each family's own, filled in by run()


def family_defaults(args):
    """``args`` with every shape flag left unset taken from ``--family``'s default shape."""
    from moezoo.bench import mm_qwen3_vl

    defaults = mm_qwen3_vl.DEFAULTS if args.family == "qwen3_vl_moe" else LLAVA_DEFAULTS
    for key, value in defaults.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    return args


VISION_KEYS = ("image_size", "patch_size", "vision_dim", "vision_layers", "vision_heads", "vision_ffn",
               "feature_layer")
SHAPE_KEYS = ("layers", "dim", "heads", "experts", "top_k", "expert_dim", "vocab", "batch", "seq", "new_tokens")


def llava_pair(args, seed: int = 0):
    """``(transformers LlavaForConditionalGeneration, moezoo MultimodalMoEForCausalLM)``, same std-0.02 weights."""
    import transformers

    from moezoo.checkpoint.reader import build_model
    from moezoo.convert.llava import llava_to_moezoo, multimodal_fields
    from moezoo.models.multimodal import MultimodalConfig

    vision = transformers.SiglipVisionConfig(
        hidden_size=args.vision_dim, intermediate_size=args.vision_ffn, num_hidden_layers=args.vision_layers,
        num_attention_heads=args.vision_heads, image_size=args.image_size, patch_size=args.patch_size)
    text = transformers.OlmoeConfig(
        vocab_size=args.vocab, hidden_size=args.dim, intermediate_size=args.expert_dim, num_hidden_layers=args.layers,
        num_attention_heads=args.heads, num_key_value_heads=args.heads, num_experts=args.experts,
        num_experts_per_tok=args.top_k, max_position_embeddings=4096, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    cfg = transformers.LlavaConfig(vision_config=vision, text_config=text, image_token_index=args.vocab - 1,
                                   vision_feature_layer=args.feature_layer, vision_feature_select_strategy="full")
    torch.manual_seed(seed)
    hf = transformers.LlavaForConditionalGeneration(cfg)
    realistic_weights_(hf)
    hf.model.language_model.set_experts_implementation(getattr(args, "hf_experts", "grouped_mm"))  # the text model:
    # LlavaForConditionalGeneration itself refuses set_experts_implementation
    hf.generation_config.eos_token_id = None
    config = MultimodalConfig(**multimodal_fields(cfg.to_dict()))
    state = llava_to_moezoo({k: v.clone() for k, v in hf.state_dict().items()}, config.llm)
    return hf, build_model(config, state, "bench")


def llava_batch(args, num_image_tokens: int, image_token: int) -> dict[str, torch.Tensor]:
    """``input_ids``, ``attention_mask``, ``labels`` ``(B, T)`` and ``pixel_values (B, 3, H, W)``: per sample
    ``<s>``, the image's placeholders, then ``seq - 1`` text tokens of which the last half are labelled.

    Example:
        >>> from argparse import Namespace
        >>> batch = llava_batch(Namespace(batch=2, seq=6, image_size=32), num_image_tokens=4, image_token=63)
        >>> batch["input_ids"].shape, (batch["labels"] != -100).sum(1).tolist(), batch["pixel_values"].shape
        (torch.Size([2, 10]), [3, 3], torch.Size([2, 3, 32, 32]))
    """
    g = torch.Generator().manual_seed(0)
    text = torch.randint(3, image_token, (args.batch, args.seq - 1), generator=g)
    bos = torch.ones(args.batch, 1, dtype=torch.long)
    ids = torch.cat([bos, torch.full((args.batch, num_image_tokens), image_token), text], dim=1)
    labels = ids.masked_fill(torch.arange(ids.shape[1]) < ids.shape[1] - args.seq // 2, -100)
    pixels = torch.randn(args.batch, 3, args.image_size, args.image_size, generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels, "pixel_values": pixels}


def _set_training(hf, moe, train_tower: bool) -> None:
    """Training mode; the projector and the LLM trained, the vision towers frozen unless ``train_tower``."""
    for model in (hf, moe):
        model.train().requires_grad_(True)
    hf.model.vision_tower.requires_grad_(train_tower)
    moe.vision.vision_tower.requires_grad_(train_tower)


def _max_grad_diff(hf, moe) -> float:
    """The largest difference between the two models' gradients, moezoo's mapped to transformers' names."""
    from moezoo.convert.llava import moezoo_to_llava

    grads = {name: p.grad for name, p in moe.named_parameters() if p.grad is not None}
    return max_grad_diff(moezoo_to_llava(grads, moe.config.llm, expert_layout="fused"), hf)


def time_training(args, hf, moe, time_pair) -> dict:
    """Forward+backward of both models, interleaved; the losses and gradients are compared."""
    from transformers.models.olmoe.modeling_olmoe import load_balancing_loss_func

    _set_training(hf, moe, args.train_tower)
    batch = llava_batch(args, moe.num_tokens["image"], moe.config.image_token_id)
    router_logits: list[torch.Tensor] = []
    hooks = [layer.mlp.gate.register_forward_hook(lambda module, inputs, out: router_logits.append(out[0]))
             for layer in hf.model.language_model.layers]

    def hf_loss():
        router_logits.clear()
        out = hf(**batch)
        aux = load_balancing_loss_func(tuple(router_logits), args.experts, args.top_k, batch["attention_mask"])
        return out.loss + hf.config.text_config.router_aux_loss_coef * aux

    try:
        return compare_training(hf, moe, batch, hf_loss, _max_grad_diff,
                                time_pair)
    finally:
        for hook in hooks:
            hook.remove()


def time_generation(args, hf, moe, time_pair) -> dict:
    """Greedy decoding of ``--new-tokens`` after one image and the first sample's text, interleaved."""
    batch = llava_batch(args, moe.num_tokens["image"], moe.config.image_token_id)
    prompt = {k: batch[k][:1] for k in ("input_ids", "attention_mask", "pixel_values")}
    return compare_generation(hf, moe, prompt, args.new_tokens, time_pair)


def _summary(times: dict[str, list[float]], tokens: int) -> dict:
    rounds = [t / o for o, t in zip(times["moezoo"], times["transformers"])]
    seconds = {k: median(v) for k, v in times.items()}
    return {"seconds": seconds, "tokens_per_s": {k: tokens / v for k, v in seconds.items()},
            "moezoo_vs_transformers": paired_ratio(times["transformers"], times["moezoo"]),
            "round_ratios": rounds}


def _print(title: str, result: dict, note: str) -> None:
    print(f"  {title}")
    for name, tps in result["tokens_per_s"].items():
        print(f"    {name:<13} {tps:>10,.1f} tok/s  ({result['seconds'][name]:.3f} s)")
    rounds = result["round_ratios"]
    print(f"    moezoo / transformers: {result['moezoo_vs_transformers']:.2f}x  "
          f"(rounds {min(rounds):.2f}x-{max(rounds):.2f}x)   {note}")


def _pair_timer(repeats: int):
    """``time_pair(ours, theirs, tokens)``: both timed interleaved (one warm-up each), summarised."""
    def time_pair(ours, theirs, tokens: int) -> dict:
        return _summary(time_interleaved({"moezoo": ours, "transformers": theirs}, repeats, warmup=1), tokens)
    return time_pair


def run(args) -> dict:
    family_defaults(args)
    if args.family == "qwen3_vl_moe":
        return _run_qwen3_vl(args)
    hf, moe = llava_pair(args)
    n_image = moe.num_tokens["image"]
    time_pair = _pair_timer(args.repeats)
    train = time_training(args, hf, moe, time_pair)
    generate = time_generation(args, hf, moe, time_pair)
    tower = "trained" if args.train_tower else "frozen"
    print(f"moezoo bench mm-model: SigLIP-shaped tower ({args.image_size} px, patch {args.patch_size}, "
          f"width {args.vision_dim}, {args.vision_layers} layers, feature layer {args.feature_layer}, {tower}), "
          f"mlp2x_gelu, OLMoE-shaped LLM ({args.layers} layers, d={args.dim}, E={args.experts}, k={args.top_k}, "
          f"d_ff={args.expert_dim}), {torch.get_num_threads()} threads, median of {args.repeats}")
    return _report(args, train, generate, n_image, "llava")


def _run_qwen3_vl(args) -> dict:
    from moezoo.bench import mm_qwen3_vl

    hf, moe = mm_qwen3_vl.qwen3_vl_pair(args)
    time_pair = _pair_timer(args.repeats)
    train = mm_qwen3_vl.time_training(args, hf, moe, time_pair)
    generate = mm_qwen3_vl.time_generation(args, hf, moe, time_pair)
    print(f"moezoo bench mm-model --family qwen3_vl_moe: {mm_qwen3_vl.describe(args)}, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}")
    return _report(args, train, generate, mm_qwen3_vl.image_tokens(args), "qwen3_vl_moe")


def _report(args, train: dict, generate: dict, n_image: int, family: str) -> dict:
    loss = train["loss"]
    _print(f"forward+backward, batch {args.batch} x ({n_image} image + {args.seq} text tokens):", train,
           f"loss {loss['moezoo']:.6f} / {loss['transformers']:.6f}, max grad diff {train['max_grad_diff']:.1e}")
    _print(f"greedy generation, batch 1, 1 image + {args.seq} text tokens, {args.new_tokens} new tokens:", generate,
           f"identical ids: {generate['identical_ids']}")
    keys = SHAPE_KEYS + VISION_KEYS if family == "llava" else SHAPE_KEYS + VISION_KEYS[:-1]
    return {"family": family, "shape": {k: getattr(args, k) for k in keys}, "image_tokens": n_image,
            "train_tower": args.train_tower, "hf_experts": args.hf_experts, "moe_dispatch": args.moe_dispatch,
            "threads": torch.get_num_threads(),
            "forward_backward": train, "generate": generate}
