"""Mel files: layouts, conversions from other TTS conventions, range checks, broken files."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vocoder.audio import load_audio
from vocoder.errors import InputError
from vocoder.features import mel_spectrogram
from vocoder.melio import (
    LN_FLOOR,
    SPREAD_FRAMES,
    DbNormalization,
    check_mel_range,
    convert_mel,
    load_mel,
    load_stats,
    save_mel,
)

LN10 = math.log(10)


@pytest.fixture(scope="module")
def ref_path(ljspeech_clips):
    return ljspeech_clips / "mels_tacotron2" / "LJ001-0026.npy"


@pytest.fixture(scope="module")
def ref_mel(ref_path):
    return torch.from_numpy(np.load(ref_path))


def test_load_reference_mel(ref_path, ref_mel):
    mel = load_mel(ref_path)
    assert mel.dtype == torch.float32 and mel.shape == (80, 525)
    assert torch.equal(mel, ref_mel)


def test_accepted_layouts(tmp_path, ref_mel):
    layouts = {
        "transposed.npy": ref_mel.T.numpy(),
        "batched.npy": ref_mel[None].numpy(),
        "batched_transposed.npy": ref_mel.T[None].numpy(),
        "float64.npy": ref_mel.double().numpy(),
    }
    for name, array in layouts.items():
        np.save(tmp_path / name, array)
    torch.save(ref_mel.clone(), tmp_path / "tensor.pt")
    torch.save({"mel": ref_mel.T.clone(), "text": "hello"}, tmp_path / "dict.pt")
    for name in [*layouts, "tensor.pt", "dict.pt"]:
        assert torch.equal(load_mel(tmp_path / name), ref_mel), name


def test_square_mel_is_read_as_bins_by_frames(tmp_path, ref_mel, caplog):
    square = ref_mel[:, :80]
    np.save(tmp_path / "square.npy", square.numpy())
    assert torch.equal(load_mel(tmp_path / "square.npy"), square)
    # said: FastSpeech 2's [frames, n_mels] of an 80-frame utterance read transposed, unsaid
    assert "square.npy: a square mel [80, 80] is read as [n_mels, frames]" in caplog.text


def test_save_mel_round_trip_and_no_overwrite(tmp_path, ref_mel):
    for name in ["m.npy", "m.pt"]:
        save_mel(tmp_path / name, ref_mel)
        assert torch.equal(load_mel(tmp_path / name), ref_mel)
        with pytest.raises(InputError, match="already exists"):
            save_mel(tmp_path / name, ref_mel * 0)
        assert torch.equal(load_mel(tmp_path / name), ref_mel)
    assert np.load(tmp_path / "m.npy").dtype == np.float32
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npy", "m.pt"]


def test_log10_round_trip(tmp_path, ref_mel):
    np.save(tmp_path / "log10.npy", (ref_mel / LN10).numpy())
    mel = load_mel(tmp_path / "log10.npy", mel_format="log10")
    torch.testing.assert_close(mel, ref_mel, atol=1e-5, rtol=0)


def test_db_normalized_round_trip(tmp_path, ref_mel):
    # The documented forward formula: S_db = 20 log10(mel) - ref_level_db, then
    # x = (S_db - min_level_db) / -min_level_db (Tacotron style, min -100, ref 20).
    s_db = 20 * ref_mel / LN10 - 20.0
    x = (s_db + 100.0) / 100.0
    np.save(tmp_path / "db.npy", x.numpy())
    mel = load_mel(tmp_path / "db.npy", mel_format="db-normalized")
    torch.testing.assert_close(mel, ref_mel, atol=1e-4, rtol=0)
    # Symmetric variant in [-4, 4], with other levels.
    db = DbNormalization(min_level_db=-120.0, ref_level_db=16.0, symmetric=True)
    s_db = 20 * ref_mel / LN10 - 16.0
    x = 8.0 * (s_db + 120.0) / 120.0 - 4.0
    np.save(tmp_path / "sym.npy", x.numpy())
    mel = load_mel(tmp_path / "sym.npy", mel_format="db-normalized", db=db)
    torch.testing.assert_close(mel, ref_mel, atol=1e-4, rtol=0)
    torch.testing.assert_close(db.from_ln(ref_mel), x, atol=1e-5, rtol=0)


def test_db_normalized_zero_to_four_and_parsed_settings(tmp_path, ref_mel):
    # Rayhane-mamah / Coqui with symmetric=False: x = max_abs_value * (S_db - min) / -min
    s_db = 20 * ref_mel / LN10 - 20.0
    np.save(tmp_path / "db4.npy", (4.0 * (s_db + 100.0) / 100.0).numpy())
    db = DbNormalization.parse("max_abs_value=4")
    mel = load_mel(tmp_path / "db4.npy", mel_format="db-normalized", db=db)
    torch.testing.assert_close(mel, ref_mel, atol=1e-4, rtol=0)  # read 0-1 before: 30 ln off
    assert DbNormalization.parse(" symmetric=TRUE, ref_level_db=16 ") == DbNormalization(
        symmetric=True, ref_level_db=16.0
    )
    assert DbNormalization.parse("symmetric=true").top == 4.0 and DbNormalization().top == 1.0
    for spec, problem in [
        ("symetric=true", "'symetric=true' is not KEY=VALUE with KEY one of min_level_db"),
        ("symmetric=yes", "symmetric is true or false, got 'yes'"),
        ("ref_level_db=high", "ref_level_db is a number, got 'high'"),
        ("max_abs_value=inf", "max_abs_value must be finite"),
        ("min_level_db=100", "min_level_db must be negative"),
    ]:
        with pytest.raises(InputError, match=problem) as e:
            DbNormalization.parse(spec)
        assert e.value.source == "db_normalization"  # the library names its keyword


def test_converted_mels_are_clamped_at_this_conventions_floor(tmp_path, ref_mel):
    """ParallelWaveGAN and ESPnet floor at 1e-10: silence read as -23, not -11.5."""
    silent = torch.full((80, 20), -10.0)  # log10(1e-10)
    assert float(convert_mel(silent, "log10").min()) == pytest.approx(math.log(1e-5))
    stats = load_stats_from(tmp_path, ref_mel / LN10)
    normalized = stats.from_ln(silent * LN10)
    assert float(convert_mel(normalized, "meanvar", stats).min()) == pytest.approx(math.log(1e-5))
    assert torch.equal(convert_mel(ref_mel, "ln"), ref_mel)  # ln mels are the user's own


def test_espnet_feats_stats_read_as_global_mvn(tmp_path, ref_mel):
    log10_mel = (ref_mel / LN10).double()
    frames = log10_mel.shape[1]
    np.savez(
        tmp_path / "feats_stats.npz",
        count=np.array(frames),
        sum=log10_mel.sum(dim=1).numpy(),
        sum_square=log10_mel.square().sum(dim=1).numpy(),
    )
    mean, std = log10_mel.mean(dim=1), log10_mel.std(dim=1, unbiased=False)
    np.save(tmp_path / "norm.npy", ((log10_mel - mean[:, None]) / std[:, None]).float().numpy())
    stats = tmp_path / "feats_stats.npz"
    mel = load_mel(tmp_path / "norm.npy", mel_format="meanvar", stats=stats)
    torch.testing.assert_close(mel, ref_mel.clamp(min=math.log(1e-5)), atol=1e-4, rtol=0)


def test_stats_as_kaldi_cmvn_and_the_files_not_read_say_what_to_do(tmp_path, ref_mel):
    """Kaldi's (ESPnet1's) CMVN [2, n_mels + 1] read as such (it was "81 bins, the model
    80"); ParallelWaveGAN's stats.h5 and Mozilla's pickled scale_stats.npy name the fix."""
    log10_mel = (ref_mel / LN10).double()
    frames = log10_mel.shape[1]
    sums = torch.cat([log10_mel.sum(dim=1), torch.tensor([float(frames)], dtype=torch.float64)])
    squares = torch.cat([log10_mel.square().sum(dim=1), torch.zeros(1, dtype=torch.float64)])
    np.save(tmp_path / "cmvn.npy", torch.stack([sums, squares]).numpy())
    stats = load_stats(tmp_path / "cmvn.npy")
    torch.testing.assert_close(stats.mean, log10_mel.mean(dim=1).float())
    torch.testing.assert_close(stats.scale, log10_mel.std(dim=1, unbiased=False).float())
    (tmp_path / "stats.h5").write_bytes(b"\x89HDF\r\n\x1a\n")
    with pytest.raises(InputError, match="stats.h5: an HDF5 file .* save its mean and scale"):
        load_stats(tmp_path / "stats.h5")
    np.save(tmp_path / "scale_stats.npy", {"mel_mean": [0.0], "mel_std": [1.0]}, allow_pickle=True)
    with pytest.raises(InputError, match="holds Python objects .* keys 'mean' and 'scale'"):
        load_stats(tmp_path / "scale_stats.npy")


def load_stats_from(tmp_path, log10_mel):
    mean, scale = log10_mel.mean(dim=1), log10_mel.std(dim=1)
    np.save(tmp_path / "stats.npy", torch.stack([mean, scale]).numpy())
    return load_stats(tmp_path / "stats.npy")


def test_meanvar_round_trip(tmp_path, ref_mel):
    # ParallelWaveGAN: stats.npy [2, n_mels] = (mean, scale) of log10 mels.
    log10_mel = ref_mel / LN10
    mean, scale = log10_mel.mean(dim=1), log10_mel.std(dim=1)
    np.save(tmp_path / "stats.npy", torch.stack([mean, scale]).numpy())
    np.save(tmp_path / "norm.npy", ((log10_mel - mean[:, None]) / scale[:, None]).numpy())
    mel = load_mel(tmp_path / "norm.npy", mel_format="meanvar", stats=tmp_path / "stats.npy")
    torch.testing.assert_close(mel, ref_mel, atol=1e-4, rtol=0)
    # The same statistics of the natural-log mel, as an .npz.
    mean_ln, scale_ln = ref_mel.mean(dim=1), ref_mel.std(dim=1)
    np.savez(tmp_path / "stats_ln.npz", mean=mean_ln.numpy(), scale=scale_ln.numpy())
    norm_ln = (ref_mel - mean_ln[:, None]) / scale_ln[:, None]
    stats = load_stats(tmp_path / "stats_ln.npz", log_base="ln")
    torch.testing.assert_close(convert_mel(norm_ln, "meanvar", stats), ref_mel, atol=1e-4, rtol=0)


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_bad_mel_files_raise_input_error_naming_them(tmp_path, ref_mel):
    nan = ref_mel.clone()
    nan[3, 10] = float("nan")
    np.save(tmp_path / "nan.npy", nan.numpy())
    np.save(tmp_path / "bins.npy", ref_mel[:79].numpy())
    np.save(tmp_path / "empty.npy", np.zeros((80, 0), dtype=np.float32))
    np.save(tmp_path / "norm.npy", ref_mel.numpy())
    (tmp_path / "text.npy").write_text("not a mel")
    (tmp_path / "cut.npy").write_bytes((tmp_path / "norm.npy").read_bytes()[:300])
    np.save(tmp_path / "objects.npy", np.array([{"mel": 1}], dtype=object), allow_pickle=True)
    (tmp_path / "zero.npy").write_bytes(b"")
    (tmp_path / "mel.txt").write_text("0 1 2")
    torch.save({"audio": ref_mel}, tmp_path / "nokey.pt")
    np.save(tmp_path / "complex.npy", ref_mel.numpy().astype(np.complex64))
    torch.save(ref_mel.to(torch.complex64), tmp_path / "complex.pt")
    np.save(tmp_path / "int.npy", (ref_mel * 1000).numpy().astype(np.int16))
    torch.save((ref_mel * 1000).to(torch.int32), tmp_path / "int.pt")
    huge = ref_mel.double()
    huge[5, 7] = 1e300  # float32 holds no such value: it read as "1 NaN or infinite values"
    np.save(tmp_path / "huge.npy", huge.numpy())
    torch.save(huge, tmp_path / "huge.pt")
    cases = {
        "nan.npy": ({}, "NaN"),
        "huge.npy": ({}, "holds 1 value(s) beyond float32's range (largest 1e+300)"),
        "huge.pt": ({}, "holds 1 value(s) beyond float32's range (largest 1e+300)"),
        "bins.npy": ({}, "expected 80 mel bins"),
        "empty.npy": ({}, "0 frames"),
        "text.npy": ({}, "not a .npy file (no NumPy header)"),  # numpy: "pickled data"
        "cut.npy": ({}, "not a readable mel file"),
        "objects.npy": ({}, "holds Python objects, not numbers (never unpickled)"),
        "zero.npy": ({}, "empty file (0 bytes)"),
        "mel.txt": ({}, "unknown mel file type"),
        "nokey.pt": ({}, "'mel' key"),
        "complex.npy": ({}, "complex numbers"),
        "complex.pt": ({}, "complex numbers"),
        "int.npy": ({}, "holds integers (int16); a mel is floating point"),
        "int.pt": ({}, "holds integers (torch.int32); a mel is floating point"),
        "missing.npy": ({}, "no such file"),
        "norm.npy": ({"mel_format": "meanvar"}, "needs statistics"),
    }
    for name, (kwargs, problem) in cases.items():
        with pytest.raises(InputError) as caught:
            load_mel(tmp_path / name, **kwargs)
        assert caught.value.source == str(tmp_path / name)
        assert problem in caught.value.problem, (name, caught.value)
    with pytest.raises(InputError, match="80 mel bins"):
        load_mel(tmp_path / "bins.npy", n_mels=80)
    assert load_mel(tmp_path / "bins.npy", n_mels=79).shape == (79, 525)


def test_check_mel_range_quiet_on_real_mels(ljspeech_clips, male_reader_clips, ref_mel):
    assert check_mel_range(ref_mel) is None
    for path in [
        ljspeech_clips / "wavs" / "LJ001-0002.wav",
        male_reader_clips / "wavs" / "LJ001-0002.flac",
    ]:
        assert check_mel_range(mel_spectrogram(load_audio(path))) is None, path


def test_check_mel_range_quiet_on_streaming_chunks_of_real_mels(ljspeech_clips):
    """A TTS model's mel chunks of a few frames were told "looks like log10" (a quiet
    stretch spans little); a log10 mel as long as the spread rule needs still is."""
    mel = mel_spectrogram(load_audio(ljspeech_clips / "wavs" / "LJ001-0002.wav"))
    for frames in (1, 5, 10, 20, 40):
        for start in range(0, mel.shape[-1] - frames, max(1, frames // 2)):
            chunk = mel[..., start : start + frames]
            assert check_mel_range(chunk) is None, (frames, start, check_mel_range(chunk))
    quiet = mel[..., : SPREAD_FRAMES + 8]
    assert "looks like log10" in str(check_mel_range(quiet / LN10))
    # ParallelWaveGAN's floor of exactly -10 is no spread: a chunk with silence in it is told
    silence = torch.cat([mel[..., :5] / LN10, torch.full((80, 2), -10.0)], -1)
    assert "looks like log10" in str(check_mel_range(silence))


def test_check_mel_range_names_the_convention(ref_mel):
    log10_mel = ref_mel / LN10
    mean, scale = log10_mel.mean(dim=1, keepdim=True), log10_mel.std(dim=1, keepdim=True)
    cases = {
        "mel_format=db-normalized": DbNormalization().from_ln(ref_mel).clamp(0, 1),
        "symmetric": DbNormalization(symmetric=True).from_ln(ref_mel).clamp(-4, 4),
        "mel_format=log10": log10_mel,
        "mel_format=meanvar, stats=FILE": (log10_mel - mean) / scale,
        "linear magnitude/power": ref_mel.exp(),
        "log power": 2 * ref_mel,
        # told "linear ... take the natural log", or nothing, before
        "max_abs_value=4": DbNormalization(max_abs_value=4).from_ln(ref_mel).clamp(0, 4),
        "symmetric=true": DbNormalization(symmetric=True).from_ln(ref_mel),  # not clipped
        # ParallelWaveGAN's clamp at 1e-10: digital silence reads -10
        "looks like log10": torch.cat([ref_mel / LN10, torch.full((80, 5), -10.0)], 1),
        "at the floor ln(1e-5)": torch.cat([ref_mel, torch.full((80, 600), LN_FLOOR)], 1),
    }
    for hint, mel in cases.items():
        warning = check_mel_range(mel)
        assert warning is not None and hint in str(warning), (hint, warning)
    power = (2 * ref_mel).exp()
    assert "linear" in str(check_mel_range(power))
    # a right mel read in a wrong format lands on the floor: near-silence, said (it was not)
    for wrong in ("db-normalized", "log10"):
        converted = convert_mel(ref_mel, wrong)
        assert "sound near-silent (a mel converted from" in str(check_mel_range(converted)), wrong
    assert "NaN" in str(check_mel_range(torch.tensor([[float("nan")]])))
