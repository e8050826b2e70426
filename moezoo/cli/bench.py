"""``moezoo bench NAME [--json OUT]``: run a benchmark, print it, optionally save JSON."""

from __future__ import annotations

import importlib
import json

from moezoo.bench import BENCHMARKS


def register(sub) -> None:
    parser = sub.add_parser("bench", help="run a speed / memory benchmark")
    names = parser.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    for name, module in BENCHMARKS.items():
        bench = importlib.import_module(module)
        p = names.add_parser(name, help=(bench.__doc__ or "").strip().splitlines()[0])
        p.add_argument("--json", metavar="OUT", help="also write the results as JSON to OUT")
        bench.add_arguments(p)
        p.set_defaults(func=_run, module=module)


def _run(args) -> int:
    from moezoo.utils.io import atomic_write_text

    results = importlib.import_module(args.module).run(args)
    if args.json:
        atomic_write_text(args.json, json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0
