"""Learnability probe: how fast a design learns one shapes-VQA question type (issue H's position search).

``moezoo bench probe --question-type position --vision '{"token_positions": true}'`` builds a model
(an architecture plus overrides), trains it with a plain AdamW loop on that question type alone
(``--n-train`` scenes drawn afresh, worded as the builder words training questions: the training
phrasing table, ``TEMPLATE_SHARE`` of them the template), and every ``--eval-every`` steps scores
``--n-eval`` held-out scenes three ways: asked in the template, asked with the held-out typed
phrasings (those ``shapes_vqa_typed`` uses), and the first training questions again. The score is
the answer chosen among the type's answers by the logit of each answer's first token at the answer
position: no generation, so a probe costs a few minutes on one CPU thread.

A full recipe mixes five types and 3,000 steps; the probe isolates one type, so a design that cannot
learn it here will not learn it in the mix. What it measured is in the README's table of what was tried.

Example:
    >>> answers_of("position")
    ('left', 'right', 'above', 'below')
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from typing import Any

import torch

ANSWERS = {"position": ("left", "right", "above", "below"), "exists": ("yes", "no")}


def answers_of(qtype: str) -> tuple[str, ...]:
    """The closed answer set the probe chooses among (position and exists; the others are open)."""
    if qtype not in ANSWERS:
        raise ValueError(f"the probe scores closed-answer types: {sorted(ANSWERS)}; got {qtype!r}")
    return ANSWERS[qtype]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arch", default="film_cnn_moe_small", help="the architecture (default: the quickstart's)")
    parser.add_argument("--init", metavar="MODEL", help="start from a trained model (a name or a directory: "
                                                        "moezoo.load) instead of --arch and its overrides")
    parser.add_argument("--vision", default="{}", help="JSON overrides of the vision encoder's config")
    parser.add_argument("--llm", default="{}", help="JSON overrides of the LLM's config")
    parser.add_argument("--connector", default="{}", help="JSON overrides of the image connector's config")
    parser.add_argument("--overrides", default="{}",
                        help='JSON overrides of the model config\'s own fields, e.g. {"modality_attention": "prefix"}')
    parser.add_argument("--question-type", default="position", choices=sorted(ANSWERS))
    parser.add_argument("--n-train", type=int, default=8000, help="training questions (default: 8000)")
    parser.add_argument("--template-share", type=float, default=None,
                        help="the share of training questions in the template's words (default: the builder's; "
                             "1: all, the instruction's place and the casing still vary)")
    parser.add_argument("--centre-share", type=float, default=0.0,
                        help="position: the share of training questions asking where one object is relative to the "
                             "image's middle (the held-out questions always relate two objects)")
    parser.add_argument("--n-eval", type=int, default=400, help="held-out questions per wording (default: 400)")
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--eval-every", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    parser.add_argument("--seed", type=int, default=0)


MIDDLE = "middle of the image"  # the reference of --centre-share's questions ("relative to the middle of the image")


def _questions(qtype: str, n: int, seed: int, centre_share: float = 0.0) -> list[tuple[dict, Any]]:
    from moezoo.data.phrasing import Posed
    from moezoo.data.scenes import pose, random_scene, relative_position

    rng, out = random.Random(seed), []
    while len(out) < n:
        scene = random_scene(rng, 64)
        if qtype == "position" and rng.random() < centre_share:  # one object, placed against the image's middle
            obj = rng.choice(scene["objects"])
            answer = relative_position(obj, {"x": scene["width"] // 2, "y": scene["height"] // 2})
            posed = answer and Posed("position", {"a": f"{obj['color']} {obj['shape']}", "b": MIDDLE}, answer)
        else:
            posed = pose(scene, qtype, rng)
        if posed is not None:
            out.append((scene, posed))
    return out


def probe_data(model, qtype: str, n_train: int, n_eval: int, seed: int = 0,
               template_share: float | None = None, centre_share: float = 0.0) -> dict[str, list]:
    """``{"train", "template", "typed"}``: encoded samples (train: the builder's training wording, with
    ``template_share`` of them in the template: the builder's ``TEMPLATE_SHARE`` by default; ``centre_share``
    of the position questions relate one object to the image's middle)."""
    from moezoo.data.phrasing import TEMPLATE_SHARE, template_wording, typed_wording
    from moezoo.data.pipeline import ProcessedSample
    from moezoo.data.scenes import TRAIN_PHRASINGS, TYPED_PHRASINGS, draw_scene
    from moezoo.data.vqa import conversation

    def encode(scene, prompt, answer):
        enc = model.processor.encode_example(conversation(prompt, answer), images=[draw_scene(scene)],
                                             return_tensors=None)
        return ProcessedSample("probe", enc["input_ids"], enc["labels"], {"pixel_values": enc["pixel_values"]})

    words, share = random.Random(seed + 7), TEMPLATE_SHARE if template_share is None else template_share
    train = [encode(s, typed_wording(p, TRAIN_PHRASINGS, words, template_share=share).prompt, p.answer)
             for s, p in _questions(qtype, n_train, seed + 1, centre_share)]
    held = _questions(qtype, n_eval, seed + 12345)
    typed = random.Random(seed + 3)
    return {"train": train,
            "template": [encode(s, template_wording(p, TRAIN_PHRASINGS).prompt, p.answer) for s, p in held],
            "typed": [encode(s, typed_wording(p, TYPED_PHRASINGS, typed).prompt, p.answer) for s, p in held]}


def _first_label(sample) -> int:
    return next(i for i, label in enumerate(sample.labels) if label != -100)


@torch.no_grad()
def closed_accuracy(model, samples: list, candidates: torch.Tensor, batch_size: int = 100) -> float:
    """The share of ``samples`` whose answer's first token scores highest among ``candidates`` (token ids)."""
    from moezoo.train.datamodule import pad_collate

    was_training, right = model.training, 0
    model.eval()
    for i in range(0, len(samples), batch_size):
        chunk = samples[i:i + batch_size]
        batch = pad_collate(chunk, 0)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       pixel_values=batch["pixel_values"]).logits
        for row, sample in enumerate(chunk):
            at = _first_label(sample)
            pick = candidates[logits[row, at - 1, candidates].argmax()]
            right += int(pick) == sample.labels[at]
    model.train(was_training)
    return right / len(samples)


def train_probe(model, data: dict[str, list], candidates: torch.Tensor, steps: int, batch_size: int = 64,
                lr: float = 1e-3, eval_every: int = 200, seed: int = 0, n_eval: int | None = None,
                log=print) -> list[dict[str, Any]]:
    """AdamW (weight decay 0.01), 50 warm-up steps, cosine to 5% of ``lr``; returns the evaluations."""
    from moezoo.train.datamodule import pad_collate
    from moezoo.train.module import model_inputs

    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    warm = 50

    def factor(step: int) -> float:
        return min(1.0, (step + 1) / warm) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    rng, losses, history, start = random.Random(seed), [], [], time.perf_counter()
    seen = data["train"][:n_eval or len(data["typed"])]
    evals = {"template": data["template"], "typed": data["typed"], "train": seen}
    model.train()
    for step in range(1, steps + 1):
        batch = pad_collate(rng.sample(data["train"], batch_size), 0)
        out = model(**model_inputs(batch), labelled_logits=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(out.lm_loss.detach()))
        if step % eval_every == 0 or step == steps:
            row = {"step": step, "lm_loss": sum(losses[-50:]) / len(losses[-50:]),
                   **{k: closed_accuracy(model, v, candidates) for k, v in evals.items()},
                   "seconds": time.perf_counter() - start}
            history.append(row)
            log(f"step {step:5d}  lm loss {row['lm_loss']:.3f}  template {row['template']:.3f}  "
                f"typed {row['typed']:.3f}  train {row['train']:.3f}  ({row['seconds']:.0f} s)")
    return history


def run(args: argparse.Namespace) -> dict[str, Any]:
    import moezoo

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    overrides = {k: v for k, v in (("vision", json.loads(args.vision)), ("llm", json.loads(args.llm)),
                                   ("image_connector", json.loads(args.connector))) if v}
    overrides.update(json.loads(args.overrides))
    if args.init and overrides:
        raise ValueError("--init loads a trained model as it is: drop --vision / --llm / --connector / --overrides")
    model = moezoo.load(args.init) if args.init else moezoo.create_model(args.arch, **overrides)
    arch = f"{model.spec.name} from {args.init}" if args.init else args.arch
    data = probe_data(model, args.question_type, args.n_train, args.n_eval, args.seed, args.template_share,
                      args.centre_share)
    firsts = {}
    for sample in data["train"]:
        at = _first_label(sample)
        firsts.setdefault(model.processor.decode([sample.labels[at]]).strip(), sample.labels[at])
    answers = answers_of(args.question_type)
    missing = [a for a in answers if a not in firsts]
    if missing:
        raise RuntimeError(f"no training question answers {missing}: raise --n-train")
    candidates = torch.tensor([firsts[a] for a in answers])
    params = sum(p.numel() for p in model.parameters())
    print(f"probe: {arch} {overrides or ''} ({params:,} parameters), {args.question_type} questions only, "
          f"{args.n_train} to train on, {args.n_eval} held out; chance {1 / len(answers):.2f}")
    history = train_probe(model, data, candidates, args.steps, args.batch_size, args.lr, args.eval_every,
                          args.seed, args.n_eval)
    return {"arch": args.arch, "init": args.init and str(args.init), "overrides": overrides,
            "question_type": args.question_type, "parameters": params, "template_share": args.template_share,
            "centre_share": args.centre_share, "n_train": args.n_train, "n_eval": args.n_eval,
            "batch_size": args.batch_size, "lr": args.lr, "history": history}
