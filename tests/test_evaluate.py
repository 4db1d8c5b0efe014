"""Copy-synthesis metrics, Griffin-Lim, the evaluation loop and `vocoder evaluate`."""

from __future__ import annotations

import csv
import json
import logging
import math

import pytest
import torch

from vocoder import metrics
from vocoder.audio import load_audio, save_audio
from vocoder.checkpoint import checkpoint_path, save_checkpoint
from vocoder.cli import main
from vocoder.cli.evaluate import format_table
from vocoder.config import to_dict
from vocoder.errors import InputError
from vocoder.evaluate import (
    EvalReport,
    FileScores,
    batched_log_prob,
    evaluate,
    failed_synthesis,
    quality,
    write_report,
)
from vocoder.features import MelConfig, MelSpectrogram
from vocoder.griffin_lim import griffin_lim
from vocoder.models import ModelConfig, build_model

CLIP = "LJ050-0030"  # a 1.9 s test clip: evaluation may read test clips, training never


@pytest.fixture(scope="module")
def clip(ljspeech_clips):
    audio = load_audio(ljspeech_clips / "wavs" / f"{CLIP}.wav", sample_rate=22050)
    mel = MelSpectrogram(MelConfig())(audio)
    return audio, mel


def score(clip, synthesized):
    audio, mel = clip
    return quality(audio, synthesized, mel, MelSpectrogram(MelConfig()), 22050)


def test_recording_against_itself_is_perfect(clip):
    s = score(clip, clip[0].clone())
    assert s["log_mel_l1"] == 0.0 and s["mcd_db"] == 0.0
    assert s["stoi"] > 0.999 and s["pesq_wb"] > 4.5


def test_griffin_lim_is_a_plausible_floor(clip):
    audio, mel = clip
    floor = griffin_lim(mel, MelConfig(), length=audio.numel())
    assert floor.shape == audio.shape and floor.dtype == torch.float32
    s = score(clip, floor)
    # the reference figures on the whole test split: PESQ-wb 3.25, STOI 0.97, L1 0.115
    assert 0.05 < s["log_mel_l1"] < 0.2
    assert 2.7 < s["pesq_wb"] < 3.9
    assert 0.93 < s["stoi"] < 0.995
    assert 0.5 < s["mcd_db"] < 1.6  # 0.97 (6.1 in the orthonormal DCT's scale: sqrt(40) x)


def test_white_noise_scores_badly(clip):
    noise = 0.1 * torch.randn(clip[0].shape, generator=torch.Generator().manual_seed(0))
    s = score(clip, noise)
    assert s["stoi"] < 0.5 and s["pesq_wb"] < 1.5
    assert s["log_mel_l1"] > 1.0 and s["mcd_db"] > 2.0  # 2.77


def test_stoi_is_undefined_where_pystoi_has_too_few_speech_frames(clip):
    audio = clip[0]
    short = audio[11025 : 11025 + 6615]  # 0.3 s: pystoi would warn and return 1e-5
    assert math.isnan(metrics.stoi(short, short.clone(), 22050))
    silent = torch.zeros(22050)
    assert math.isnan(metrics.stoi(silent, silent.clone(), 22050))
    assert metrics.stoi(audio, audio.clone(), 22050) > 0.999  # a whole clip still scores


def test_mcd_ignores_overall_level_but_l1_does_not(clip):
    mel = clip[1]
    louder = mel + 0.5  # a gain: only c0, which MCD leaves out, changes
    assert metrics.mel_cepstral_distortion(mel, louder) == pytest.approx(0.0, abs=1e-5)
    assert metrics.log_mel_l1(mel, louder) == pytest.approx(0.5)
    shifted = mel.clone()
    shifted[40:] += 1.0  # a spectral tilt changes the cepstrum
    assert metrics.mel_cepstral_distortion(mel, shifted) > 1.0


def test_mcd_has_sptks_cepstral_scale(clip):
    """In SPTK's convention ln P(w) = c_0 + 2 sum_d c_d cos(d w): a magnitude mel whose ln
    changes by a cos(pi (2n + 1) / 2N) changes ln P by twice that, so c_1 by a, and MCD
    is (10 / ln 10) sqrt(2) a per frame (the orthonormal DCT read sqrt(N / 2) times more)."""
    mel = clip[1].double()
    n = torch.arange(mel.shape[0], dtype=torch.float64)
    ripple = 0.1 * torch.cos(torch.pi * (2 * n + 1) / (2 * mel.shape[0]))
    expected = 10 / math.log(10) * math.sqrt(2) * 0.1
    assert metrics.mel_cepstral_distortion(mel, mel + ripple[:, None]) == pytest.approx(expected)


def test_pesq_input_is_resampled_without_aliasing():
    """A 9 kHz tone has no place at 16 kHz: a weak filter folds it to 7 kHz (torchaudio's
    default sinc: -17 dB), which PESQ then hears."""
    t = torch.arange(22050, dtype=torch.float64) / 22050
    at_16k = metrics._at_16k(torch.sin(2 * torch.pi * 9000 * t), 22050)
    spectrum = torch.fft.rfft(
        torch.from_numpy(at_16k) * torch.hann_window(16000, dtype=torch.float64)
    )
    alias = spectrum.abs()[7000] / (16000 / 4)  # 1 Hz bins; a full-scale tone reads 1
    assert at_16k.shape == (16000,) and 20 * math.log10(alias) < -60


def test_griffin_lim_uncentered_preset_keeps_the_length(clip):
    config = MelConfig.preset("hifigan")
    audio = clip[0][:22050]
    mel = MelSpectrogram(config)(audio)
    floor = griffin_lim(mel, config, n_iter=8, length=audio.numel())
    assert floor.shape == audio.shape
    assert metrics.log_mel_l1(mel, MelSpectrogram(config)(floor)) < 0.5


@pytest.mark.parametrize("length", [40 * 256, 40 * 256 - 1, 41 * 256 + 7])
def test_griffin_lim_pads_or_trims_to_any_length(length):
    mel = torch.randn(80, 40) - 5.0
    assert griffin_lim(mel, MelConfig(), n_iter=2, length=length).shape == (length,)


def tiny_model():
    torch.manual_seed(0)
    return build_model(ModelConfig(n_flows=2, n_layers=2, n_group=8, channels=8))


def test_evaluate_reports_ll_and_both_systems(ljspeech_clips, tmp_path):
    files = [ljspeech_clips / "wavs" / f"{CLIP}.wav"]
    report = evaluate(tiny_model(), MelConfig(), files, sigma=0.8, audio_dir=tmp_path / "wav")
    summary = report.summary()
    # an untrained model is an identity flow: LL = mean log N(x; 0, 1), about -0.92
    audio = load_audio(files[0])
    n = audio.numel() // 8 * 8
    expected = float(-0.5 * math.log(2 * math.pi) - 0.5 * audio[:n].double().square().mean())
    assert summary["ll"] == pytest.approx(expected, abs=1e-4)
    assert set(summary) >= {"ll", "files", "model", "griffin_lim"}
    assert summary["griffin_lim"]["stoi"] > 0.9 > summary["model"]["stoi"]
    assert summary["model"]["rtf"] > 0
    assert (tmp_path / "wav" / f"{CLIP}.wav").is_file()
    assert (tmp_path / "wav" / f"{CLIP}.griffin_lim.wav").is_file()
    only_ll = evaluate(tiny_model(), MelConfig(), files, synthesis=False)
    assert only_ll.summary()["ll"] == pytest.approx(summary["ll"]) and "model" not in (
        only_ll.summary()
    )


def test_evaluate_uncentered_preset_scores_the_samples_the_mel_covers(ljspeech_clips):
    # hifigan mels have len // hop frames: the last < hop samples have no frame of their own
    features = MelConfig.preset("hifigan")
    files = [ljspeech_clips / "wavs" / f"{CLIP}.wav"]
    length = load_audio(files[0]).numel()
    covered = features.num_frames(length) * features.hop_length
    assert covered < length
    report = evaluate(tiny_model(), features, files, sigma=0.8)
    summary = report.summary()
    assert report.files[0].duration_s == pytest.approx(covered / 22050)
    assert math.isfinite(summary["ll"]) and summary["griffin_lim"]["stoi"] > 0.9
    # a perfect vocoder scores 0: the reference mel is of the samples scored (that of the
    # whole recording differed in its last frame, by 1e-4 in log-mel L1)
    recording = load_audio(files[0])
    perfect = evaluate(
        tiny_model(), features, files, synthesize=lambda cond, sigma, seed: recording
    )
    scores = perfect.files[0].systems["model"]
    assert scores["log_mel_l1"] == 0.0 and scores["mcd_db"] == 0.0


def trained_like(family: str) -> torch.nn.Module:
    """A tiny model whose flows are far from the identity (random final projections)."""
    torch.manual_seed(1)
    extra = {"family": "nanoflow", "embedding_dim": 8} if family == "nanoflow" else {}
    model = build_model(ModelConfig(n_flows=2, n_layers=3, n_group=8, channels=8, **extra))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "projection" in name:
                p.normal_(0.0, 0.3)
    return model.to_inference_form()


@pytest.mark.parametrize("family", ["waveflow", "nanoflow"])
def test_batched_ll_equals_each_utterance_alone(ljspeech_clips, family, monkeypatch):
    """Whole test clips of different lengths in one padded pass: the padding changes nothing.

    Unmasked (the model's `_forward_flows` without its column mask), the zero padding leaks
    into the last columns through the non-causal dilated convolutions and moves the shorter
    clips' LL by about 1e-3; masked, it is float noise.
    """
    model = trained_like(family)
    names = (ljspeech_clips / "test.txt").read_text().split()[:3]
    to_mel = MelSpectrogram(MelConfig())
    # cut to unequal lengths that are not whole columns, so trimming is exercised too
    audios = [
        load_audio(ljspeech_clips / "wavs" / f"{n}.wav")[: 8000 + 2301 * i + 3]
        for i, n in enumerate(names)
    ]
    mels = [to_mel(a) for a in audios]
    with torch.no_grad():
        alone = [
            float(model.log_prob(a[None], m[None])[0]) for a, m in zip(audios, mels, strict=True)
        ]
    calls = []
    forward_flows = model._forward_flows

    def spy(audio, cond, mask=None):
        calls.append((audio.shape, mask is not None))
        return forward_flows(audio, cond, mask)

    monkeypatch.setattr(model, "_forward_flows", spy)
    with torch.no_grad():
        batched = batched_log_prob(model, audios, mels)
    assert calls == [(torch.Size([3, (8000 + 2 * 2301 + 3) // 8 * 8]), True)]  # one pass
    assert len({round(v, 3) for v in alone}) == 3  # distinct figures, not a constant
    assert batched == pytest.approx(alone, abs=2e-6)
    monkeypatch.setattr(model, "_forward_flows", lambda a, c, mask: forward_flows(a, c))
    with torch.no_grad():
        unmasked = batched_log_prob(model, audios, mels)
    assert unmasked[2] == pytest.approx(alone[2], abs=2e-6)  # the longest has no padding
    assert min(abs(u - a) for u, a in zip(unmasked[:2], alone[:2], strict=True)) > 1e-4


def test_batched_ll_scores_waveglow_one_utterance_at_a_time(monkeypatch):
    """Families that cannot mask padding (WaveGlow) fall back to one pass per utterance."""
    torch.manual_seed(0)
    config = ModelConfig(
        family="waveglow", n_flows=4, n_layers=2, channels=8, n_early_every=2, n_early_size=2
    )
    model = build_model(config).to_inference_form()
    audios = [0.1 * torch.randn(n) for n in (2000, 1203)]
    mels = [torch.randn(80, n // 256 + 1) - 5.0 for n in (2000, 1203)]
    with torch.no_grad():
        alone = [
            float(model.log_prob(a[None], m[None])[0]) for a, m in zip(audios, mels, strict=True)
        ]
        calls = []
        forward_flows = model._forward_flows
        monkeypatch.setattr(
            model, "_forward_flows", lambda a, c: calls.append(a.shape) or forward_flows(a, c)
        )
        batched = batched_log_prob(model, audios, mels)
    assert calls == [torch.Size([1, 2000]), torch.Size([1, 1200])]
    assert batched == pytest.approx(alone, abs=2e-6)


def test_evaluate_batch_size_does_not_change_the_figures(ljspeech_clips):
    files = [ljspeech_clips / "wavs" / f"{n}.wav" for n in ("LJ050-0030", "LJ001-0026")]
    one = evaluate(trained_like("waveflow"), MelConfig(), files, synthesis=False, batch_size=1)
    two = evaluate(trained_like("waveflow"), MelConfig(), files, synthesis=False, batch_size=2)
    assert [f.name for f in two.files] == [f.name for f in one.files]
    assert [f.ll for f in two.files] == pytest.approx([f.ll for f in one.files], abs=2e-6)
    assert two.info["batch_size"] == 2


def test_a_failed_synthesis_is_said_and_left_out_of_the_means_by_count(
    ljspeech_clips, caplog, tmp_path
):
    """NaN samples (a diverged model) make every quality score NaN, even STOI, which a NaN
    in a quiet stretch leaves at 0.99999; silence leaves PESQ undefined. Both are said, and
    the table says how many files each mean is of."""
    files = [ljspeech_clips / "wavs" / f"{n}.wav" for n in ("LJ050-0030", "LJ001-0026")]

    def synthesize(cond, sigma, seed):
        audio = 0.05 * torch.randn(cond.shape[-1] * 256, generator=torch.Generator().manual_seed(0))
        if seed == 7:  # the first file: NaN in its leading silence
            audio[:10] = math.nan
        return audio

    report = evaluate(
        tiny_model(), MelConfig(), files, seed=7, synthesize=synthesize, audio_dir=tmp_path
    )
    assert (
        "LJ050-0030: the model's audio has 10 sample(s) that are not finite (NaN or inf): not "
        "scored or written" in caplog.text
    )
    # the failed file's audio is not written (NaN cannot be); the rest are
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == [
        "LJ001-0026.griffin_lim.wav", "LJ001-0026.wav", "LJ050-0030.griffin_lim.wav"
    ]  # fmt: skip
    first, second = (f.systems["model"] for f in report.files)
    assert all(math.isnan(first[m]) for m in ("log_mel_l1", "mcd_db", "pesq_wb", "stoi"))
    assert all(math.isfinite(second[m]) for m in ("log_mel_l1", "mcd_db", "stoi"))
    summary = report.summary()
    assert summary["model"]["stoi"] == second["stoi"]
    assert summary["model"]["scored"]["stoi"] == 1 and summary["griffin_lim"]["scored"]["stoi"] == 2
    table = format_table(report)
    assert "model STOI: the mean of 1 of 2 file(s); undefined for the others" in table
    assert "griffin-lim STOI" not in table
    silent = failed_synthesis(torch.zeros(100))
    assert silent.scored and silent.problem == "is silent: PESQ is undefined for it"
    assert failed_synthesis(torch.ones(100)) is None


def test_write_report_is_atomic_json_and_csv(tmp_path):
    files = [
        FileScores("a", 1.0, 2.0, {"model": {"stoi": 0.5, "pesq_wb": math.nan}}),
        FileScores("b", 2.0, 4.0, {"model": {"stoi": 0.7, "pesq_wb": 2.0}}),
    ]
    report = EvalReport(files, {"sigma": 0.8})
    json_path, csv_path = write_report(report, tmp_path / "report.json")
    data = json.loads(json_path.read_text())
    assert data["summary"]["ll"] == 3.0
    assert data["summary"]["model"]["stoi"] == pytest.approx(0.6)
    assert data["summary"]["model"]["pesq_wb"] == 2.0  # NaNs are left out of means
    assert data["summary"]["model"]["scored"] == {"stoi": 2, "pesq_wb": 1} | {
        m: 0 for m in ("log_mel_l1", "mcd_db", "rtf")
    }
    assert data["files"][0]["systems"]["model"]["pesq_wb"] is None  # and are null in JSON
    rows = list(csv.DictReader(csv_path.open()))
    assert [r["name"] for r in rows] == ["a", "b"] and rows[0]["pesq_wb"] == ""
    with pytest.raises(InputError, match="refusing to overwrite"):
        write_report(report, json_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.csv", "report.json"]


def test_cli_evaluate_and_average(ljspeech_clips, tmp_path, capsys):
    run = tmp_path / "run"
    for step, seed in ((1, 0), (2, 1)):
        torch.manual_seed(seed)
        model = build_model(ModelConfig(n_flows=2, n_layers=2, n_group=8, channels=8))
        state = {
            "config": {"model": to_dict(model.config), "features": to_dict(MelConfig())},
            "model": model.state_dict(),
            "step": step,
        }
        save_checkpoint(checkpoint_path(run, step), state)
    filelist = tmp_path / "test.txt"
    filelist.write_text(f"{ljspeech_clips / 'wavs' / CLIP}.wav\n")
    out = tmp_path / "eval" / "report.json"
    args = ["evaluate", "--checkpoint", str(run), "--filelist", str(filelist), "--device", "cpu"]
    assert main([*args, "--no-synthesis", "--out", str(out), "--average", "2"]) == 0
    printed = capsys.readouterr().out
    assert "test LL" in printed and "over 1 file(s)" in printed
    data = json.loads(out.read_text())
    assert data["info"]["averaged"] == ["step-00000001.pt", "step-00000002.pt"]
    assert data["info"]["batch_size"] == 1  # on a CPU: one clip per pass (see the README)
    assert data["info"]["precision"] == "fp32"
    assert math.isfinite(data["summary"]["ll"])
    assert main([*args, "--no-synthesis", "--out", str(out)]) == 2  # no silent overwrite
    assert "refusing to overwrite" in capsys.readouterr().err
    assert main([*args, "--average", "3"]) == 2
    assert "only 2 checkpoint(s)" in capsys.readouterr().err


def test_cli_evaluate_guards_its_outputs_and_inputs(ljspeech_clips, tmp_path, capsys):
    """--audio-dir wrote over existing files (the recordings too); a bad file late in the
    list threw away the work before it; --out x.csv had its CSV overwritten by the JSON."""
    model_file = tmp_path / "tiny.pt"
    model = tiny_model()
    state = {
        "config": {"model": to_dict(model.config), "features": to_dict(MelConfig())},
        "model": model.state_dict(),
        "step": 1,
    }
    save_checkpoint(model_file, state)
    recordings = tmp_path / "rec"
    recordings.mkdir()
    clip = recordings / f"{CLIP}.wav"
    clip.write_bytes((ljspeech_clips / "wavs" / f"{CLIP}.wav").read_bytes())
    original = clip.read_bytes()
    filelist = tmp_path / "test.txt"
    filelist.write_text(f"{clip}\n")
    args = ["evaluate", "--checkpoint", str(model_file), "--filelist", str(filelist)]
    args += ["--device", "cpu"]

    def fails(*more: str) -> str:
        assert main([*args, *more]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err
        return err

    # the recording is never an output, --force or not
    for force in ([], ["--force"]):
        err = fails("--audio-dir", str(recordings), *force)
        assert f"{clip}: is a file to score; choose another audio folder" in err
    assert clip.read_bytes() == original
    # an earlier run's audio stays unless --force
    out = tmp_path / "wav"
    out.mkdir()
    (out / f"{CLIP}.griffin_lim.wav").write_bytes(b"earlier")
    err = fails("--audio-dir", str(out))
    assert f"{out / (CLIP + '.griffin_lim.wav')}: already exists" in err and "--force" in err
    assert (out / f"{CLIP}.griffin_lim.wav").read_bytes() == b"earlier"
    assert "--audio-dir writes synthesized audio" in fails(
        "--audio-dir", str(out), "--no-synthesis"
    )
    assert "--out takes the report's .json file" in fails("--out", str(tmp_path / "r.csv"))
    assert not (tmp_path / "r.csv").exists()
    # every file is read before any is scored: a bad one at the end stops the run at once
    (tmp_path / "junk.wav").write_text("not audio")
    filelist.write_text(f"{clip}\n{tmp_path / 'junk.wav'}\n")
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "r.json")]) == 2
    out, err = capsys.readouterr()
    assert err.startswith(f"error: {tmp_path / 'junk.wav'}: ") and err.count("\n") == 1, err
    assert out == "" and not (tmp_path / "r.json").exists()  # no progress, no scores


def test_evaluate_says_what_reading_changes(ljspeech_clips, tmp_path, caplog):
    audio = load_audio(ljspeech_clips / "wavs" / f"{CLIP}.wav", sample_rate=16000)
    save_audio(tmp_path / "16k.wav", torch.stack([audio, audio]), 16000)
    caplog.set_level(logging.INFO, logger="vocoder.evaluate")
    report = evaluate(tiny_model(), MelConfig(), [tmp_path / "16k.wav"], synthesis=False)
    assert math.isfinite(report.ll)
    note = "2 channels mixed down to mono, resampled 16000 -> 22050 Hz"
    assert f"{tmp_path / '16k.wav'}: {note}" in caplog.text


def test_cli_evaluate_says_when_it_scores_files_the_checkpoint_trained_on(
    ljspeech_clips, tmp_path, capsys, caplog
):
    """A train list given by mistake read as "test LL" without a word."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(n_flows=2, n_layers=2, n_group=8, channels=8))
    state = {
        "config": {"model": to_dict(model.config), "features": to_dict(MelConfig())},
        "model": model.state_dict(),
        "step": 1,
        "train_ids": sorted([CLIP, "LJ999-0001"]),
    }
    checkpoint = save_checkpoint(checkpoint_path(tmp_path / "run", 1), state)
    filelist = tmp_path / "list.txt"
    filelist.write_text(f"{ljspeech_clips / 'wavs' / CLIP}.wav\n")
    args = ["evaluate", "--checkpoint", str(checkpoint), "--filelist", str(filelist)]
    assert main([*args, "--device", "cpu", "--no-synthesis"]) == 0
    printed = capsys.readouterr().out
    assert f"1 of 1 file(s) of {filelist} were trained on ({CLIP}): these are not" in caplog.text
    assert "LL (1 of them trained on)" in printed and "test LL" not in printed


def test_clips_the_init_from_weights_trained_on_travel_with_checkpoints_and_exports(
    ljspeech_clips, tmp_path, capsys, caplog
):
    """A run fine-tuned from other weights scored their training clips as test clips, and
    its export forgot both its own clips and the published file the weights came from."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(n_flows=2, n_layers=2, n_group=8, channels=8))
    earlier = "LJ001-0002"  # a clip the init_from weights were trained on
    state = {
        "config": {"model": to_dict(model.config), "features": to_dict(MelConfig())},
        "model": model.state_dict(),
        "step": 1,
        "train_ids": [CLIP],
        "started_from": {
            "init_from": "/models/published.pt",
            "imported_from": "L0SG/NanoFlow",
            "source_sha256": "ab" * 32,
            "train_ids": [earlier],
        },
    }
    checkpoint = save_checkpoint(checkpoint_path(tmp_path / "run", 1), state)
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "export")]) == 0
    metadata = json.loads((tmp_path / "export.json").read_text())["metadata"]
    assert metadata["train_ids"] == sorted([CLIP, earlier])
    assert metadata["imported_from"] == "L0SG/NanoFlow" and metadata["source_sha256"] == "ab" * 32
    filelist = tmp_path / "list.txt"
    filelist.write_text("".join(f"{ljspeech_clips / 'wavs' / c}.wav\n" for c in (CLIP, earlier)))
    for model_args in (
        ["--checkpoint", str(checkpoint)],
        ["--model", f"{tmp_path}/export.safetensors"],
    ):
        caplog.clear()
        args = ["evaluate", *model_args, "--filelist", str(filelist), "--device", "cpu"]
        assert main([*args, "--no-synthesis"]) == 0
        assert f"2 of 2 file(s) of {filelist} were trained on" in caplog.text, model_args
        assert "LL (2 of them trained on)" in capsys.readouterr().out
