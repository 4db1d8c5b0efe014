"""The web demo in a real headless Chromium: pick an example, synthesize, hear the result.

Leaves a screenshot in test-artifacts/demo.png. Skips only when no Chromium can be found
(.ci/run installs Debian's when it is missing).
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gradio", reason="the demo needs gradio (pip install 'vocoder[demo]')")
sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (python)")

import torch  # noqa: E402

from app.handlers import DemoSettings  # noqa: E402
from app.main import launch  # noqa: E402
from vocoder.checkpoint import export_model  # noqa: E402
from vocoder.features import MelConfig  # noqa: E402
from vocoder.models import ModelConfig, build_model  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")]

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def find_chromium() -> str | None:
    """Debian's Chromium (or one on PATH), else the one Playwright may have downloaded."""
    for candidate in ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(candidate)
        if found:
            return found
    with sync_api.sync_playwright() as p:
        bundled = p.chromium.executable_path
    return bundled if bundled and os.path.isfile(bundled) else None


@pytest.fixture(scope="module")
def chromium() -> str:
    path = find_chromium()
    if path is None:
        pytest.skip("no Chromium found (/usr/bin/chromium, PATH or Playwright's own)")
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    torch.manual_seed(0)
    config = ModelConfig(family="waveflow", n_flows=2, n_layers=2, n_group=8, channels=8)
    stem = tmp_path_factory.mktemp("models") / "tiny-waveflow"
    model, _ = export_model(build_model(config), MelConfig(), stem)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    blocks = launch(
        DemoSettings(models=(str(model),), device="cpu"),
        port=port,
        prevent_thread_lock=True,
        quiet=True,
    )
    yield blocks
    blocks.close()


def is_upload(response) -> bool:
    """The POST of a file to Gradio's upload route (not its GET of the upload's progress)."""
    return response.request.method == "POST" and "/gradio_api/upload?" in response.url


def watch_toasts(page) -> None:
    """Collect in `window.toasts` the text of every toast (Gradio's pop-up messages) shown
    from now on, so a test sees a message however long after it closed the test looks."""
    page.evaluate(
        """() => {
            window.toasts = [];
            const note = () => {
                for (const el of document.querySelectorAll('[data-testid="toast-text"]')) {
                    if (!window.toasts.includes(el.textContent)) window.toasts.push(el.textContent);
                }
            };
            new MutationObserver(note).observe(document.body, {childList: true, subtree: true});
        }"""
    )


def test_example_to_audio_in_the_browser(chromium, server, tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)
            page.goto(server.local_url)
            page.get_by_text("LJ050-0030 (1.9 s)").click()
            page.wait_for_selector("#audio-input audio[src]", state="attached")
            page.click("#synthesize")
            page.wait_for_selector("#output-audio audio[src]", state="attached")
            page.wait_for_selector("#output-mel img[src]", state="attached")
            summary = page.locator("#output-summary").inner_text()
            assert "RTF" in summary and "M parameters" in summary
            assert "LJ050-0030.wav" in page.locator("#input-summary").inner_text()
            # the input and output mels side by side: one row, the output to the right
            given = page.locator("#input-mel img").bounding_box()
            made = page.locator("#output-mel img").bounding_box()
            assert abs(given["y"] - made["y"]) < 2 and made["x"] >= given["x"] + given["width"]
            assert given["width"] > 300 and given["height"] > 80  # readable, not a thumbnail
            page.screenshot(path=str(ARTIFACTS / "demo.png"), full_page=True)

            # A broken mel file: a readable message in the page, and the page still works.
            bad = tmp_path / "broken.npy"
            np.save(bad, np.full((80, 20), np.nan, np.float32))
            with page.expect_response(is_upload) as upload:
                page.locator("#mel-input input[type=file]").set_input_files(str(bad))
            assert upload.value.ok and "broken.npy" in upload.value.text()
            # Waits on lasting states only: the uploaded file's row (its download link) and the
            # example's audio cleared by the upload ("Uploading 1 file... broken.npy" shows
            # for a moment only, and a wait started after it is gone never ends).
            page.wait_for_selector('#mel-input a[download="broken.npy"]')
            page.wait_for_selector("#audio-input audio", state="detached")
            watch_toasts(page)  # error toasts close after 10 s: note them from now on
            page.click("#synthesize")
            page.wait_for_function("() => window.toasts.some(t => t.includes('broken.npy'))")
            toasts = page.evaluate("window.toasts")
            assert any("broken.npy: contains 1600 NaN" in t for t in toasts), toasts
            # the example's results are gone: they are not this request's
            assert page.locator("#output-audio audio[src]").count() == 0
            assert page.locator("#output-mel img[src]").count() == 0
            assert "RTF" not in page.locator("#output-summary").inner_text()

            # Too big a file is refused by the browser before it is sent, at the size the page
            # states (the browser counts 2^20 bytes a megabyte: it said 19.1 for 20).
            big = tmp_path / "big.wav"
            big.write_bytes(b"\0" * (21 * 2**20))
            page.locator("#audio-input input[type=file]").set_input_files(str(big))
            page.wait_for_function("() => window.toasts.some(t => t.includes('big.wav'))")
            assert "Files up to 20 MB" in page.content()
            assert any(
                "maximum allowed size of 20.0 Mb" in t for t in page.evaluate("window.toasts")
            )
            assert not any("Traceback" in t for t in toasts) and "Traceback" not in page.content()
        finally:
            browser.close()


def test_recording_in_the_browser(chromium, server):
    # Chromium's fake microphone plays a test tone; the page records it as a wav file.
    fake_microphone = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS + fake_microphone)
        try:
            context = browser.new_context(permissions=["microphone"])
            page = context.new_page()
            page.set_default_timeout(60_000)
            page.goto(server.local_url)
            recorder = page.locator("#audio-input")
            recorder.get_by_label("Record audio").click()
            recorder.get_by_role("button", name="Record").first.click()
            page.wait_for_timeout(1500)
            recorder.get_by_role("button", name="Stop").first.click()
            page.wait_for_selector("#audio-input audio", state="attached")
            page.click("#synthesize")
            page.wait_for_selector("#output-audio audio[src]", state="attached")
            assert "s of audio" in page.locator("#input-summary").inner_text()
        finally:
            browser.close()
