"""``moezoo zoo train | publish | verify | table``: the shipped model zoo's tooling.

``moezoo zoo train configs/zoo/NAME.yaml [MORE.yaml ...] [--notes TEXT]`` trains (or resumes) a recipe (or its
stages, in order), timed, and writes its run's ``FACTS.json`` for ``publish --train-facts`` (:mod:`moezoo.zoo.runs`).

``moezoo zoo publish MODEL_DIR --name ARCH.TAG --tasks T1,T2 [--config CONFIG] [--limit N] [--bf16]
[--new-revision] [--train-facts FACTS.json] [--license ID] [--description TEXT] [--root DIR]``
copies a trained model into ``checkpoints/ARCH.TAG/``, evaluates the stored bytes, and writes the card
and the manifest; then the README's zoo table is regenerated when the repository's README is there.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub) -> None:
    zoo = sub.add_parser("zoo", help="publish and verify the shipped pretrained models")
    cmds = zoo.add_subparsers(dest="zoo_command", required=True, metavar="ZOO_COMMAND")
    train = cmds.add_parser("train", help="train or resume a zoo recipe, timed; write its FACTS.json for publish")
    train.add_argument("config", nargs="+", help="the recipe, e.g. configs/zoo/digits_vqa.yaml (several: its stages, "
                                                 "in order; the facts are the last one's)")
    train.add_argument("--notes", help="a paragraph for the card (e.g. a stated shortfall)")
    train.set_defaults(func=_train)
    pub = cmds.add_parser("publish", help="a trained model dir -> checkpoints/ARCH.TAG (evaluated, with its card)")
    pub.add_argument("model_dir", help="the trained model (what moezoo fit exports, e.g. runs/quickstart/model)")
    pub.add_argument("--name", required=True, help="ARCH.TAG, e.g. film_cnn_moe_small.quickstart")
    pub.add_argument("--tasks", required=True, help="comma-separated moezoo eval tasks for the card")
    pub.add_argument("--config", help="the training config, e.g. configs/zoo/NAME.yaml")
    pub.add_argument("--limit", type=int, help="evaluate the first N questions of each task (recorded)")
    pub.add_argument("--bf16", action="store_true", help="store the weights in bfloat16 (loaded in fp32)")
    pub.add_argument("--new-revision", action="store_true", help="replace a published model with other bytes")
    pub.add_argument("--train-facts", metavar="JSON", help="seed, steps, wall_time_s, final_train_loss, seeds, ...")
    pub.add_argument("--license", default="apache-2.0", help="the weights' licence (Hub id)")
    pub.add_argument("--description", default="", help="one line for the card and moezoo list")
    pub.add_argument("--root", help="the checkpoints folder (default: the package's, or $MOEZOO_CHECKPOINTS)")
    pub.add_argument("--batch-size", type=int, default=32)
    pub.set_defaults(func=_publish)
    ver = cmds.add_parser("verify", help="re-measure shipped models' cards with moezoo eval")
    ver.add_argument("names", nargs="*", help="shipped names (default: all)")
    ver.set_defaults(func=_verify)
    tab = cmds.add_parser("table", help="print the README's zoo table (--write updates README.md)")
    tab.add_argument("--write", metavar="README", help="rewrite the table between the markers in this file")
    tab.set_defaults(func=_table)


def _train(args: argparse.Namespace) -> int:
    from moezoo.zoo.runs import recipe_run_dir, train_recipe

    facts = train_recipe(args.config, notes=args.notes)
    print(f"wrote {facts}; publish it with:\n  moezoo zoo publish {recipe_run_dir(args.config[-1]) / 'model'} "
          f"--name ARCH.TAG --config {args.config[-1]} --tasks TASKS --bf16 --train-facts {facts}")
    return 0


def _publish(args: argparse.Namespace) -> int:
    from moezoo.shipped import checkpoints_root
    from moezoo.zoo.publish import publish
    from moezoo.zoo.results import headline

    cfg = publish(args.model_dir, args.name, args.tasks.split(","), config=args.config, limit=args.limit,
                  bf16=args.bf16, new_revision=args.new_revision, train_facts=args.train_facts,
                  license=args.license, description=args.description, root=args.root,
                  batch_size=args.batch_size, progress=True)
    root = (Path(args.root) if args.root else checkpoints_root()).resolve()  # the real folder, not the package's link
    size = sum(f.size or 0 for f in cfg.files)
    top = headline(cfg)
    print(f"published {cfg.name} revision {cfg.revision} in {root / cfg.location} ({size / 1e6:.2f} MB)"
          + (f": {top[0]} {top[1]} {top[2]:.4f}" if top else ""))
    readme = root.parent / "README.md"
    if args.root is None and readme.is_file():
        from moezoo.zoo.table import START, write_readme_table

        if START in readme.read_text() and write_readme_table(readme):
            print(f"updated the zoo table in {readme}")
    print(f"commit it: git add {root / cfg.location}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from moezoo.registry.pretrained import pretrained_entries
    from moezoo.zoo.verify import verify_model

    names = args.names or [n for n, c in pretrained_entries().items() if c.source == "shipped"]
    if not names:
        print("no shipped models")
        return 0
    failed = 0
    for name in names:
        checks = verify_model(name)
        failed += sum(not c.ok for c in checks)
        print(f"{name}:\n" + "\n".join(f"  {c}" for c in checks))
    return 1 if failed else 0


def _table(args: argparse.Namespace) -> int:
    from moezoo.zoo.table import write_readme_table, zoo_table

    if args.write:
        print(f"{args.write}: {'updated' if write_readme_table(args.write) else 'already current'}")
    else:
        print(zoo_table())
    return 0
