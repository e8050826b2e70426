"""``moezoo demo [NAME] [--port P]``: the Gradio page of :mod:`moezoo.demo` on 127.0.0.1.

The name is checked before anything heavy is imported, so a typo is answered at once with the closest
names. Gradio is an optional extra; without it the command says how to install it.
"""

from __future__ import annotations

import argparse
import sys

from moezoo.demo import FLAGSHIP, INSTALL_HINT


def register(sub) -> None:
    parser = sub.add_parser("demo", help="a web page (Gradio, on 127.0.0.1) that answers with a zoo model and "
                            "shows its experts at work",
                            description="Serve a page on 127.0.0.1 where you pick a zoo model, give it an image "
                            "(and audio, for a model that hears), ask a question and see the answer, the experts "
                            "that handled each token layer by layer, and the model card. Needs the [demo] extra: "
                            f"{INSTALL_HINT}.")
    parser.add_argument("name", nargs="?", default=FLAGSHIP,
                        help=f"the model selected when the page opens: a pretrained name or a checkpoint dir "
                        f"(default {FLAGSHIP})")
    parser.add_argument("--port", type=int, default=7860, help="the port on 127.0.0.1 (default 7860)")
    parser.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from moezoo.demo.session import check_model

    check_model(args.name)
    if not 0 < args.port < 65536:
        raise ValueError(f"--port {args.port}: expected a port number between 1 and 65535")
    try:
        import gradio  # noqa: F401  (the optional extra; moezoo.demo.app imports it)
    except ImportError:
        print(f"moezoo demo: error: the demo needs Gradio, an optional extra: {INSTALL_HINT}", file=sys.stderr)
        return 2
    from moezoo.demo.app import launch

    print(f"moezoo demo: serving {args.name} on http://127.0.0.1:{args.port} (Ctrl+C stops it)", flush=True)
    launch(args.name, args.port)
    return 0
