"""``moezoo chat MODEL [--image PATH] [--audio PATH] [--video PATH] "prompt"``: one answer, from the shell.

The prompt becomes one user turn of the model's chat template; each media file gets
its placeholder in front of the prompt unless the prompt already places them. The
answer is generated greedily unless ``--temperature`` is set. The turn is built and answered by
:mod:`moezoo.eval.chat`, which ``moezoo demo`` shares, so both give the same answer.
"""

from __future__ import annotations

import argparse


def register(sub) -> None:
    parser = sub.add_parser("chat", help="answer a prompt (with images / audio / video) with a model",
                            description="Answer one prompt with a model dir or a pretrained name, using its chat "
                            "template. Media files get their placeholder in front of the prompt unless the prompt "
                            "already holds them (<image>, <audio>, <video>).")
    parser.add_argument("model", help="a moezoo or transformers checkpoint dir, or a pretrained name")
    parser.add_argument("prompt")
    parser.add_argument("--image", action="append", default=[], metavar="PATH", help="an image file (repeatable)")
    parser.add_argument("--audio", action="append", default=[], metavar="PATH", help="an audio file (repeatable)")
    parser.add_argument("--video", action="append", default=[], metavar="PATH", help="a video file (repeatable)")
    parser.add_argument("--system", help="a system prompt")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.0, help="0: greedy (default); > 0: sample")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    parser.set_defaults(func=_chat)


def _chat(args: argparse.Namespace) -> int:
    import moezoo
    from moezoo.eval.chat import reply

    model = moezoo.load(args.model)
    answer = reply(model, args.prompt, args.image, args.audio, args.video, args.system,
                   max_new_tokens=args.max_new_tokens, temperature=args.temperature, seed=args.seed)
    print(answer.text)
    return 0
