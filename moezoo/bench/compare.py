"""The two sides of ``moezoo bench mm-model``, moezoo's model and transformers' on the same weights: timed
through the family's ``time_pair`` and checked for computing the same thing (loss, gradients, greedy ids).
Every multimodal family of the benchmark (:mod:`moezoo.bench.mm_model`, :mod:`moezoo.bench.mm_qwen3_vl`)
times through these two functions."""

from __future__ import annotations

import torch


def compare_training(hf, moe, batch: dict, hf_loss, grad_diff, time_pair) -> dict:
    """Forward+backward of moezoo's ``moe`` and transformers' ``hf`` on ``batch``, timed interleaved by
    ``time_pair``: moezoo's loss is its own (LM + weighted aux loss, in training), transformers' is
    ``hf_loss()`` (its LM loss plus the same aux term, computed as the family's model computes it);
    the losses, ``grad_diff(hf, moe)`` (the largest gradient difference) and the trained parameter
    counts go in the result."""
    losses: dict[str, float] = {}

    def step(name, model, loss_fn):
        def run():
            model.zero_grad(set_to_none=True)
            loss = loss_fn()
            loss.backward()
            losses[name] = loss.item()
        return run

    result = time_pair(step("moezoo", moe, lambda: moe(**batch).loss), step("transformers", hf, hf_loss),
                       batch["input_ids"].numel())
    result["loss"] = losses
    result["max_grad_diff"] = grad_diff(hf, moe)
    result["trained_params"] = {name: sum(p.numel() for p in m.parameters() if p.requires_grad)
                                for name, m in (("moezoo", moe), ("transformers", hf))}
    for model in (hf, moe):
        model.zero_grad(set_to_none=True)
    return result


def compare_generation(hf, moe, prompt: dict, new_tokens: int, time_pair) -> dict:
    """Greedy decoding of ``new_tokens`` after ``prompt`` by both models (eval mode), timed interleaved;
    whether they generated the same ids goes in the result."""
    for model in (hf, moe):
        model.eval()

    def ours():
        return moe.generate(**prompt, max_new_tokens=new_tokens, eos_token_id=[])

    def theirs():
        with torch.inference_mode():
            return hf.generate(**prompt, max_new_tokens=new_tokens, do_sample=False, pad_token_id=0)

    same = torch.equal(ours(), theirs())
    result = time_pair(ours, theirs, new_tokens)
    result["identical_ids"] = same
    return result
