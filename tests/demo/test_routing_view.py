"""The demo without a browser: the routing view's builder, the shared chat path, the examples and the CLI's errors."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import moezoo
from moezoo.cli import main
from moezoo.demo.example import write_examples
from moezoo.demo.routing import (
    RoutedExchange,
    TokenRoute,
    routed_exchange,
    routing_html,
    token_experts,
)
from moezoo.demo.session import DemoSession, model_card
from moezoo.eval.chat import reply
from moezoo.moe import Routing

FLAGSHIP = "film_cnn_moe_small.flagship"


def _routing(token_idx, expert_idx, weight, rows, experts=4, token_choice=True) -> Routing:
    return Routing(torch.tensor(token_idx), torch.tensor(expert_idx), torch.tensor(weight),
                   torch.zeros(rows, experts), torch.zeros(rows, experts), token_choice)


def test_token_experts_keeps_rank_order_sub_tokens_and_expert_choice():
    # Token choice, top-2 over 3 tokens, emitted rank-major: the three top-1s, then the three top-2s.
    r = _routing([0, 1, 2, 0, 1, 2], [3, 0, 1, 2, 3, 0], [0.6, 0.9, 0.5, 0.4, 0.1, 0.5], rows=3)
    assert token_experts(r, 3) == [[((3, 0.6), (2, 0.4))], [((0, 0.9), (3, 0.1))], [((1, 0.5), (0, 0.5))]]
    # MH-MoE with h=2 heads: 2 tokens -> 4 sub-tokens; token 1's sub-tokens are rows 2 and 3.
    r = _routing([0, 1, 2, 3], [1, 2, 3, 0], [1.0, 1.0, 1.0, 1.0], rows=4)
    assert token_experts(r, 2) == [[((1, 1.0),), ((2, 1.0),)], [((3, 1.0),), ((0, 1.0),)]]
    # Expert choice: experts pick tokens, so token 1 gets none and token 0 gets three, listed by weight.
    r = _routing([0, 0, 2, 0], [0, 1, 1, 3], [0.2, 0.5, 0.7, 0.3], rows=3, token_choice=False)
    assert token_experts(r, 3) == [[((1, 0.5), (3, 0.3), (0, 0.2))], [()], [((1, 0.7),)]]
    with pytest.raises(ValueError, match="not a multiple of the 2 tokens"):
        token_experts(_routing([0], [0], [1.0], rows=3), 2)


def test_routing_html_is_a_tokens_by_layers_table_coloured_by_modality():
    view = RoutedExchange(
        tokens=[TokenRoute(0, "<image>", "image", "prompt", ((((3, 0.6), (1, 0.4)),), (((0, 0.7), (2, 0.3)),))),
                TokenRoute(1, "What", "text", "prompt", ((((1, 0.5), (3, 0.5)),), (((2, 0.9), (0, 0.1)),))),
                TokenRoute(2, "blue", "text", "answer", ((((1, 0.8), (0, 0.2)),), (((2, 1.0),),)))],
        layers=["layer 0", "layer 1"], sites=["llm.layers.0.mlp", "llm.layers.1.mlp"], num_experts=[4, 4],
        other_sites=[])
    page = routing_html(view)
    assert 'data-tokens="3" data-layers="2"' in page
    rows = re.findall(r"<tr data-modality=\"(\w+)\" data-role=\"(\w+)\" style=\"background:(#\w+)", page)
    assert rows == [("image", "prompt", "#ffedd5"), ("text", "prompt", "#dbeafe"), ("text", "answer", "#dbeafe")]
    assert "&lt;image&gt;" in page and "<image>" not in page  # token text is escaped, not markup
    assert "<b>3</b> 1" in page and 'title="expert 3: 0.600, expert 1: 0.400"' in page
    assert re.findall(r'data-legend="(\w+)"', page) == ["text", "image"]  # only the modalities present
    assert "3 of 4</td>" in page  # layer 0 used experts 0, 1, 3
    assert "no MoE layer" in routing_html(RoutedExchange([], [], [], [], []))


@pytest.fixture(scope="module")
def flagship():
    return moezoo.load(FLAGSHIP)


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    return write_examples(tmp_path_factory.mktemp("examples"))


def test_examples_are_deterministic_and_the_flagship_answers_its_own(tmp_path, example):
    again = write_examples(tmp_path)
    for a, b in ((example.image, again.image), (example.audio, again.audio)):
        assert Path(a).read_bytes() == Path(b).read_bytes()
    assert example.image_question == "What colour is the triangle?\nAnswer the question using a single word or phrase."
    assert example.image_answer == "blue" and example.audio_question.startswith("How many beeps")


def test_the_routing_view_is_the_forward_that_decoded(flagship, example):
    answer = reply(flagship, example.image_question, [example.image])
    view = routed_exchange(flagship, answer)
    n_prompt, n_new = answer.inputs["input_ids"].shape[1], len(answer.new_ids)
    assert len(view.tokens) == n_prompt + n_new and view.layers == ["layer 0", "layer 1"]
    assert sum(t.modality == "image" for t in view.tokens) == flagship.num_tokens["image"]
    assert [t.role for t in view.tokens].count("answer") == n_new
    assert next(t.token for t in view.tokens if t.role == "answer") == answer.text  # "blue", then <|end|>
    assert all(len(layer[0]) == 2 for t in view.tokens for layer in t.experts)  # top-2, one sub-token
    # The prompt's routing equals the prefill's (the prompt alone): the answer, passed as labels, reaches
    # neither the FiLM question pooling nor the prefix attention span, just as while decoding.
    with torch.inference_mode():
        prefill = flagship(**answer.inputs)
    for layer, routing in enumerate(prefill.routings):
        alone = token_experts(routing, n_prompt)
        assert [[tuple(e for e, _ in sub) for sub in t.experts[layer]] for t in view.tokens[:n_prompt]] == \
               [[tuple(e for e, _ in sub) for sub in tok] for tok in alone]


def test_the_demo_answers_as_moezoo_chat(example, capsys):
    assert main(["chat", FLAGSHIP, "--image", example.image, example.image_question]) == 0
    printed = capsys.readouterr().out.strip()
    result = DemoSession().answer(FLAGSHIP, example.image_question, image=example.image, audio=example.audio)
    assert result.text == printed == "blue"  # the flagship does not hear: the audio is left out, as chat has none
    assert f'data-tokens="{len(result.routing.tokens)}"' in result.html


def test_a_text_model_gets_no_image_and_a_card():
    session = DemoSession()
    result = session.answer("moe_lm_tiny.text", "Once upon a time", image="ignored.png", audio=None)
    assert result.routing.tokens and {t.modality for t in result.routing.tokens} == {"text"}
    assert session.modalities("moe_lm_tiny.text") == []
    card = model_card(FLAGSHIP)
    assert card.startswith("#") and not card.startswith("---") and "shapes_vqa" in card


def test_cli_errors_name_the_closest_models_and_the_extra(capsys):
    assert main(["demo", "film_cnn_moe_smal.flagship"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("moezoo demo: error: no pretrained model named 'film_cnn_moe_smal.flagship'")
    assert "Did you mean ['film_cnn_moe_small.flagship'" in err
    assert main(["demo", "runs/no_such_model"]) == 2
    assert "no such checkpoint dir: runs/no_such_model" in capsys.readouterr().err
    assert main(["demo", "--port", "70000"]) == 2
    assert "--port 70000" in capsys.readouterr().err
    code = ("import sys; sys.modules['gradio'] = None  # as if not installed\n"
            "from moezoo.cli import main; sys.exit(main(['demo']))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "pip install 'moezoo[demo]'" in out.stderr


def test_gradio_is_imported_by_the_demo_page_only():
    code = ("import sys, moezoo, moezoo.demo, moezoo.demo.session, moezoo.demo.example\n"
            "from moezoo.cli import build_parser; build_parser().parse_args(['demo'])\n"
            "print('gradio' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"
