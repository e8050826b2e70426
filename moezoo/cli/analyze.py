"""``moezoo analyze MODEL --task T --out DIR [--position answer|all] [--limit N] [--ablate [MODE]] [--compare B]``.

Runs a model (a pretrained name or a checkpoint dir, as ``moezoo eval`` takes) over a shipped task
and writes its expert analysis (:mod:`moezoo.analysis.report`): ``DIR/report.json``, the figures as
PNGs, and ``DIR/report.html``, one self-contained page. ``--ablate`` also ablates every expert of
every MoE site in turn (``drop`` unless a mode is given) and ranks them by the change in the task
metric; ``--compare B`` analyses model B on the same task and puts it beside the first.
"""

from __future__ import annotations

import argparse
import sys

# moezoo.analysis.ablation.ABLATION_MODES and moezoo.analysis.records.POSITIONS, spelled out so that
# `moezoo --help` imports no torch (a test checks they agree).
ABLATION_MODES = ("reroute", "drop", "zero")
POSITIONS = ("answer", "all")


def register(sub) -> None:
    parser = sub.add_parser("analyze", help="analyse the experts of a model on a task (report.json, figures, HTML)",
                            description="Run a model dir or pretrained name over a shipped task and write its "
                            "expert analysis: DIR/report.json, PNG figures and a self-contained DIR/report.html.")
    parser.add_argument("model", help="a moezoo or transformers checkpoint dir, or a pretrained name")
    parser.add_argument("--task", required=True, help="a shipped task (moezoo eval --list)")
    parser.add_argument("--out", required=True, metavar="DIR", help="where report.json, the figures and "
                        "report.html go")
    parser.add_argument("--position", choices=POSITIONS,
                        help="LLM positions the statistics count: 'answer' (the position predicting the first "
                        "answer token; the default) or 'all' (the default for perplexity tasks)")
    parser.add_argument("--limit", type=int, help="the first N examples")
    parser.add_argument("--ablate", nargs="?", const="drop", choices=ABLATION_MODES, metavar="MODE",
                        help=f"also ablate each expert in turn; MODE one of {', '.join(ABLATION_MODES)} "
                        "(default drop)")
    parser.add_argument("--compare", metavar="B", help="a second model, analysed on the same task beside the first")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quiet", action="store_true", help="print only where the report went")
    parser.set_defaults(func=_analyze)


def _analyze(args: argparse.Namespace) -> int:
    from moezoo.eval.tasks import TASKS

    if args.task not in TASKS:  # fail before any model loads
        import difflib

        close = difflib.get_close_matches(args.task, list(TASKS), n=3)
        hint = f" (closest: {', '.join(close)})" if close else ""
        raise ValueError(f"unknown task {args.task!r}{hint}; moezoo analyze runs the shipped tasks: "
                         f"{', '.join(TASKS)}")
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit {args.limit}: give a positive number of examples")
    import moezoo
    from moezoo.analysis.report import analyze, write_report

    def say(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    # Both models load first: a wrong name for B fails before A's analysis runs.
    models = {name: moezoo.load(name, device=args.device) for name in (args.model, args.compare) if name}
    reports = [analyze(model, args.task, name=name, position=args.position, limit=args.limit,
                       batch_size=args.batch_size, ablate_mode=args.ablate, progress=say)
               for name, model in models.items()]
    report = reports[0]
    if args.compare:
        report["compare"] = reports[1]
    written = write_report(report, args.out)
    for entry in report["layers"]:
        say(f"  {entry['site']}: gate entropy {_f(entry['gate_entropy'])}, load entropy "
            f"{_f(entry['load_entropy'])}, never activated {len(entry['never_activated'])}/{entry['num_experts']}")
    print(f"wrote {written['report.json']} and {written['report.html']}")
    return 0


def _f(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"
