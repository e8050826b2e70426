"""The lm-eval adapter: local tasks offline, moezoo's own scoring, and parity with lm-eval's `hf` model."""

from __future__ import annotations

import logging
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

lm_eval = pytest.importorskip("lm_eval")

import yaml
from lm_eval.tasks import TaskManager
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

import moezoo
from moezoo.eval.harness.lm_eval import MoezooLM, run_lm_eval
from moezoo.eval.language import encode, encode_pair, multiple_choice
from moezoo.eval.scoring import loglikelihoods, rolling_loglikelihood, rolling_windows

DATA = Path(__file__).parent / "lm_eval_tasks"
MAX_LENGTH = 12  # small, so rolling windows, left truncation and cut contexts all happen
MC, GEN, PPL = "moezoo_tiny_mc", "moezoo_tiny_gen", "moezoo_tiny_ppl"
TASKS = {
    MC: dict(output_type="multiple_choice", doc_to_text="{{context}}", doc_to_choice="{{choices}}",
             doc_to_target="{{label}}", metric_list=["acc", "acc_norm"]),
    GEN: dict(output_type="generate_until", doc_to_text="{{question}}", doc_to_target="{{answer}}",
              generation_kwargs={"until": ["w30"], "max_gen_toks": 4, "do_sample": False},
              metric_list=["exact_match"]),
    PPL: dict(output_type="loglikelihood_rolling", doc_to_text="", doc_to_target="{{text}}",
              metric_list=["word_perplexity", "byte_perplexity", "bits_per_byte"]),
}
LOWER_IS_BETTER = {"word_perplexity": "weighted_perplexity", "byte_perplexity": "weighted_perplexity",
                   "bits_per_byte": "bits_per_byte"}


def write_tasks(out: Path, cache_dir: Path) -> Path:
    """Write the local task YAMLs into ``out``. lm-eval hands ``data_files`` to ``datasets``, which
    resolves relative paths against the working directory, so they are written absolute."""
    out.mkdir(parents=True, exist_ok=True)
    for name, cfg in TASKS.items():
        metrics = [{"metric": m, "aggregation": LOWER_IS_BETTER.get(m, "mean"),
                    "higher_is_better": m not in LOWER_IS_BETTER} for m in cfg["metric_list"]]
        data_file = DATA / f"{name.rsplit('_', 1)[1]}.jsonl"
        task = {"task": name, "dataset_path": "json", "test_split": "test",
                "dataset_kwargs": {"data_files": {"test": str(data_file)}, "cache_dir": str(cache_dir)},
                **cfg, "metric_list": metrics, "metadata": {"version": 1.0}}
        (out / f"{name}.yaml").write_text(yaml.safe_dump(task, sort_keys=False))
    return out


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        # Nothing may reach for the network; lm-eval's INFO chatter stays out of the test log.
        mp.setenv("HF_DATASETS_OFFLINE", "1")
        mp.setenv("HF_HUB_OFFLINE", "1")
        logger = logging.getLogger("lm_eval")
        level = logger.level
        logger.setLevel(logging.WARNING)
        root = tmp_path_factory.mktemp("lm_eval")
        yield write_tasks(root / "tasks", root / "hf_datasets")
        logger.setLevel(level)


def evaluate(model, task_dir, **kwargs):
    return lm_eval.simple_evaluate(model=model, tasks=list(TASKS), log_samples=True, bootstrap_iters=0,
                                   task_manager=TaskManager(include_path=str(task_dir), include_defaults=False),
                                   **kwargs)


def test_adapter_scores_as_moezoo_scoring(task_dir):
    torch.manual_seed(0)
    model = moezoo.create_model("moe_lm_tiny")
    tok = model.tokenizer
    lm = MoezooLM(model, batch_size=3, max_length=MAX_LENGTH)
    out = evaluate(lm, task_dir)
    samples = out["samples"]

    # multiple choice: lm-eval's log-likelihoods are moezoo's scoring of the same strings, one by one
    pairs = [encode_pair(tok, ctx, cont, lm.prefix_token_id) for s in samples[MC] for ctx, cont in s["arguments"]]
    got = [resp[0] for s in samples[MC] for resp in s["resps"]]
    want = [loglikelihoods(model, [pair], batch_size=1, max_length=MAX_LENGTH)[0] for pair in pairs]
    assert [g for _, g in got] == [g for _, g in want]
    assert [ll for ll, _ in got] == pytest.approx([ll for ll, _ in want], abs=1e-4)
    items = [{"context": s["doc"]["context"], "choices": s["doc"]["choices"], "label": s["doc"]["label"]}
             for s in samples[MC]]
    mc = multiple_choice(model, items, max_length=MAX_LENGTH)
    assert mc["acc"] == out["results"][MC]["acc,none"]
    assert mc["acc_norm"] == out["results"][MC]["acc_norm,none"]

    # rolling: several windows per document; the same windows as lm-eval's own
    lengths = []
    for s in samples[PPL]:
        ids = encode(tok, s["doc"]["text"])
        lengths.append(len(ids))
        lm_windows = [tuple(map(list, make_disjoint_window(w)))
                      for w in get_rolling_token_windows(ids, lm.prefix_token_id, MAX_LENGTH, 1)]
        assert rolling_windows(ids, lm.prefix_token_id, MAX_LENGTH) == lm_windows
        assert s["resps"][0][0] == pytest.approx(rolling_loglikelihood(model, ids, max_length=MAX_LENGTH), abs=1e-4)
    assert max(lengths) > 2 * MAX_LENGTH  # so some document takes three windows

    # generation: batched, left-padded and cut at `until` = each prompt alone, greedy
    for s in samples[GEN]:
        prompt, kwargs = s["arguments"][0]
        ids = torch.tensor([encode(tok, prompt)[-(MAX_LENGTH - kwargs["max_gen_toks"]):]])
        new = model.generate(ids, max_new_tokens=kwargs["max_gen_toks"])[0, ids.shape[1]:]
        want = tok.decode(new, skip_special_tokens=True).split("w30")[0]
        assert s["resps"][0][0] == want


@pytest.mark.parametrize("family", ["llama", "qwen3_moe"])
def test_same_numbers_as_lm_eval_hf_model(task_dir, tmp_path, family):
    """A transformers checkpoint imported into moezoo gets lm-eval's `hf` numbers on every request type."""
    pytest.importorskip("accelerate")  # lm-eval's `hf` model needs it
    from moezoo.convert.testing import tiny_hf_checkpoint

    tiny_hf_checkpoint(family, tmp_path)
    hf = evaluate("hf", task_dir, batch_size=4,
                  model_args=f"pretrained={tmp_path},device=cpu,dtype=float32,max_length={MAX_LENGTH}")
    ours = evaluate("moezoo", task_dir, batch_size=4, model_args=f"pretrained={tmp_path},max_length={MAX_LENGTH}")
    for task in TASKS:
        for theirs, mine in zip(hf["samples"][task], ours["samples"][task], strict=True):
            if task == GEN:
                assert mine["resps"] == theirs["resps"]
            elif task == MC:
                assert [r[0][1] for r in mine["resps"]] == [r[0][1] for r in theirs["resps"]]  # greedy flags
                assert [r[0][0] for r in mine["resps"]] == pytest.approx([r[0][0] for r in theirs["resps"]],
                                                                        abs=1e-4)
            else:
                assert mine["resps"][0][0] == pytest.approx(theirs["resps"][0][0], abs=1e-4)
        for metric, value in hf["results"][task].items():
            if isinstance(value, float):
                assert ours["results"][task][metric] == pytest.approx(value, rel=1e-4), (task, metric)


def test_run_lm_eval_flattens_results_and_names_unknown_tasks(task_dir):
    torch.manual_seed(0)
    model = moezoo.create_model("moe_lm_tiny")
    table = run_lm_eval(model, f"{MC},{PPL}", include_path=task_dir, limit=4, batch_size=4)
    assert set(table) == {MC, PPL}
    assert set(table[MC]) == {"acc", "acc_stderr", "acc_norm", "acc_norm_stderr"}
    assert {"word_perplexity", "byte_perplexity", "bits_per_byte"} <= set(table[PPL])
    assert math.isfinite(table[PPL]["word_perplexity"]) and table[PPL]["word_perplexity"] > 1
    with pytest.raises(ValueError, match=f"moezoo_tiny_mcq.*closest.*'{MC}'"):
        run_lm_eval(model, ["moezoo_tiny_mcq"], include_path=task_dir, include_defaults=False)


def test_registered_as_moezoo_next_to_lm_evals_own_models():
    from lm_eval.api.registry import get_model

    assert get_model("moezoo") is MoezooLM
    assert get_model("hf").__name__ == "HFLM"  # registering first must not hide lm-eval's lazy models
    with pytest.raises(ValueError, match="fixed batch size"):
        MoezooLM(moezoo.create_model("moe_lm_tiny"), batch_size="auto")


@pytest.mark.slow  # a fresh interpreter, and lm-eval's CLI indexes all of its bundled tasks (~10 s)
def test_command_line_is_lm_evals_with_moezoo(task_dir, tmp_path):
    path = moezoo.create_model("moe_lm_tiny").save_pretrained(tmp_path / "model")
    cmd = [sys.executable, "-m", "moezoo.eval.harness.lm_eval", "--model", "moezoo",
           "--model_args", f"pretrained={path}", "--tasks", MC, "--include_path", str(task_dir), "--limit", "2"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    assert MC in run.stdout and "acc_norm" in run.stdout


def test_generate_until_sampling_arguments_and_stop_strings():
    from lm_eval.api.instance import Instance

    torch.manual_seed(0)
    lm = MoezooLM(moezoo.create_model("moe_lm_tiny"), batch_size=2)

    def generate(prompts, **gen_kwargs):
        return lm.generate_until([Instance("generate_until", {}, (p, gen_kwargs), i) for i, p in enumerate(prompts)],
                                 disable_tqdm=True)

    prompts = ["a red circle", "two blue squares and", "the"]
    greedy = generate(prompts, max_gen_toks=6, until=[])
    assert len(set(greedy)) == 3 and all(greedy)
    # top-k 1 sampling is greedy whatever the temperature; a different group of arguments, same batching
    assert generate(prompts, max_gen_toks=6, until=[], do_sample=True, temperature=5.0, top_k=1) == greedy
    stop = greedy[0][len(greedy[0]) // 2:]  # a stop string inside the first answer cuts it there
    assert generate(prompts[:1], max_gen_toks=6, until=[stop]) == [greedy[0][:len(greedy[0]) // 2]]
