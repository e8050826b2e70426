"""``moezoo list [PATTERN] [--pretrained]`` and ``moezoo info NAME``: architectures and pretrained models.

``info`` on an architecture builds it on the meta device (no memory, no weights), so even
the real-size reference architectures answer instantly. On a pretrained name it shows the
card's facts from the registry entry (nothing is loaded): parameters, experts, router,
metrics, licence and files for a shipped model; for a hub entry also the download size, the
memory it needs and whether that fits this machine.
"""

from __future__ import annotations

import argparse


def register(sub) -> None:
    lister = sub.add_parser("list", help="list registered architectures (or pretrained models)")
    lister.add_argument("pattern", nargs="?", default="*", help="shell wildcards, e.g. '*tiny*'")
    lister.add_argument("--pretrained", action="store_true", help="list the names that have weights")
    lister.set_defaults(func=_list)
    info = sub.add_parser("info", help="describe a registered architecture or pretrained model")
    info.add_argument("name")
    info.set_defaults(func=_info)


def _list(args: argparse.Namespace) -> int:
    import moezoo

    if args.pretrained:
        return _list_pretrained(args.pattern)
    names = moezoo.list_models(args.pattern)
    print("\n".join(names) if names else f"no architectures match {args.pattern!r}")
    return 0


def _list_pretrained(pattern: str) -> int:
    import fnmatch

    from moezoo.registry.pretrained import pretrained_entries
    from moezoo.zoo.results import headline
    from moezoo.zoo.table import human_count

    entries = [c for n, c in sorted(pretrained_entries().items()) if fnmatch.fnmatchcase(n, pattern)]
    if not entries:
        print(f"no pretrained models match {pattern!r}")
        return 0
    rows = [("name", "source", "modalities", "params", "headline")]
    for cfg in sorted(entries, key=lambda c: (c.source != "shipped", c.name)):
        top = headline(cfg)
        rows.append((cfg.name, cfg.source, ",".join(cfg.modalities), human_count(cfg.params_total),
                     f"{top[0]} {top[1]} {top[2]:.3f}" if top else "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    print("\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows))
    return 0


def describe(name: str) -> dict:
    """Facts about architecture ``name``: class, parameters (total and active per token), modalities, MoE sites."""
    import moezoo
    from moezoo.zoo.facts import model_facts

    return {"name": name, **model_facts(moezoo.create_model(name, device="meta"))}


def _print_facts(facts: dict) -> None:
    for key, value in facts.items():
        print(f"{key:<28} {value:,}" if isinstance(value, int) else f"{key:<28} {value}")


def _info(args: argparse.Namespace) -> int:
    from moezoo.registry.core import split_name
    from moezoo.registry.pretrained import pretrained_entries

    entries = pretrained_entries()
    if args.name in entries or split_name(args.name)[1]:
        from moezoo.registry.pretrained import pretrained_cfg
        from moezoo.zoo.info import pretrained_facts

        _print_facts(pretrained_facts(pretrained_cfg(args.name)))
        return 0
    _print_facts(describe(args.name))
    return 0
