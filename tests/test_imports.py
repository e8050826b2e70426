"""The import graph: the layer contract, no cycles, and ``import moezoo`` plus the inference path stay light."""

import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ["wandb", "webdataset", "lightning", "pytorch_lightning"]


def _heavy_modules_after(code: str) -> list[str]:
    probe = f"import sys\n{code}\nprint([m for m in {HEAVY!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    return eval(out.stdout.strip().splitlines()[-1])


def test_import_moezoo_is_light():
    assert _heavy_modules_after("import moezoo, moezoo.moe") == []
    code = ("import sys, moezoo; moezoo.load; "
            "print(sorted(m for m in ('transformers', 'lightning', 'wandb', 'webdataset') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"  # not even transformers until a model is built or loaded


@pytest.mark.parametrize("name", ["moe_lm_tiny", "mm_tiny_clip"])
def test_create_save_load_generate_stay_light(tmp_path, name):
    code = (
        "import moezoo, torch\n"
        f"model = moezoo.create_model({name!r})\n"
        f"model.save_pretrained({str(tmp_path)!r})\n"
        f"model = moezoo.load({str(tmp_path)!r})\n"
        "from PIL import Image\n"
        "inputs = (model.processor(text='<image> hi', images=[Image.new('RGB', (9, 9))]) if model.processor\n"
        "          else {'input_ids': torch.tensor([[1, 2, 3]])})\n"
        "model.generate(**inputs, max_new_tokens=2)\n"
    )
    assert _heavy_modules_after(code) == []


def test_eval_metrics_and_shipped_tasks_need_no_harness(tmp_path):
    """``moezoo.eval`` works with neither lm-eval nor lmms-eval installed (both are extras)."""
    code = (
        "import sys\n"
        "sys.modules['lm_eval'] = sys.modules['lmms_eval'] = None  # as if not installed: importing them fails\n"
        "import moezoo, moezoo.eval as ev\n"
        "assert ev.vqa_accuracy('Two', ['2'] * 10) == 1.0\n"
        "assert ev.pope_metrics(['yes', 'no'], ['yes', 'yes'])['recall'] == 0.5\n"
        "model = moezoo.create_model('moe_lm_tiny')\n"
        "print(sorted(ev.evaluate(model, ['text_mc'], limit=2).results['text_mc']))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "['acc', 'acc_norm', 'num_items']"
    assert _heavy_modules_after("import moezoo.eval.metrics, moezoo.eval.runner") == []


def _cycles(graph) -> list[list[str]]:
    """Every import cycle of ``graph`` (Tarjan's strongly connected components of size > 1)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.find_modules_directly_imported_by(node):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return out


def test_no_import_cycles():
    """Function-level imports count too: lazy imports may speed start-up but must not hide a cycle."""
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph("moezoo", exclude_type_checking_imports=True)
    assert _cycles(graph) == []


def test_the_layer_contract_holds():
    """pyproject.toml's ``[tool.importlinter]`` layers (utils -> moe -> processing -> models -> checkpoint ->
    convert -> registry -> loading -> data -> eval -> parallel -> train -> bench -> cli): a package imports
    only those below it, counting imports inside functions."""
    pytest.importorskip("importlinter")
    root = Path(__file__).parents[1]
    out = subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import lint_imports; "
                          f"sys.exit(lint_imports(config_filename={str(root / 'pyproject.toml')!r}, no_cache=True))"],
                         capture_output=True, text=True, cwd=root)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
