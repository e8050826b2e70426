"""``moezoo demo`` in a real browser: headless Chromium (Debian's ``chromium`` package) driven by Playwright.

The test starts ``moezoo demo`` on a free loopback port with Gradio's analytics off, opens the page,
submits the preloaded example and reads back the answer and the routing view. The answer must be
``moezoo chat``'s for the same image and question; the view must be a tokens x MoE layers table of
that exchange. It waits on page elements, never on network idle (Gradio keeps a connection open).
A screenshot goes to ``tmp_path``, and to ``$MOEZOO_DEMO_SCREENSHOT`` when that is set.

Playwright's own browser download is unreachable here, so it launches ``/usr/bin/chromium``
(``apt-get install chromium``, which ``.ci/run`` does; ``$MOEZOO_CHROMIUM`` names another); without it,
or without ``playwright`` or ``gradio``, the test is skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import moezoo
from moezoo.cli import main
from moezoo.demo.example import write_examples
from moezoo.eval.chat import reply

CHROMIUM = os.environ.get("MOEZOO_CHROMIUM", "/usr/bin/chromium")  # Debian's; elsewhere point this at a Chromium
FLAGSHIP = "film_cnn_moe_small.flagship"
ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 180  # importing torch and gradio and loading the model on a busy 2-core machine

pytestmark = [
    pytest.mark.skipif(not Path(CHROMIUM).is_file(),
                       reason=f"no {CHROMIUM}: install Debian's chromium (`apt-get install -y chromium`, "
                       ".ci/run does)"),
]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_served(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"moezoo demo exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    pytest.fail(f"moezoo demo did not serve {url} within {START_TIMEOUT_S} s:\n{log.read_text()[-4000:]}")


@pytest.fixture(scope="module")
def demo_url(tmp_path_factory):
    """``moezoo demo`` serving the flagship on a free loopback port; stopped (by its pid) after the tests."""
    pytest.importorskip("gradio", reason="the demo needs gradio: pip install 'moezoo[demo]'")
    pytest.importorskip("playwright.sync_api", reason="the browser test needs playwright: pip install playwright "
                        "(its own browser download is not needed)")
    port = _free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    folder = tmp_path_factory.mktemp("demo")
    log = folder / "demo.log"
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "moezoo", "demo", FLAGSHIP, "--port", str(port)],
                                   stdout=out, stderr=subprocess.STDOUT, env=env, cwd=folder)
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_until_served(url, process, log)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_the_demo_answers_the_preloaded_example_as_chat_does(demo_url, tmp_path, capsys):
    from playwright import sync_api  # the fixture skipped the test if it is missing

    expect = sync_api.expect
    example = write_examples(tmp_path / "examples")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])  # root in CI: no sandbox
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(demo_url)
            question = page.locator("#question textarea")
            expect(question).to_have_value(example.image_question, timeout=60_000)  # the preloaded example
            image = page.locator("#image img").first
            expect(image).to_be_visible()
            shown = page.request.get(image.get_attribute("src")).body()  # the very file the model will read
            assert shown == Path(example.image).read_bytes()
            page.locator("#ask").click()
            table = page.locator("#routing table")
            expect(table).to_be_visible(timeout=120_000)
            answer = page.locator("#answer textarea").input_value()
            tokens, layers = int(table.get_attribute("data-tokens")), int(table.get_attribute("data-layers"))
            rows = table.locator("tbody tr")
            expect(rows).to_have_count(tokens)
            expect(table.locator("thead th", has_text="layer")).to_have_count(layers)
            image_rows = table.locator('tbody tr[data-modality="image"]').count()
            answer_rows = table.locator('tbody tr[data-role="answer"]').count()
            first_cell = rows.nth(0).locator("td").nth(3).inner_text()
            screenshot = tmp_path / "demo.png"
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    if os.environ.get("MOEZOO_DEMO_SCREENSHOT"):
        shutil.copyfile(screenshot, os.environ["MOEZOO_DEMO_SCREENSHOT"])

    assert main(["chat", FLAGSHIP, "--image", example.image, example.image_question]) == 0
    chat = capsys.readouterr().out.strip()
    assert answer == chat == example.image_answer  # "blue": the shell's answer, and the right one

    model = moezoo.load(FLAGSHIP)
    exchange = reply(model, example.image_question, [example.image])
    assert tokens == exchange.sequence.shape[1]  # every token of the prompt and the answer: one row each
    assert layers == 2  # the flagship's MoE layers: one column each
    assert image_rows == model.num_tokens["image"] and answer_rows == len(exchange.new_ids)
    assert len(first_cell.split()) == 2  # top-2 experts per cell
    assert screenshot.stat().st_size > 10_000


def test_the_audio_example_switches_to_a_model_that_hears(demo_url, tmp_path, capsys):
    """The audio example picks the image + audio model, shows its audio input, and answers as chat does."""
    from playwright import sync_api

    expect = sync_api.expect
    example = write_examples(tmp_path / "examples")
    hearing = "uni_moe_tiny_image_audio.shapes_tones"
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(demo_url)
            expect(page.locator("#question textarea")).to_have_value(example.image_question, timeout=60_000)
            expect(page.locator("#audio")).to_be_hidden()  # the flagship does not hear
            page.locator("#example-audio").click()
            expect(page.locator("#model input")).to_have_value(hearing, timeout=60_000)
            expect(page.locator("#audio")).to_be_visible(timeout=60_000)
            expect(page.locator("#card")).to_contain_text(hearing, timeout=60_000)
            expect(page.locator("#question textarea")).to_have_value(example.audio_question)
            page.locator("#ask").click()
            table = page.locator("#routing table")
            expect(table.locator('tbody tr[data-modality="audio"]').first).to_be_visible(timeout=120_000)
            answer = page.locator("#answer textarea").input_value()
            audio_rows = table.locator('tbody tr[data-modality="audio"]').count()
            image_rows = table.locator('tbody tr[data-modality="image"]').count()
        finally:
            browser.close()
    assert main(["chat", hearing, "--audio", example.audio, example.audio_question]) == 0
    assert answer == capsys.readouterr().out.strip()
    assert audio_rows == moezoo.load(hearing).num_tokens["audio"] and image_rows == 0  # the example has no image
