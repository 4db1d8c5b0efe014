"""The web demo without a browser: its handlers on real clips and real (tiny) models, and its
HTTP API through gradio_client against a server started here."""

from __future__ import annotations

import io
import json
import logging
import re
import socket
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

pytest.importorskip("gradio", reason="the demo needs gradio (pip install 'vocoder[demo]')")

from app.handlers import (  # noqa: E402
    EXAMPLES_DIR,
    GRIFFIN_LIM,
    NO_COMPARISON,
    DemoSettings,
    VocoderDemo,
    example_files,
    pcm16,
)
from app.plots import mel_image, waveform_image  # noqa: E402
from vocoder.audio import load_audio, save_audio  # noqa: E402
from vocoder.checkpoint import export_model  # noqa: E402
from vocoder.errors import ConfigError, InputError  # noqa: E402
from vocoder.features import MelConfig  # noqa: E402
from vocoder.models import ModelConfig, build_model  # noqa: E402
from vocoder.pretrained import sha256_file  # noqa: E402

SHORT_CLIP = EXAMPLES_DIR / "LJ050-0030.wav"  # 1.9 s, the shortest example
WAVEFLOW, NANOFLOW = "tiny-waveflow", "tiny-nanoflow"  # menu labels of the tiny models


def export_tiny(stem: Path, family: str, seed: int, mel: MelConfig | None = None) -> str:
    """A tiny random model exported as safetensors + json; returns the .safetensors path.

    Every weight is nudged off its initial value: a fresh model's zero-initialised
    projections make each flow the identity, and all models alike. `mel`: its convention
    (default: tacotron2's).
    """
    torch.manual_seed(seed)
    mel = mel or MelConfig()
    config = ModelConfig(
        family=family, n_flows=2, n_layers=2, n_group=8, channels=8,
        sample_rate=mel.sample_rate, hop_length=mel.hop_length, n_mels=mel.n_mels,
    )  # fmt: skip
    if family == "nanoflow":
        config.embedding_dim = 8
    model = build_model(config)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.02 * torch.randn_like(parameter))
    weights, _ = export_model(model, mel, stem)
    return str(weights)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("models")
    return (
        export_tiny(folder / "tiny-waveflow", "waveflow", 0),
        export_tiny(folder / "tiny-nanoflow", "nanoflow", 1),
    )


@pytest.fixture(scope="module")
def demo(tiny_models) -> VocoderDemo:
    return VocoderDemo(DemoSettings(models=tiny_models, device="cpu"))


@pytest.fixture(scope="module")
def short_mel(tmp_path_factory) -> Path:
    """The first 40 frames (0.46 s) of the shipped example mel."""
    mel = np.load(EXAMPLES_DIR / "LJ001-0028.mel.npy")[:, :40]
    path = tmp_path_factory.mktemp("mels") / "short.npy"
    np.save(path, mel)
    return path


def test_the_player_gets_the_levels_a_written_wav_holds(tmp_path):
    """The demo's players quantize as `save_audio` does (x 32768), not x 32767."""
    audio = np.array([-1.0, -0.5, 0.25, 32767 / 32768, 1.0, 0.7], dtype=np.float32)
    rate, levels = pcm16(audio, 22050)
    written = save_audio(tmp_path / "a.wav", audio, 22050)
    assert rate == 22050 and np.array_equal(levels, sf.read(written, dtype="int16")[0])


def test_examples_are_short_test_split_clips(ljspeech_clips):
    test_ids = set((ljspeech_clips / "test.txt").read_text().split())
    files = example_files()
    clips = [p for p in files if p.suffix == ".wav"]
    assert len(clips) == 3 and len(files) == 4
    assert all(p.stem in test_ids for p in clips)
    assert all(load_audio(p).numel() < 6 * 22050 for p in clips)
    assert sum(p.stat().st_size for p in EXAMPLES_DIR.iterdir()) < 1_000_000


def test_clip_through_a_model(demo, tiny_models):
    result = demo.run(str(SHORT_CLIP), None, WAVEFLOW, sigma=0.8, seed=3)
    clip = load_audio(SHORT_CLIP)
    (out,) = result.outputs
    assert abs(out.audio.shape[-1] - clip.numel()) <= 256  # one hop at most
    assert np.isfinite(out.audio).all() and np.abs(out.audio).max() > 0
    assert out.sample_rate == 22050
    assert out.rtf > 0 and out.elapsed > 0
    assert out.parameter_count == demo.cache.get(tiny_models[0]).parameter_count > 1000
    assert "RTF" in out.summary() and "M parameters" in out.summary()
    rate, pcm = out.pcm16()
    assert rate == 22050 and pcm.dtype == np.int16 and pcm.shape == out.audio.shape
    for picture in (out.mel_picture, out.waveform_picture, result.input.mel_picture):
        assert isinstance(picture, Image.Image) and picture.width > 100 and picture.height > 50
    assert result.input.waveform_picture is not None
    assert "LJ050-0030.wav" in result.input.description and not result.warnings
    # the same seed gives the same audio
    again = demo.run(str(SHORT_CLIP), None, WAVEFLOW, sigma=0.8, seed=3)
    np.testing.assert_array_equal(again.outputs[0].audio, out.audio)


def test_long_inputs_go_in_chunks(demo, tiny_models):
    chunked = VocoderDemo(DemoSettings(models=tiny_models, chunk_seconds=0.5))
    whole = demo.run(str(SHORT_CLIP), None, WAVEFLOW, seed=7).outputs[0].audio
    pieces = chunked.run(str(SHORT_CLIP), None, WAVEFLOW, seed=7).outputs[0].audio
    assert pieces.shape == whole.shape
    assert np.abs(pieces - whole).max() < 1e-5  # the engine's joins are seamless (2.4e-7)


@pytest.mark.parametrize("suffix", [".flac", ".ogg", ".mp3"])
def test_other_audio_formats(demo, tiny_models, tmp_path, suffix):
    clip = load_audio(SHORT_CLIP)[:11025]  # 0.5 s
    path = tmp_path / f"speech{suffix}"
    sf.write(path, clip.numpy(), 22050)
    result = demo.run(str(path), None, WAVEFLOW)
    assert abs(result.outputs[0].audio.shape[-1] - 11025) <= 1152  # mp3 pads by a frame
    assert f"speech{suffix}" in result.input.description
    assert "resampled" not in result.input.description  # nothing was done to it


def test_a_mixed_down_and_resampled_upload_says_so(demo, tiny_models, tmp_path):
    clip = load_audio(SHORT_CLIP, sample_rate=44100)[:22050]  # 0.5 s at 44.1 kHz
    path = tmp_path / "stereo.wav"
    sf.write(path, torch.stack([clip, clip], 1).numpy(), 44100)
    result = demo.run(str(path), None, WAVEFLOW)
    assert result.input.description.endswith(
        "(2 channels mixed down to mono, resampled 44100 -> 22050 Hz)"
    )  # as `vocoder synthesize` says it


def test_a_model_is_not_compared_with_itself(demo):
    assert [v for _, v in demo.comparison_choices()] == [NO_COMPARISON, GRIFFIN_LIM, NANOFLOW]
    assert [v for _, v in demo.comparison_choices(NANOFLOW)][-1] == WAVEFLOW
    with pytest.raises(InputError, match="choose another model than the one synthesizing"):
        demo.run(str(SHORT_CLIP), None, WAVEFLOW, compare=WAVEFLOW)


def test_a_mel_file_is_not_compared_across_mel_conventions(
    tmp_path, tiny_models, short_mel, monkeypatch
):
    """A 22.05 kHz mel given to a 16 kHz model played slow and low, unsaid."""
    other = export_tiny(tmp_path / "tiny-16k", "waveflow", 2, MelConfig(sample_rate=16000))
    demo = VocoderDemo(DemoSettings(models=(tiny_models[0], other), device="cpu"))
    vocoded, vocode = [], demo._vocode  # refused before the first model synthesizes (was after)
    monkeypatch.setattr(demo, "_vocode", lambda *a, **k: vocoded.append(a) or vocode(*a, **k))
    with pytest.raises(
        InputError, match=r"is a mel at 22050 Hz, hop 256, 80 bins .*takes 16000 Hz"
    ):
        demo.run(None, str(short_mel), WAVEFLOW, compare="tiny-16k")
    assert vocoded == []
    # audio is made into each model's own mel: that comparison stands
    result = demo.run(str(SHORT_CLIP), None, WAVEFLOW, compare="tiny-16k")
    assert [o.sample_rate for o in result.outputs] == [22050, 16000]


def test_warm_up_loads_the_default_model_before_the_first_visitor(tiny_models):
    demo = VocoderDemo(DemoSettings(models=tiny_models, device="cpu"))
    assert len(demo.cache) == 0
    demo.warm_up()
    assert len(demo.cache) == 1 and demo.cache.get(tiny_models[0]) is demo.cache.get(tiny_models[0])


def test_compare_two_models_and_griffin_lim(demo, tiny_models, short_mel):
    result = demo.run(None, str(short_mel), WAVEFLOW, compare=NANOFLOW, sigma=0.6)
    assert [o.parameter_count is not None for o in result.outputs] == [True, True]
    assert result.outputs[0].audio.shape == result.outputs[1].audio.shape == (40 * 256,)
    assert not np.array_equal(result.outputs[0].audio, result.outputs[1].audio)
    assert result.input.waveform_picture is None and result.input.pcm16() is None

    result = demo.run(None, str(short_mel), WAVEFLOW, compare=GRIFFIN_LIM)
    neural, griffin_lim = result.outputs
    assert griffin_lim.parameter_count is None and "Griffin-Lim" in griffin_lim.summary()
    assert abs(griffin_lim.audio.shape[-1] - neural.audio.shape[-1]) <= 256
    assert np.abs(griffin_lim.audio).max() > 1e-3


def test_each_model_is_loaded_once(demo, tiny_models):
    first = demo.cache.get(tiny_models[0])
    demo.run(str(SHORT_CLIP), None, WAVEFLOW)
    assert demo.cache.get(tiny_models[0]) is first


def _write(path: Path, content) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        np.save(path, content)
    return path


def _wav_bytes(samples: int) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros(samples, np.float32), 22050, format="WAV")
    return buffer.getvalue()


BAD_FILES = [
    ("notes.wav", b"this is not audio" * 10, "notes.wav: not a readable audio file"),
    ("empty.wav", b"", "empty.wav: empty file"),
    ("blip.wav", _wav_bytes(100), "blip.wav: is too short (0.005 s); this demo needs at least"),
    ("frame.npy", np.full((80, 1), -5.0, np.float32), "frame.npy: is too short (0.012 s)"),
    ("wrong.npy", np.zeros((3, 50), np.float32), "wrong.npy: expected 80 mel bins"),
    ("flat.npy", np.zeros(80, np.float32), "flat.npy: expected a mel [80, frames]"),
    ("nan.npy", np.full((80, 20), np.nan, np.float32), "nan.npy: contains 1600 NaN"),
    ("garbage.pt", b"\x00\x01garbage", "garbage.pt: not a mel file: neither a zip nor a pickle"),
]


@pytest.mark.parametrize("name, content, message", BAD_FILES, ids=[row[0] for row in BAD_FILES])
def test_bad_files_give_a_readable_message(demo, tiny_models, tmp_path, name, content, message):
    path = _write(tmp_path / name, content)
    audio, mel = (None, str(path)) if name.endswith((".npy", ".pt")) else (str(path), None)
    with pytest.raises(InputError) as caught:
        demo.run(audio, mel, WAVEFLOW)
    assert str(caught.value).startswith(message)
    assert str(tmp_path) not in str(caught.value)  # the visitor never sees server paths


def test_mels_far_from_the_convention(demo, tiny_models, tmp_path):
    # a log10 mel: synthesized, with a warning that names a conversion visitors can run
    log10 = _write(tmp_path / "log10.npy", np.full((80, 8), -5.0, np.float32))
    result = demo.run(None, str(log10), WAVEFLOW)
    (warning,) = result.warnings
    assert warning.startswith("log10.npy: mel floor -5.00") and "looks like log10" in warning
    assert "this page reads natural-log mels only" in warning
    assert "`vocoder synthesize --mel-format log10`" in warning
    # a linear mel too loud for exp(): Griffin-Lim refuses it with a message
    huge = _write(tmp_path / "huge.npy", np.full((80, 8), 1e30, np.float32))
    with pytest.raises(InputError, match="huge.npy: Griffin-Lim cannot invert this mel"):
        demo.run(None, str(huge), WAVEFLOW, compare=GRIFFIN_LIM)


def test_range_warnings_go_to_the_page_not_the_server_log(demo, tmp_path, caplog):
    # noise at a level whose mel floor sits near -5: audio, so no mel-format advice
    noise = tmp_path / "noise.wav"
    save_audio(noise, 0.1 * torch.randn(22050, generator=torch.Generator().manual_seed(0)), 22050)
    caplog.set_level(logging.WARNING)
    result = demo.run(str(noise), None, WAVEFLOW, compare=NANOFLOW)
    assert result.warnings == [] and caplog.records == []
    # a mel file's warning shows once, on the page
    log10 = _write(tmp_path / "log10.npy", np.full((80, 8), -5.0, np.float32))
    result = demo.run(None, str(log10), WAVEFLOW, compare=NANOFLOW)
    assert len(result.warnings) == 1 and caplog.records == []


def test_limits_and_missing_choices(tiny_models, tmp_path):
    strict = VocoderDemo(DemoSettings(models=tiny_models, max_seconds=1.0, max_upload_mb=0.1))
    with pytest.raises(InputError, match=r"LJ050-0030.wav: is 1.9 s long; .* up to 1 s"):
        strict.run(str(SHORT_CLIP), None, WAVEFLOW)
    with pytest.raises(InputError, match=r"LJ050-0115.wav: is 0.2 MB; .* up to 0.1 MB"):
        strict.run(str(EXAMPLES_DIR / "LJ050-0115.wav"), None, WAVEFLOW)
    with pytest.raises(InputError, match="upload or record speech"):
        strict.run(None, None, WAVEFLOW)
    with pytest.raises(InputError, match="choose a model"):
        strict.run(str(SHORT_CLIP), None, None)
    # only the models the server was started with: never a path a request names
    with pytest.raises(InputError, match=r"no model called '/etc/passwd' here \(known: tiny"):
        strict.run(str(SHORT_CLIP), None, "/etc/passwd")
    half_second = tmp_path / "half.wav"
    save_audio(half_second, 0.1 * torch.sin(torch.arange(11025) * 0.1), 22050)
    with pytest.raises(InputError, match=r"sigma: must lie in \[0, 2\], got -1"):
        strict.run(str(half_second), None, WAVEFLOW, sigma=-1)
    with pytest.raises(InputError, match="seed: expected a number, got None"):
        strict.run(str(half_second), None, WAVEFLOW, seed=None)
    assert len(strict.cache) == 0  # nothing was loaded for inputs refused up front


def test_model_menu_from_settings_and_registry(tiny_models, tmp_path, monkeypatch):
    given = VocoderDemo(DemoSettings(models=tiny_models))
    assert given.model_choices() == [(WAVEFLOW, WAVEFLOW), (NANOFLOW, NANOFLOW)]
    assert given.models == {WAVEFLOW: tiny_models[0], NANOFLOW: tiny_models[1]}
    assert given.default_model() == WAVEFLOW
    twice = VocoderDemo(DemoSettings(models=(tiny_models[0], tiny_models[0])))
    assert list(twice.models) == [WAVEFLOW, f"{WAVEFLOW} (2)"]
    assert [v for _, v in given.comparison_choices()][:2] == ["none", GRIFFIN_LIM]

    # A registry beside two shipped models (the second one the default), one model hosted
    # elsewhere and one that is nowhere: shipped ones first, the default leading.
    def entry(name, weights, **extra):
        files = []
        for suffix in (".safetensors", ".json"):
            file = Path(weights).with_suffix(suffix)
            (tmp_path / f"{name}{suffix}").write_bytes(file.read_bytes())
            files.append(
                {
                    "name": f"{name}{suffix}",
                    "sha256": sha256_file(file),
                    "size": file.stat().st_size,
                }
            )
        common = {"description": "tiny", "family": "waveflow", "parameters": 1000, "data": "none"}
        return {"name": name, **common, "files": files, **extra}

    hosted = entry("hosted", tiny_models[0], url="https://example.invalid/models")
    nowhere = entry("nowhere", tiny_models[0])
    for name in ("hosted", "nowhere"):
        for suffix in (".safetensors", ".json"):
            (tmp_path / f"{name}{suffix}").unlink()
    models = [
        entry("first", tiny_models[0]),
        hosted,
        entry("best", tiny_models[1], default=True),
        nowhere,
    ]
    registry = tmp_path / "registry.json"
    registry.write_text(json.dumps({"format": 1, "models": models}))
    monkeypatch.setenv("VOCODER_REGISTRY", str(registry))
    monkeypatch.setenv("VOCODER_CACHE", str(tmp_path / "cache"))
    menu = VocoderDemo(DemoSettings()).model_choices()
    assert [value for _, value in menu] == ["best", "first", "hosted"]
    assert menu[0][0] == "best (0.00 M parameters)"
    assert menu[2][0] == "hosted (0.00 M parameters), downloaded on first use"


def test_pictures():
    mel = torch.full((80, 100), -11.5)
    mel[:10] = 2.0  # loud low bins: bright at the bottom of the picture
    picture = np.asarray(mel_image(mel, seconds=1.16, width=200, height=80))
    assert picture.shape == (80 + 16, 200, 3)
    assert picture[75, 100].sum() > 3 * 200 and picture[5, 100].sum() < 100
    wave = np.asarray(waveform_image(torch.zeros(1000), 22050, width=100, height=21))
    ink = (wave[:21] != 255).any(axis=2)
    assert ink[10].all() and not ink[0].any()  # silence is a flat line in the middle


def test_demo_command_line(tmp_path, monkeypatch, capsys):
    from vocoder.cli import build_parser, main

    args = build_parser("demo").parse_args(["demo"])
    assert (args.host, args.port, args.model, args.device) == ("127.0.0.1", 7860, None, "auto")
    assert (args.max_upload_mb, args.max_seconds, args.concurrency) == (20.0, 60.0, 1)
    args = build_parser("demo").parse_args(
        ["demo", "--model", "a", "b.safetensors", "--model", "c"]
    )
    assert args.model == ["a", "b.safetensors", "c"]

    assert main(["demo", "--max-seconds", "0"]) == 2
    assert "--max-seconds must be positive" in capsys.readouterr().err
    registry = tmp_path / "registry.json"
    registry.write_text(json.dumps({"format": 1, "models": []}))
    monkeypatch.setenv("VOCODER_REGISTRY", str(registry))
    assert main(["demo", "--port", str(free_port())]) == 2
    assert "no models to serve" in capsys.readouterr().err
    assert main(["demo", "--model", "no-such-model"]) == 2
    assert re.search(r"no-such-model: .*not a pretrained model", capsys.readouterr().err)
    with socket.create_server(("127.0.0.1", 0)) as taken:  # another server holds the port
        port = taken.getsockname()[1]
        assert main(["demo", "--port", str(port)]) == 2
    assert capsys.readouterr().err == (
        f"error: cannot listen on 127.0.0.1:{port} (Address already in use); pass --port with "
        "a free port\n"
    )


def test_demo_checks_its_models_and_device_before_serving(
    tiny_models, tmp_path, monkeypatch, capsys
):
    from vocoder.cli import main
    from vocoder.cli.demo import demo_package

    app = demo_package()  # what `vocoder demo` serves: vocoder.app installed, app/ in place
    served = []
    monkeypatch.setattr(app, "launch", lambda settings, **options: served.append(options))
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    missing = tmp_path / "missing.safetensors"
    model = ["--model", tiny_models[0], "--device", "cpu"]
    outside = "pass --host with an address"
    # each one line naming the problem, and no server that fails every visitor's request
    for argv, message in [
        (["--model", str(broken)], f"error: {broken}: not a PyTorch checkpoint"),
        (["--model", str(missing)], f"error: {missing}: no such file\n"),
        (["--model", tiny_models[0], "--device", "bogus"], "error: unknown device 'bogus'"),
        # NaN and infinity slip past a `<= 0` check: NaN would turn the limit off
        ([*model, "--max-seconds", "nan"], "error: --max-seconds must be positive and finite"),
        ([*model, "--max-upload-mb", "nan"], "error: --max-upload-mb must be positive and fin"),
        ([*model, "--max-upload-mb", "inf"], "error: --max-upload-mb must be positive and fin"),
        ([*model, "--port", "0"], "error: --port must be from 1 to 65535, got 0\n"),
        ([*model, "--port", "-1"], "error: --port must be from 1 to 65535, got -1\n"),
        ([*model, "--port", "70000"], "error: --port must be from 1 to 65535, got 70000\n"),
        ([*model, "--host", "999.1.1.1"], "error: --host 999.1.1.1: not an address to listen"),
        ([*model, "--host", "192.0.2.1"], "error: --host 192.0.2.1: cannot listen there"),
    ]:
        assert main(["demo", *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith(message) and err.count("\n") == 1, err
        assert ("--host" not in argv or outside in err) and "--port with" not in err, err
        assert served == []
    with pytest.raises(ConfigError, match="max_seconds must be positive and finite, got nan"):
        DemoSettings(max_seconds=float("nan"))
    # a free port: the command checks that it can listen before it loads anything
    assert main(["demo", *model, "--port", str(free_port())]) == 0
    (options,) = served
    assert len(options["demo"].cache) == 1  # loaded before the first visitor
    # an IPv6 address is checked as one, and its URL is bracketed
    if socket.has_ipv6 and _can_listen("::1"):
        port = str(free_port())
        assert main(["demo", *model, "--host", "::1", "--port", port]) == 0
        assert f"http://[::1]:{port} " in capsys.readouterr().out
        assert served[-1]["host"] == "[::1]"  # bare, Gradio's own URL check failed


def _can_listen(host: str) -> bool:
    try:
        with socket.create_server((host, 0), family=socket.AF_INET6):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")
def test_http_api(tiny_models, short_mel, tmp_path):
    from gradio_client import Client, handle_file

    from app.main import launch

    settings = DemoSettings(models=tiny_models, device="cpu", max_upload_mb=1)
    server = launch(settings, port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        assert server.local_url.startswith("http://127.0.0.1:")  # loopback unless told
        # Gradio's queue bounds the work: one synthesis at a time (launch's default), at most
        # 64 waiting; the other events only move values within the page.
        assert (server._queue.default_concurrency_limit, server._queue.max_size) == (1, 64)
        queued = [f.api_name for f in server.fns.values() if f.queue]
        assert queued == ["synthesize"]
        client = Client(server.local_url, verbose=False, download_files=str(tmp_path / "got"))
        # inputs: audio, mel file, model, compare with, sigma, denoise, seed
        values = client.predict(
            handle_file(str(SHORT_CLIP)), None, WAVEFLOW, "none", 0.8, 0.0, 0,
            api_name="/synthesize",
        )  # fmt: skip
        texts, players, mels, waves = values[0:3], values[3:6], values[6:9], values[9:12]
        assert "LJ050-0030.wav" in texts[0] and "RTF" in texts[1]
        for file in (players[0], players[1], mels[0], mels[1], waves[1]):
            assert Path(file).is_file() and Path(file).stat().st_size > 1000
        output = load_audio(players[1])
        assert abs(output.numel() - load_audio(SHORT_CLIP).numel()) <= 256
        assert players[2] is None and mels[2] is None  # no comparison asked for

        # the API's description: either file may be left out (a mel file needs no audio), and
        # no example file of another kind (Gradio's own is a PDF)
        api = client.view_api(print_info=False, return_format="dict")
        parameters = api["named_endpoints"]["/synthesize"]["parameters"]
        assert [p["parameter_name"] for p in parameters][:2] == ["audio", "mel_file"]
        assert all(p["parameter_has_default"] for p in parameters)
        assert "pdf" not in str([p["example_input"] for p in parameters])
        values = client.predict(mel_file=handle_file(str(short_mel)), api_name="/synthesize")
        assert "40 frames" in values[0] and "RTF" in values[1]

        bad = _write(tmp_path / "nan.npy", np.full((80, 20), np.nan, np.float32))
        with pytest.raises(Exception, match="nan.npy: contains 1600 NaN"):
            client.predict(
                None, handle_file(str(bad)), WAVEFLOW, "none", 0.8, 0.0, 0,
                api_name="/synthesize",
            )  # fmt: skip
        big = _write(tmp_path / "big.wav", b"RIFF" + bytes(1_500_000))
        with pytest.raises(Exception, match="(?i)too large|exceeds|maximum"):
            client.predict(
                handle_file(str(big)), None, WAVEFLOW, "none", 0.8, 0.0, 0,
                api_name="/synthesize",
            )  # fmt: skip
        # the server keeps serving after an error
        values = client.predict(
            None, handle_file(str(short_mel)), WAVEFLOW, GRIFFIN_LIM, 0.8, 0.0, 0,
            api_name="/synthesize",
        )  # fmt: skip
        assert "40 frames" in values[0] and "Griffin-Lim" in values[2]
        assert Path(values[5]).is_file()  # the comparison's audio
    finally:
        server.close()


@pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")
def test_refused_requests_get_a_message(tiny_models, tmp_path, capfd):
    """Gradio refuses a server path, or a file value that is not a file, before a handler
    runs; the answer says why in one line (it used to be `{"error": null}`)."""
    import httpx
    from gradio_client import Client, handle_file

    from app.main import launch

    settings = DemoSettings(models=tiny_models, device="cpu")
    server = launch(settings, port=free_port(), prevent_thread_lock=True, quiet=True)
    secret = _write(tmp_path / "secret.wav", b"not for visitors")
    try:
        # The HTTP API as a script uses it: a FileData naming a file on the server's disk.
        server_path = {"path": str(secret), "meta": {"_type": "gradio.FileData"}}
        for inputs in (
            [server_path, None, WAVEFLOW, "none", 0.8, 0.0, 0],
            [None, {**server_path, "path": str(tmp_path / "x.npy")}, WAVEFLOW, "none", 0.8, 0.0, 0],
        ):
            url = f"{server.local_url}gradio_api/call/synthesize"
            event = httpx.post(url, json={"data": inputs}, timeout=30).json()["event_id"]
            stream = httpx.get(f"{url}/{event}", timeout=60).text
            assert "event: error" in stream
            payload = json.loads(stream.split("event: error\ndata: ", 1)[1].splitlines()[0])
            message = payload["error"]
            assert message and "\n" not in message
            assert "must be uploaded" in message and str(tmp_path) not in message
        # values Gradio's checks let through to crash, or answered with {"error": null}
        url_file = {"path": "https://example.com/a.wav", "meta": {"_type": "gradio.FileData"}}
        for inputs, expected in (
            ([None, None], "The request has 2 input values; this takes 7: Speech"),
            ([None, None, WAVEFLOW, "none", "abc", 0.0, 0], "Temperature σ .*: expected a"),
            ([None, None, WAVEFLOW, "none", 0.8, 0.0, None], r"Seed .*: expected a number"),
            ([url_file, None, WAVEFLOW, "none", 0.8, 0.0, 0], "a URL is refused"),
        ):
            url = f"{server.local_url}gradio_api/call/synthesize"
            event = httpx.post(url, json={"data": inputs}, timeout=30).json()["event_id"]
            stream = httpx.get(f"{url}/{event}", timeout=60).text
            payload = json.loads(stream.split("event: error\ndata: ", 1)[1].splitlines()[0])
            assert re.search(expected, payload["error"] or ""), payload
        # gradio_client passes a value without FileData's "meta" on as it is.
        client = Client(server.local_url, verbose=False)
        with pytest.raises(Exception, match="inputs are malformed") as caught:
            client.predict(
                {"path": str(SHORT_CLIP)}, None, WAVEFLOW, "none", 0.8, 0.0, 0,
                api_name="/synthesize",
            )  # fmt: skip
        assert "\n" not in str(caught.value)
        # Gradio's own range checks are refusals too: no stack trace in the server's log
        with pytest.raises(Exception, match="Value 2.0 is greater than maximum value 1.2"):
            client.predict(
                handle_file(str(SHORT_CLIP)), None, WAVEFLOW, "none", 2.0, 0.0, 0,
                api_name="/synthesize",
            )  # fmt: skip
        # the server keeps serving, and logged a refusal, not a stack trace
        values = client.predict(
            handle_file(str(SHORT_CLIP)), None, WAVEFLOW, "none", 0.8, 0.0, 0,
            api_name="/synthesize",
        )  # fmt: skip
        assert "RTF" in values[1]
        assert "Traceback" not in capfd.readouterr().err
    finally:
        server.close()
