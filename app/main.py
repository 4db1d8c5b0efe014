"""The Gradio page: `build_demo(demo)` lays it out and wires it to `VocoderDemo.run`; `launch`
serves it.

Errors meant for people (`VocoderError`) show in the page as a message; anything else is
logged on the server and shows as a short apology, never a stack trace. Requests that Gradio
refuses before a handler runs (a file path on the server rather than an upload, a malformed
file value) get a one-line message too, not Gradio's bare `{"error": null}`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.exceptions import InvalidPathError
from pydantic import ValidationError

from vocoder.audio import audio_info
from vocoder.errors import VocoderError
from vocoder.melio import MEL_SUFFIXES
from vocoder.sigma import DEFAULT_SIGMA

from .handlers import (
    EXAMPLES_DIR,
    MEGABYTE,
    NO_COMPARISON,
    DemoResult,
    DemoSettings,
    VocoderDemo,
    example_files,
)

logger = logging.getLogger(__name__)

TITLE = "Flow vocoder demo"
INTRO = """# Flow vocoder demo
Turn speech (or a mel spectrogram) back into audio with a flow-based neural vocoder:
WaveFlow, NanoFlow or WaveGlow. Upload or record speech, or upload a mel file, pick a
model and a temperature σ, and press **Synthesize**. Compare it with a second model or with
Griffin-Lim, the classic phase-reconstruction method, side by side."""

# The pictures fill their column's width at their own aspect ratio (no letterboxing), below
# their label and download button rather than under them.
CSS = """
.picture .image-container { padding-top: 34px; }
.picture img { width: 100%; height: auto; object-fit: contain; }
"""

REFUSED = "Cannot synthesize"  # the title of the page's error messages
SERVER_PATH_REFUSED = (
    "Files must be uploaded: a path on the server is refused "
    "(with gradio_client, pass handle_file(path))."
)
MALFORMED_INPUT = (
    "The request's inputs are malformed: a file input takes an upload "
    "(with gradio_client, pass handle_file(path))."
)

URL_REFUSED = "Files must be uploaded: a URL is refused (this server fetches nothing)."
UNREADABLE_INPUT = (
    "The request's inputs are malformed: see the page's \"Use via API\" for what each input takes."
)


class _DemoBlocks(gr.Blocks):
    """Blocks whose input checks answer in words.

    Gradio checks each request's values (uploaded here? well formed? in range?) before any
    handler runs, and without `show_error` its refusals reach the client as `{"error":
    null}`; `show_error` would instead pass on any exception's text, server paths included.
    """

    async def preprocess_data(self, block_fn, inputs, *args, **kwargs):
        _check_request(block_fn.inputs, inputs)
        try:
            return await super().preprocess_data(block_fn, inputs, *args, **kwargs)
        except gr.Error as e:  # Gradio's own checks (a slider out of range): a refusal
            raise gr.Error(e.message, title=REFUSED, print_exception=False) from None
        except InvalidPathError as e:
            logger.warning("refused a request: %s", e)
            raise gr.Error(SERVER_PATH_REFUSED, title=REFUSED, print_exception=False) from None
        except ValidationError as e:
            logger.warning("refused a malformed request: %s", str(e).splitlines()[0])
            raise gr.Error(MALFORMED_INPUT, title=REFUSED, print_exception=False) from None
        except (ValueError, TypeError, KeyError) as e:  # a value Gradio cannot take (a
            # full disk or a bug in Gradio is not the request's fault: those are raised)
            logger.warning("refused a request Gradio could not read: %s", str(e).splitlines()[0])
            raise gr.Error(UNREADABLE_INPUT, title=REFUSED, print_exception=False) from None


def _check_request(components: list[gr.components.Component], values: list[Any]) -> None:
    """`gr.Error` for what Gradio's own checks pass to a handler or word as `{"error":
    null}`: too few values (a raw HTTP call must give all of them; gradio_client fills in
    the defaults the API description shows), a setting that is not a number, a file given
    by URL."""

    def refuse(message: str) -> gr.Error:
        return gr.Error(message, title=REFUSED, print_exception=False)

    if len(values) < len(components):
        labels = ", ".join(str(c.label) for c in components)
        raise refuse(
            f"The request has {len(values)} input values; this takes {len(components)}: {labels}"
        )
    for component, value in zip(components, values, strict=False):
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if isinstance(component, (gr.Slider, gr.Number)) and not number:
            raise refuse(f"{component.label}: expected a number, got {value!r:.40}")
        path = value.get("path") or value.get("url") if isinstance(value, dict) else None
        if isinstance(path, str) and path.startswith(("http://", "https://")):
            raise refuse(URL_REFUSED)


def build_demo(demo: VocoderDemo) -> gr.Blocks:
    """The page for `demo`: inputs and settings on top, input and outputs side by side below."""
    models = demo.model_choices()
    with _DemoBlocks(title=TITLE, analytics_enabled=False, delete_cache=(3600, 3600)) as blocks:
        gr.Markdown(INTRO)
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=300):
                audio_in = gr.Audio(
                    sources=["upload", "microphone"],
                    type="filepath",
                    label="Speech (wav, flac, ogg or mp3)",
                    elem_id="audio-input",
                )
                mel_in = gr.File(
                    label="…or a mel file (.npy or .pt: [80, frames], natural-log mel)",
                    file_types=list(MEL_SUFFIXES),
                    height=150,
                    elem_id="mel-input",
                )
                # no example file in the API's description (Gradio's is a PDF); a subclass
                # would do, but Gradio writes a .pyi stub beside the module of each one
                mel_in.example_payload = mel_in.example_value = lambda: None
            with gr.Column(scale=1, min_width=300):
                model = gr.Dropdown(
                    choices=models,
                    value=demo.default_model(),
                    label="Model",
                    elem_id="model",
                )
                compare = gr.Dropdown(
                    choices=demo.comparison_choices(),
                    value=NO_COMPARISON,
                    label="Compare with",
                    elem_id="compare",
                )
                sigma = gr.Slider(
                    0.0,
                    1.2,
                    value=DEFAULT_SIGMA,
                    step=0.05,
                    label="Temperature σ (spread of the latent noise; 0.6 to 1.0 is typical)",
                )
                with gr.Accordion("Denoiser and seed", open=False):
                    denoise = gr.Slider(
                        0.0,
                        0.1,
                        value=0.0,
                        step=0.005,
                        label="Denoiser strength (0: off; WaveGlow's denoiser, 0.01 to 0.1)",
                    )
                    seed = gr.Number(
                        value=0, precision=0, minimum=0, label="Seed (same seed, same audio)"
                    )
                button = gr.Button("Synthesize", variant="primary", elem_id="synthesize")
            with gr.Column(scale=1, min_width=300):
                files = example_files()
                gr.Examples(
                    examples=[_example_row(path) for path in files],
                    inputs=[audio_in, mel_in],
                    example_labels=[_example_label(path) for path in files],
                    label="Examples (LJ Speech test clips and a mel file)",
                )
                limits = demo.settings
                gr.Markdown(
                    f"Files up to {limits.max_upload_mb:g} MB and {limits.max_seconds:g} s. "
                    "RTF is compute time over audio time: below 1 is faster than real time."
                )

        # Results: one row per kind of view, so the input and each output line up.
        columns = ("Input", "Output", "Comparison")
        with gr.Row(equal_height=False):
            texts = [_summary(name) for name in columns]
        with gr.Row(equal_height=False):
            players = [_player(name) for name in columns]
        with gr.Row(equal_height=False):
            mels = [_picture(name, "mel spectrogram") for name in columns]
        with gr.Row(equal_height=False):
            waves = [_picture(name, "waveform") for name in columns]
        comparison = [texts[2], players[2], mels[2], waves[2]]

        # The file inputs' defaults of None make them optional in the API's description.
        def synthesize(
            audio=None, mel_file=None, model_name=None, compare_with=NO_COMPARISON,
            sigma=DEFAULT_SIGMA, denoise=0.0, seed=0,
        ) -> tuple:  # fmt: skip
            inputs = (audio, mel_file, model_name, compare_with, sigma, denoise, seed)
            return _synthesize(demo, *inputs)

        outputs = [*texts, *players, *mels, *waves]
        quiet = {"queue": False, "api_visibility": "private", "show_progress": "hidden"}
        # The last results go first: a refused request must not leave them on the page as
        # if they were its own.
        button.click(lambda: _cleared(columns), outputs=outputs, **quiet).then(
            synthesize,
            inputs=[audio_in, mel_in, model, compare, sigma, denoise, seed],
            outputs=outputs,
            api_name="synthesize",
            show_progress_on=texts[1],  # one progress (or error) badge, not one per output
        )
        # Only one input at a time: a new upload or recording clears the other slot.
        audio_in.upload(lambda: None, outputs=mel_in, **quiet)
        audio_in.stop_recording(lambda: None, outputs=mel_in, **quiet)
        mel_in.upload(lambda: None, outputs=audio_in, **quiet)
        model.change(  # a model is not compared with itself
            lambda chosen: gr.update(choices=demo.comparison_choices(chosen), value=NO_COMPARISON),
            inputs=model,
            outputs=compare,
            **quiet,
        )
        compare.change(
            lambda choice: [gr.update(visible=choice != NO_COMPARISON)] * len(comparison),
            inputs=compare,
            outputs=comparison,
            **quiet,
        )
    return blocks


def launch(
    settings: DemoSettings,
    host: str = "127.0.0.1",
    port: int = 7860,
    concurrency: int = 1,
    prevent_thread_lock: bool = False,
    quiet: bool = False,
    demo: VocoderDemo | None = None,
) -> gr.Blocks:
    """Serve the demo; returns the running Blocks (call `.close()` to stop it).

    `concurrency` bounds how many syntheses run at once; the others wait in the queue.
    `demo`: one made from `settings` beforehand (with models already loaded, say).
    """
    blocks = build_demo(demo or VocoderDemo(settings))
    blocks.queue(default_concurrency_limit=concurrency, max_size=64)
    blocks.launch(
        server_name=host,
        server_port=port,
        max_file_size=int(settings.max_upload_mb * MEGABYTE),  # as the handlers count
        allowed_paths=[str(EXAMPLES_DIR)],
        prevent_thread_lock=prevent_thread_lock,
        show_error=False,
        quiet=quiet,
        ssr_mode=False,
        css=CSS,
    )
    return blocks


# ---- the page's pieces ----
# Each result column has components named "<column>-summary", "-audio", "-mel" and "-wave";
# the comparison column shows only while a comparison is chosen.


def _id(column: str) -> str:
    return column.lower()


def _summary(column: str) -> gr.Markdown:
    return gr.Markdown(
        f"### {column}",
        label=f"{column} summary",  # names this output in the API
        elem_id=f"{_id(column)}-summary",
        visible=column != "Comparison",
    )


def _player(column: str) -> gr.Audio:
    return gr.Audio(
        label=f"{column} audio",
        type="numpy",
        interactive=False,
        buttons=["download"],
        elem_id=f"{_id(column)}-audio",
        visible=column != "Comparison",
    )


def _picture(column: str, what: str) -> gr.Image:
    return gr.Image(
        label=f"{column} {what}",
        type="pil",
        format="png",
        interactive=False,
        buttons=["download"],
        elem_id=f"{_id(column)}-{what.split()[0]}",
        elem_classes=["picture"],
        visible=column != "Comparison",
    )


def _synthesize(demo: VocoderDemo, *inputs) -> tuple:
    try:
        result = demo.run(*inputs)
    except VocoderError as e:
        raise gr.Error(str(e), title=REFUSED, print_exception=False) from None
    except Exception:
        logger.exception("synthesis failed")
        raise gr.Error(
            "Synthesis failed on the server; try another file or model.", print_exception=False
        ) from None
    for warning in result.warnings:
        gr.Warning(warning)
    return _page_values(result)


def _page_values(result: DemoResult) -> tuple:
    """The values of the result components, in the order `build_demo` lists them."""
    view = result.input
    texts = [f"### Input\n{view.description}"]
    players = [view.pcm16()]
    mels = [view.mel_picture]
    waves = [view.waveform_picture]
    for index, heading in enumerate(("Output", "Comparison")):
        out = result.outputs[index] if index < len(result.outputs) else None
        texts.append(f"### {heading}\n{out.summary()}" if out else f"### {heading}")
        players.append(out.pcm16() if out else None)
        mels.append(out.mel_picture if out else None)
        waves.append(out.waveform_picture if out else None)
    return (*texts, *players, *mels, *waves)


def _cleared(columns: tuple[str, ...]) -> tuple:
    """The result components' values of an empty page, in the order of `_page_values`."""
    nothing = [None] * len(columns)
    return (*[f"### {column}" for column in columns], *nothing, *nothing, *nothing)


def _example_row(path: Path) -> list[str | None]:
    """An example's values for (audio input, mel file input)."""
    return [None, str(path)] if path.suffix in MEL_SUFFIXES else [str(path), None]


def _example_label(path: Path) -> str:
    if path.suffix in MEL_SUFFIXES:
        return f"{path.name.split('.')[0]} (mel file)"
    return f"{path.stem} ({audio_info(path).duration:.1f} s)"
