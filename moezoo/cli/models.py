"""``moezoo list [PATTERN]`` and ``moezoo info NAME``: the registered architectures.

``info`` builds the architecture on the meta device (no memory, no weights), so even
the real-size reference architectures answer instantly.
"""

from __future__ import annotations

import argparse


def register(sub) -> None:
    lister = sub.add_parser("list", help="list registered architectures (or pretrained models)")
    lister.add_argument("pattern", nargs="?", default="*", help="shell wildcards, e.g. '*tiny*'")
    lister.add_argument("--pretrained", action="store_true", help="list the names that have weights")
    lister.set_defaults(func=_list)
    info = sub.add_parser("info", help="describe a registered architecture")
    info.add_argument("name")
    info.set_defaults(func=_info)


def _list(args: argparse.Namespace) -> int:
    import moezoo

    names = moezoo.list_models(args.pattern, pretrained=args.pretrained)
    print("\n".join(names) if names else f"no {'pretrained models' if args.pretrained else 'architectures'} "
          f"match {args.pattern!r}")
    return 0


def describe(name: str) -> dict:
    """Facts about architecture ``name``: class, parameters (total and active per token), modalities, MoE sites."""
    import moezoo
    from moezoo.registry import model_config

    config = model_config(name)
    model = moezoo.create_model(name, device="meta")
    llm = model.spec.language_config(config)
    total = sum(p.numel() for p in model.parameters())
    moe = llm.moe
    # The LLM's routed experts: each token uses top_k of num_experts of them.
    experts = sum(p.numel() for n, p in model.named_parameters() if ".mlp.experts." in n)
    active = total - experts + (experts * moe.top_k // moe.num_experts if moe is not None else 0)
    facts = {"name": name, "architecture": model.spec.name, "parameters": total,
             "active_parameters_per_token": active, "llm_layers": llm.num_layers, "llm_dim": llm.dim,
             "moe_layers": llm.sparse_layers(), "vocab_size": llm.vocab_size,
             "context": llm.max_position_embeddings}
    if moe is not None:
        facts.update(num_experts=moe.num_experts, top_k=moe.top_k, router=moe.router)
    if model.encoders():  # a multimodal model: what each input becomes
        facts["tokens_per_input"] = dict(model.num_tokens)
        facts["encoders"] = {name: type(encoder).__name__ for name, encoder in model.encoders().items()}
        facts["connectors"] = {m: model.connector_for(m).__class__.__name__ for m in model.num_tokens}
    facts["moe_sites"] = len(model.moe_sites())
    return facts


def _info(args: argparse.Namespace) -> int:
    for key, value in describe(args.name).items():
        print(f"{key:<28} {value:,}" if isinstance(value, int) else f"{key:<28} {value}")
    return 0
