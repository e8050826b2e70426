"""``moezoo chat MODEL [--image PATH] [--audio PATH] [--video PATH] "prompt"``: one answer, from the shell.

The prompt becomes one user turn of the model's chat template; each media file gets
its placeholder in front of the prompt unless the prompt already places them. The
answer is generated greedily unless ``--temperature`` is set.
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


def build_inputs(model, prompt: str, images: list[str], audios: list[str], videos: list[str],
                 system: str | None = None) -> dict:
    """The model's inputs for one user turn holding ``prompt`` and the media files, tokenised as training
    tokenises (:func:`~moezoo.processing.chat.adds_special_tokens`)."""
    from pathlib import Path

    from moezoo.processing.chat import adds_special_tokens

    for path in (*images, *audios, *videos):
        if not Path(path).is_file():
            raise FileNotFoundError(f"no such file: {path}")
    processor = model.processor
    if processor is None:
        if images or audios or videos:
            raise ValueError(f"{type(model).__name__} is a text model: it takes no images, audio or video")
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        tok = model.tokenizer
        if not getattr(tok, "chat_template", None):
            return dict(tok(prompt, return_tensors="pt"))
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return dict(tok(text, return_tensors="pt", add_special_tokens=adds_special_tokens(tok, text)))
    media = {"image": images, "audio": audios, "video": videos}
    prefix = "".join(f"{processor.placeholders[m]}\n" * len(files) for m, files in media.items()
                     if files and processor.placeholders.get(m, "\0") not in prompt)
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": prefix + prompt}]
    text = processor.apply_chat_template(messages)
    return processor(text=text, images=_images(images) or None, audios=audios or None, videos=videos or None,
                     add_special_tokens=processor.adds_special_tokens(text))


def _images(paths: list[str]) -> list:
    from moezoo.processing.image import load_image  # the loader training uses: transparency onto white

    return [load_image(path) for path in paths]


def _chat(args: argparse.Namespace) -> int:
    import torch

    import moezoo

    model = moezoo.load(args.model)
    inputs = build_inputs(model, args.prompt, args.image, args.audio, args.video, args.system)
    sampling = dict(do_sample=True, temperature=args.temperature,
                    generator=torch.Generator().manual_seed(args.seed)) if args.temperature > 0 else {}
    ids = model.generate(**inputs, max_new_tokens=args.max_new_tokens, **sampling)
    new = ids[0, inputs["input_ids"].shape[1]:]
    print(model.tokenizer.decode(new, skip_special_tokens=True).strip())
    return 0
