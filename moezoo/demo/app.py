"""The Gradio page of ``moezoo demo``: pick a zoo model, give it an image (and a sound), ask, see the experts.

It binds to 127.0.0.1 only, with Gradio's analytics off and no share link. The page is built from
:class:`~moezoo.demo.session.DemoSession` (loading, answering, the routing view) and the examples of
:mod:`moezoo.demo.example`, which are preloaded so that "Ask" works the moment the page opens.
Elements carry ids (``#model``, ``#image``, ``#audio``, ``#question``, ``#ask``, ``#answer``,
``#routing``, ``#card``) that the browser test finds them by. The theme uses the system's fonts, so
the page asks nothing from the internet.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # read when gradio is imported: no telemetry, no version check

import gradio as gr  # after the environment variable it reads

from moezoo.demo import FLAGSHIP
from moezoo.demo.example import ExampleFiles, write_examples
from moezoo.demo.session import (
    DemoSession,
    demo_models,
    first_model_reading,
    model_card,
)

HOST = "127.0.0.1"
INTRO = ("Pick a model from the zoo, give it an image (and a sound, for a model that hears), and ask a question. "
         "Under the answer: the experts that handled each token in each MoE layer, coloured by the token's "
         "modality, then the model card. An example is preloaded: press **Ask**.")
WAITING = "<p>Ask a question to see which experts handle each token.</p>"
CSS = ("#routing table td, #routing table th {border-bottom: 1px solid #e5e7eb}\n"
       # the zoo's images are 64x64: show them large, with sharp pixels
       "#image img {image-rendering: pixelated; width: 100%; height: 100%; object-fit: contain}")


def build_app(default: str, session: DemoSession | None = None, examples: ExampleFiles | None = None) -> gr.Blocks:
    """The page, with ``default`` selected and the examples preloaded."""
    session = session or DemoSession()
    examples = examples or write_examples(tempfile.mkdtemp(prefix="moezoo-demo-"))
    names = demo_models()
    if default not in names:
        names = [default, *names]
    reads = session.modalities(default)
    sees, hears = "image" in reads, "audio" in reads
    hearing = first_model_reading("audio", names)

    def on_model(name: str) -> tuple[Any, Any, str, str, str]:
        reads = session.modalities(name)  # the previous model's answer and routing are cleared
        return (gr.update(visible="image" in reads), gr.update(visible="audio" in reads), model_card(name), "",
                WAITING)

    def on_ask(name: str, image: str | None, audio: str | None, question: str) -> tuple[str, str]:
        try:
            result = session.answer(name, question, image, audio)
        except (ValueError, FileNotFoundError) as err:  # the chat path's user errors: shown, not a traceback
            raise gr.Error(str(err)) from None
        return result.text, result.html

    # Plain buttons rather than gr.Examples: an example click resets its inputs' props (visibility
    # included) to their construction values, which would hide the audio input again.
    def image_example(name: str) -> tuple[str, None, str, str]:
        seeing = name if "image" in session.modalities(name) else default if sees else FLAGSHIP
        return examples.image, None, examples.image_question, seeing

    def audio_example(name: str) -> tuple[None, str, str, str]:
        return None, examples.audio, examples.audio_question, name if "audio" in session.modalities(name) else hearing

    with gr.Blocks(title="moezoo demo", analytics_enabled=False) as app:
        gr.Markdown(f"# moezoo: experts at work\n{INTRO}")
        with gr.Row():
            with gr.Column(scale=1):
                model = gr.Dropdown(names, value=default, label="Model (the shipped zoo)", elem_id="model")
                image = gr.Image(value=examples.image if sees else None, type="filepath", image_mode=None,
                                 sources=["upload", "clipboard"], label="Image", height=256, visible=sees,
                                 elem_id="image")
                audio = gr.Audio(value=examples.audio if hears else None, type="filepath", sources=["upload"],
                                 label="Audio", visible=hears, elem_id="audio")
                question = gr.Textbox(value=examples.image_question if sees or not hears else
                                      examples.audio_question, lines=2, label="Question", elem_id="question")
                ask = gr.Button("Ask", variant="primary", elem_id="ask")
            with gr.Column(scale=1):
                answer = gr.Textbox(label="Answer", interactive=False, elem_id="answer")
                gr.Markdown("Examples, drawn by the shipped datasets' generators:")
                with gr.Row():
                    show_image = gr.Button("Shapes: what colour is the triangle?", size="sm", elem_id="example-image")
                    show_audio = gr.Button("Tones: how many beeps?" + (f" ({hearing})" if hearing else ""), size="sm",
                                           elem_id="example-audio", visible=hearing is not None)
                gr.Markdown("## Experts per token")
                routing = gr.HTML(WAITING, elem_id="routing")
        with gr.Accordion("Model card", open=True):
            card = gr.Markdown(model_card(default), elem_id="card")
        model.change(on_model, inputs=model, outputs=[image, audio, card, answer, routing])
        show_image.click(image_example, inputs=model, outputs=[image, audio, question, model])
        show_audio.click(audio_example, inputs=model, outputs=[image, audio, question, model])
        for trigger in (ask.click, question.submit):
            trigger(on_ask, inputs=[model, image, audio, question], outputs=[answer, routing])
    return app


def launch(default: str, port: int) -> None:
    """Serve the page on ``127.0.0.1:port`` until interrupted."""
    folder = tempfile.mkdtemp(prefix="moezoo-demo-")
    examples = write_examples(folder)
    app = build_app(default, DemoSession(), examples)
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])  # system fonts: no Google Fonts request
    app.launch(server_name=HOST, server_port=port, share=False, inbrowser=False, show_error=True,
               allowed_paths=[folder], theme=theme, css=CSS, ssr_mode=False, mcp_server=False, pwa=False)
