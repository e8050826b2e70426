"""The lmms-eval adapter, run offline through lmms-eval's own evaluator on a local image task."""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import socket
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("lmms_eval")

from lmms_eval.api.instance import Instance
from lmms_eval.evaluator import simple_evaluate
from lmms_eval.tasks import TaskManager
from PIL import Image

import moezoo
from moezoo.eval.answers import normalize_answer
from moezoo.eval.generation import generate_answers
from moezoo.eval.harness.lmms import MoezooLMMs, manifest

TASKS = Path(__file__).parent / "lmms_tasks"
POST_PROMPT = "\nAnswer the question using a single word or phrase."
# k of the ten human answers per doc equal the model's own answer (the rest "zzz"), so VQAv2
# accuracy, min(#matches among 9 / 3, 1) averaged over the 10 leave-one-out subsets, is by hand:
# k=0: 0; k=1: 9/10 * 1/3 = 0.3; k=2: 0.6; k=3: (3 * 2/3 + 7) / 10 = 0.9; k=4: 1.
MATCHES = [0, 1, 2, 3, 4]
VQA_BY_HAND = (0 + 0.3 + 0.6 + 0.9 + 1) / 5
EXACT_DOCS = (0, 2)  # docs whose main answer is the model's answer: exact match 2 / 5


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No hub, no network, a throwaway datasets cache; records any attempt to connect."""
    import datasets.config
    import huggingface_hub.constants

    for key in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.setenv(key, "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_DATASETS_CACHE", raising=False)
    monkeypatch.delenv("LMMS_EVAL_DATASETS_CACHE", raising=False)
    # Both libraries read the variables when imported, which has happened by now.
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    attempts = []
    real_connect = socket.socket.connect

    def connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            attempts.append(address)
            raise OSError(f"network disabled in this test: {address}")
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    yield attempts
    assert attempts == []
    wandb = sys.modules.get("wandb")
    assert wandb is None or wandb.run is None  # lmms-eval started no W&B run


def _docs() -> list[dict]:
    return [json.loads(line) for line in (TASKS / "moezoo_tiny_vqa" / "data.jsonl").read_text().splitlines()]


def _inputs(docs: list[dict]) -> tuple[list[str], list[list]]:
    """What the adapter must send to generate_answers: llava_hf's rule, ``<image>`` before a context without one."""
    prompts, images = [], []
    for doc in docs:
        imgs = [Image.open(TASKS / "moezoo_tiny_vqa" / doc["image"]).convert("RGB")] if doc["image"] else []
        prompts.append("<image>\n" * len(imgs) + doc["question"] + POST_PROMPT)
        images.append(imgs)
    return prompts, images


def _task_copy(tmp_path: Path, answers: list[str]) -> Path:
    """The shipped tasks, with human answers rewritten around the model's answers (see MATCHES): the
    humans write the answer as the EvalAI normalisation leaves it (an untrained model's output may
    have capitals, which the prediction loses and disagreeing human answers keep)."""
    root = tmp_path / "tasks"
    shutil.copytree(TASKS, root)
    rows = _docs()
    for i, (row, answer) in enumerate(zip(rows, answers)):
        row["answers"] = [normalize_answer(answer)] * MATCHES[i] + ["zzz"] * (10 - MATCHES[i])
        row["answer"] = answer if i in EXACT_DOCS else "zzz"
    (root / "moezoo_tiny_vqa" / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def _reference(model, prompt: str, images: list, continuation: str) -> tuple[float, bool]:
    """(mean token loss of the continuation, is greedy) from the model's own loss and logits, one
    request at a time, as lmms-eval's llava_hf returns them; the labels mask the prompt (so a FiLM
    encoder reads the prompt only)."""
    proc = model.processor
    text = proc.apply_chat_template([{"role": "user", "content": prompt}])
    context = proc(text=text, images=images or None, add_special_tokens=False)
    cont = proc.tokenizer(continuation, add_special_tokens=False, return_tensors="pt")["input_ids"]
    ids = torch.cat([context["input_ids"], cont], dim=1)
    labels = torch.cat([torch.full_like(context["input_ids"], -100), cont], dim=1)
    with torch.no_grad():
        out = model(input_ids=ids, pixel_values=context.get("pixel_values"), labels=labels)
    n = cont.shape[1]
    greedy = bool((out.logits[0, -n - 1:-1].argmax(-1) == cont[0]).all())
    return float(out.loss), greedy


def test_simple_evaluate_local_image_task(offline, tmp_path):
    torch.manual_seed(0)
    model = moezoo.create_model("film_cnn_moe_small").eval()  # FiLM: the encoder reads the prompt
    prompts, images = _inputs(_docs())
    expected = generate_answers(model, prompts, images, batch_size=5, max_new_tokens=8, until=["\n"])
    assert len(set(expected)) > 1
    manager = TaskManager(include_path=str(_task_copy(tmp_path, expected)), include_defaults=False)
    out = simple_evaluate(model=MoezooLMMs(model, batch_size=2), tasks=["moezoo_tiny_vqa", "moezoo_tiny_mc"],
                          task_manager=manager, bootstrap_iters=0)

    samples = sorted(out["samples"]["moezoo_tiny_vqa"], key=lambda s: s["doc_id"])
    assert [s["filtered_resps"][0] for s in samples] == expected
    vqa = out["results"]["moezoo_tiny_vqa"]
    assert vqa["vqa_accuracy,none"] == pytest.approx(VQA_BY_HAND)
    assert vqa["exact_match,none"] == pytest.approx(len(EXACT_DOCS) / len(expected))

    # Multiple choice: lmms-eval's loglikelihood requests, checked against the model's own loss; lmms-eval
    # picks the option of least loss, and so must the accuracy it reports.
    correct, inverted = [], []
    for sample in sorted(out["samples"]["moezoo_tiny_mc"], key=lambda s: s["doc_id"]):
        doc, i = sample["doc"], sample["doc_id"]
        reference = [_reference(model, prompts[i], images[i], c)[0] for c in doc["choices"]]
        logged = [resp[0] for resp in sample["filtered_resps"]]
        assert logged == pytest.approx(reference, abs=1e-4)
        correct.append(min(range(len(reference)), key=reference.__getitem__) == doc["label"])  # the least loss
        inverted.append(max(range(len(reference)), key=reference.__getitem__) == doc["label"])
    assert out["results"]["moezoo_tiny_mc"]["acc,none"] == pytest.approx(sum(correct) / len(correct))
    assert correct != inverted  # these docs tell a loss from a log-likelihood apart


def test_model_by_name_loads_a_checkpoint(offline, tmp_path):
    """``model="moezoo"`` through lmms-eval's registry: the entry point's registration, or the same
    manifest registered here when the package was installed before the entry point existed."""
    from lmms_eval.models import MODEL_REGISTRY_V2

    if "moezoo" not in MODEL_REGISTRY_V2.list_model_names():
        MODEL_REGISTRY_V2.register_manifest(manifest())
    torch.manual_seed(0)
    model = moezoo.create_model("mm_tiny_cnn").eval()
    path = model.save_pretrained(tmp_path / "ckpt")
    out = simple_evaluate(model="moezoo", model_args=f"pretrained={path},batch_size=3,max_new_tokens=4",
                          tasks=["moezoo_tiny_vqa"], task_manager=TaskManager(include_path=str(TASKS),
                                                                              include_defaults=False),
                          limit=4, bootstrap_iters=0)
    prompts, images = _inputs(_docs()[:4])
    expected = generate_answers(model, prompts, images, max_new_tokens=8, until=["\n"])  # the task's 8 wins
    logged = [s["filtered_resps"][0] for s in sorted(out["samples"]["moezoo_tiny_vqa"], key=lambda s: s["doc_id"])]
    assert logged == expected


def test_entry_point():
    names = [ep.name for ep in importlib.metadata.entry_points(group="lmms_eval.models")]
    if "moezoo" not in names:
        pytest.skip("the lmms_eval.models entry point is not installed (pip install -e . after adding it)")
    from lmms_eval.models.registry_v2 import ModelRegistryV2

    registry = ModelRegistryV2()
    registry.load_entrypoint_manifests()
    assert registry.get_model_class("moezoo") is MoezooLMMs


def _request(kind: str, args: tuple) -> Instance:
    return Instance(request_type=kind, arguments=args, idx=0,
                    metadata={"task": "t", "doc_id": args[-3] if len(args) > 2 else 0, "repeats": 1})


def test_loglikelihood_requests_and_errors():
    torch.manual_seed(0)
    model = moezoo.create_model("mm_tiny_cnn").eval()
    lm = MoezooLMMs(model, batch_size=2)
    red = Image.new("RGB", (40, 40), "red")
    lm.task_dict = {"t": {"test": [{"image": red}, {"image": None}]}}
    visual = lambda doc: [doc["image"]] if doc["image"] is not None else []
    requests = [_request("loglikelihood", ("What colour?", "red", visual, 0, "t", "test")),
                _request("loglikelihood", ("Say hi.", "hi there", visual, 1, "t", "test")),
                _request("loglikelihood", ("What colour?", "", visual, 0, "t", "test")),
                _request("loglikelihood", ("", "red"))]  # lmms-eval's unconditional form
    got = lm.loglikelihood(requests)
    for (lp, greedy), want in zip(got, [_reference(model, "<image>\nWhat colour?", [red], "red"),
                                        _reference(model, "Say hi.", [], "hi there"), None,
                                        _reference(model, "", [], "red")]):
        if want is not None:
            assert lp == pytest.approx(want[0], abs=1e-4) and lp > 0 and greedy == want[1]  # a loss, as lmms-eval's
    assert got[2] == (0.0, True)  # an empty continuation
    # A continuation that is the model's own next token is greedy.
    proc = model.processor
    text = proc.apply_chat_template([{"role": "user", "content": "<image>\nWhat colour?"}])
    inputs = proc(text=text, images=[red], add_special_tokens=False)
    token = int(model(**inputs).logits[0, -1].argmax())
    word = proc.tokenizer.decode([token])
    assert proc.tokenizer(word, add_special_tokens=False)["input_ids"] == [token]
    assert lm.loglikelihood([_request("loglikelihood", ("What colour?", word, visual, 0, "t", "test"))])[0][1]

    with pytest.raises(NotImplementedError, match="single-turn"):
        lm.generate_until_multi_round([])
    with pytest.raises(ValueError, match="unknown moezoo model_args"):
        MoezooLMMs(model, temprature=0)
    text_only = MoezooLMMs(moezoo.create_model("moe_lm_tiny"))
    text_only.task_dict = lm.task_dict
    with pytest.raises(ValueError, match="takes no images"):
        text_only.generate_until([_request("generate_until", ("What colour?", {"until": ["\n"]}, visual, 0, "t",
                                                              "test"))])
