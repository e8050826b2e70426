"""``moezoo eval MODEL --tasks T1,T2 [--include-path DIR] [--limit N] [--batch-size B] [--json OUT]``.

MODEL is a checkpoint dir (moezoo or transformers) or a pretrained name. Tasks are the
shipped ones (``moezoo eval --list``) or any lm-evaluation-harness task; ``--include-path``
adds a folder of the user's own lm-eval task YAMLs. The results print as a table (VQA tasks
also per question type, beside the majority-answer baseline and, with ``--blank-images``,
the accuracy on blank images) and ``--json`` writes
``{"model": MODEL, "results": {TASK: {METRIC: value}}}``.
"""

from __future__ import annotations

import argparse


def register(sub) -> None:
    parser = sub.add_parser("eval", help="evaluate a model on VQA and language tasks (shipped or lm-eval)",
                            description="Evaluate a model dir or pretrained name on the shipped tasks (see --list) "
                            "or any lm-evaluation-harness task.")
    parser.add_argument("model", nargs="?", help="a moezoo or transformers checkpoint dir, or a pretrained name")
    parser.add_argument("--tasks", help="comma-separated task names")
    parser.add_argument("--include-path", metavar="DIR", help="a folder of your own lm-eval task YAMLs")
    parser.add_argument("--limit", type=int, help="at most N samples per task")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-fewshot", type=int, help="lm-eval tasks: few-shot examples (task default if unset)")
    parser.add_argument("--blank-images", action="store_true",
                        help="VQA tasks: also answer with every image blanked (the grounding check)")
    parser.add_argument("--json", metavar="OUT", help="write the results JSON here")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--list", action="store_true", help="list the shipped tasks (and those under --include-path)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=_eval)


def _list(include_path: str | None) -> None:
    from moezoo.eval.tasks import TASKS

    width = max(map(len, TASKS))
    print("shipped tasks:")
    for name, task in TASKS.items():
        print(f"  {name:{width}}  {task.description}")
    if include_path:
        from moezoo.eval.runner import local_task_names

        print(f"lm-eval tasks under {include_path}:")
        for name in local_task_names(include_path):
            print(f"  {name}")
    print("and any lm-evaluation-harness task (pip install 'moezoo[eval]'; `lm_eval ls tasks` lists them)")


def _eval(args: argparse.Namespace) -> int:
    if args.list:
        _list(args.include_path)
        return 0
    if not args.model or not args.tasks:
        raise ValueError("give a MODEL and --tasks T1,T2 (or --list to see the tasks)")
    from moezoo.eval.runner import evaluate, split_tasks

    tasks = args.tasks.split(",")
    split_tasks(tasks, args.include_path)  # unknown names fail before the model loads
    import moezoo

    model = moezoo.load(args.model, device=args.device)
    report = evaluate(model, tasks, name=args.model, limit=args.limit, batch_size=args.batch_size,
                      include_path=args.include_path, blank_images=args.blank_images,
                      progress=not args.no_progress, num_fewshot=args.num_fewshot)
    print(report.summary())
    print("\n" + ", ".join(f"{task} {seconds:.1f} s" for task, seconds in report.seconds.items()))
    if args.json:
        print(f"wrote {report.save(args.json)}")
    return 0
