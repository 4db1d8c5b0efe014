"""Filelists, dataset layouts and splits, training segments aligned with their mels."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from vocoder.audio import load_audio, save_audio
from vocoder.data.filelist import read_filelist, write_filelist
from vocoder.data.folder import folder_splits, scan_audio
from vocoder.data.ljspeech import ljspeech_split_ids, ljspeech_splits, read_metadata
from vocoder.data.segments import SegmentDataset, UtteranceDataset
from vocoder.data.splits import read_id_list
from vocoder.errors import ConfigError, InputError
from vocoder.features import MelConfig, MelSpectrogram, mel_spectrogram
from vocoder.melio import load_mel, save_mel

CLIPS = ["LJ001-0002", "LJ001-0008", "LJ001-0026"]  # 1.9 s, 1.8 s, 6.1 s


@pytest.fixture(scope="module")
def clips(ljspeech_clips) -> list[Path]:
    return [ljspeech_clips / "wavs" / f"{c}.wav" for c in CLIPS]


# -- filelists -------------------------------------------------------------------------


def test_filelist_round_trip(tmp_path, clips):
    inside = tmp_path / "audio" / "a.wav"
    inside.parent.mkdir()
    inside.write_bytes(clips[0].read_bytes())
    write_filelist(tmp_path / "list.txt", [inside, clips[1]])
    lines = (tmp_path / "list.txt").read_text().splitlines()
    assert lines == ["audio/a.wav", str(clips[1])]
    assert read_filelist(tmp_path / "list.txt") == [inside, clips[1]]
    with pytest.raises(InputError, match="already exists"):
        write_filelist(tmp_path / "list.txt", [])


def test_filelist_keeps_symlinked_paths_as_given(tmp_path, clips):
    """Paths are made absolute, not resolved: a symlinked data folder stays in the list."""
    real = tmp_path / "real"
    real.mkdir()
    (real / "a.wav").write_bytes(clips[0].read_bytes())
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    (tmp_path / "lists").mkdir()
    listed = write_filelist(tmp_path / "lists" / "list.txt", [link / "a.wav"])
    assert listed.read_text() == f"{link / 'a.wav'}\n"
    assert read_filelist(listed) == [link / "a.wav"]
    # A file inside the list's folder is written relative, whichever route names either.
    for folder, file in ((link, real / "a.wav"), (real, link / "a.wav")):
        write_filelist(folder / "list.txt", [file], overwrite=True)
        assert (real / "list.txt").read_text() == "a.wav\n"
        assert read_filelist(folder / "list.txt") == [folder / "a.wav"]


def test_filelist_comments_and_missing_entries(tmp_path, clips):
    (tmp_path / "a.wav").write_bytes(clips[0].read_bytes())
    (tmp_path / "list.txt").write_text("# header\n\na.wav\n  \n# a.wav\n")
    assert read_filelist(tmp_path / "list.txt") == [tmp_path / "a.wav"]
    (tmp_path / "bad.txt").write_text("a.wav\nmissing.wav\n")
    with pytest.raises(InputError, match="line 2: missing.wav: no such file"):
        read_filelist(tmp_path / "bad.txt")
    with pytest.raises(InputError, match="no such filelist"):
        read_filelist(tmp_path / "nope.txt")


def test_text_files_saved_with_a_byte_order_mark_read_as_without(tmp_path, clips):
    # Windows editors and Excel start UTF-8 files with U+FEFF, which strip() keeps
    bom = b"\xef\xbb\xbf"
    (tmp_path / "a.wav").write_bytes(clips[0].read_bytes())
    (tmp_path / "list.txt").write_bytes(bom + b"a.wav\r\n")
    assert read_filelist(tmp_path / "list.txt") == [tmp_path / "a.wav"]
    (tmp_path / "ids.txt").write_bytes(bom + b"LJ001-0001\r\nLJ001-0002\r\n")
    assert read_id_list(tmp_path / "ids.txt") == ["LJ001-0001", "LJ001-0002"]
    (tmp_path / "metadata.csv").write_bytes(bom + b"LJ001-0001|Text|Text\r\n")
    assert read_metadata(tmp_path) == ["LJ001-0001"]


# -- LJ Speech ---------------------------------------------------------------------------


@pytest.mark.parametrize("corpus", ["ljspeech_clips", "ljspeech_mini"])
def test_ljspeech_listed_split_on_real_metadata(corpus, request):
    root = request.getfixturevalue(corpus)
    parts = ljspeech_splits(root, "listed")
    train_ids = read_id_list(root / "train.txt")
    test_ids = read_id_list(root / "test.txt")
    assert sorted(train_ids + test_ids) == sorted(read_metadata(root))  # each id in one list
    assert len(parts["train"]) + len(parts["valid"]) == len(train_ids) and parts["valid"]
    assert {p.stem for p in parts["train"] + parts["valid"]} == set(train_ids)
    assert [p.stem for p in parts["test"]] == test_ids
    assert all(p.is_file() for part in parts.values() for p in part)
    assert ljspeech_splits(root, "listed") == parts  # deterministic


def test_ljspeech_id_list_splits_keep_published_roles(ljspeech_mini, shared_data):
    lists = shared_data / "ljspeech-splits"
    parts = ljspeech_split_ids(ljspeech_mini, "tacotron2", splits_dir=lists)
    published_test = set(read_id_list(lists / "tacotron2_test.txt"))
    published_train = set(read_id_list(lists / "tacotron2_train.txt"))
    assert parts["test"] and set(parts["test"]) <= published_test
    assert set(parts["train"]) <= published_train and parts["valid"]
    assert sum(len(v) for v in parts.values()) == 58
    hifigan = ljspeech_split_ids(ljspeech_mini, "hifigan", splits_dir=lists)
    assert hifigan["valid"] == hifigan["test"]
    assert set(hifigan["test"]) <= set(read_id_list(lists / "hifigan_validation.txt"))
    with pytest.raises(InputError, match="splits_dir=DIR"):
        ljspeech_split_ids(ljspeech_mini, "tacotron2")


@pytest.fixture
def full_metadata(tmp_path) -> Path:
    """A synthetic 13,100-row LJ Speech metadata.csv (no audio needed for the split rules)."""
    ids = [f"LJ{1 + i // 300:03d}-{i % 300 + 1:04d}" for i in range(13100)]
    rows = [f'{i}|Text with a "quote.|Text with a "quote.' for i in ids]
    (tmp_path / "metadata.csv").write_text("\n".join(rows) + "\n")
    return tmp_path


def test_nanoflow_and_espnet_splits_on_full_size_metadata(full_metadata):
    ids = read_metadata(full_metadata)
    assert len(ids) == 13100
    nano = ljspeech_split_ids(full_metadata, "nanoflow")
    assert nano["test"] == ids[:1310]
    assert sorted(nano["train"] + nano["valid"]) == sorted(ids[1310:])
    assert len(nano["valid"]) == 100
    espnet = ljspeech_split_ids(full_metadata, "espnet")
    assert espnet["train"] == ids[:12600]
    assert espnet["valid"] == ids[12600:12850] and espnet["test"] == ids[12850:]
    paths = ljspeech_splits(full_metadata, "espnet")
    assert paths["test"][0] == full_metadata / "wavs" / f"{ids[12850]}.wav"


def test_espnet_split_needs_the_full_corpus(ljspeech_clips):
    with pytest.raises(InputError, match="last 500"):
        ljspeech_split_ids(ljspeech_clips, "espnet")


# -- folders ---------------------------------------------------------------------------


@pytest.mark.parametrize("corpus", ["male_reader_clips", "male_reader"])
def test_folder_listed_split_on_male_reader(corpus, request):
    root = request.getfixturevalue(corpus)
    parts = folder_splits(root, "listed")
    train_ids, test_ids = read_id_list(root / "train.txt"), read_id_list(root / "test.txt")
    assert len(train_ids) + len(test_ids) == len(scan_audio(root))
    assert len(parts["train"]) + len(parts["valid"]) == len(train_ids) and parts["valid"]
    assert {p.stem for p in parts["test"]} == set(test_ids)
    assert not {p.stem for p in parts["test"]} & {p.stem for p in parts["train"]}


def test_folder_random_split_is_seeded(tmp_path, clips):
    (tmp_path / "sub").mkdir()
    for i in range(20):
        folder = tmp_path / "sub" if i % 2 else tmp_path
        (folder / f"u{i:02d}.wav").write_bytes(b"")  # scanning does not decode
    (tmp_path / "notes.txt").write_text("not audio")
    assert len(scan_audio(tmp_path)) == 20
    a = folder_splits(tmp_path, "random", 0.1, 0.2, seed=1)
    assert [len(a[k]) for k in ("train", "valid", "test")] == [14, 2, 4]
    assert folder_splits(tmp_path, "random", 0.1, 0.2, seed=1) == a
    assert folder_splits(tmp_path, "random", 0.1, 0.2, seed=2) != a
    (tmp_path / "sub" / "u00.flac").write_bytes(b"")
    with pytest.raises(InputError, match="same name stem"):
        scan_audio(tmp_path)


def test_scan_follows_linked_folders_each_once(tmp_path):
    """`Path.rglob` left out the files of a linked folder, unsaid."""
    root, elsewhere = tmp_path / "voice", tmp_path / "elsewhere"
    (root / "real").mkdir(parents=True)
    elsewhere.mkdir()
    for path in (root / "a.wav", root / "real" / "b.wav", elsewhere / "c.wav"):
        path.write_bytes(b"")  # scanning does not decode
    (root / "linked").symlink_to(elsewhere, target_is_directory=True)
    (root / "same").symlink_to(elsewhere, target_is_directory=True)  # walked once
    (root / "real" / "up").symlink_to(root, target_is_directory=True)  # a loop
    (root / "a-link").symlink_to(root / "real", target_is_directory=True)  # real first
    (root / "aa" / "deeper").mkdir(parents=True)  # a link walked before the real folder
    (root / "aa" / "deeper" / "to-real").symlink_to(root / "real", target_is_directory=True)
    (root / ".trash").mkdir()
    (root / ".trash" / "d.wav").write_bytes(b"")  # hidden, as the fingerprint has it
    assert scan_audio(root) == [root / "a.wav", root / "linked" / "c.wav", root / "real" / "b.wav"]


def deny_reading(folder: Path, monkeypatch) -> None:
    """Listing `folder` fails as a folder without read permission does (root is never
    denied, so the denial is made here)."""
    scandir = os.scandir

    def denied(path="."):
        if os.fspath(path) == str(folder):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", denied)


def test_a_folder_the_scan_cannot_read_is_named(tmp_path, monkeypatch):
    """`Path.rglob` left out an unreadable folder unsaid (as root cannot be denied, the
    denial is made here: the command's own test is in test_prepare_reliability)."""
    for name in ("a", "locked/b", "locked/c"):
        (tmp_path / f"{name}.wav").parent.mkdir(exist_ok=True)
        (tmp_path / f"{name}.wav").write_bytes(b"")
    (tmp_path / "train.txt").write_text("a\nb\n")
    (tmp_path / "test.txt").write_text("a\n")
    deny_reading(tmp_path / "locked", monkeypatch)
    with pytest.raises(InputError) as caught:
        scan_audio(tmp_path)
    assert (
        str(caught.value) == f"{tmp_path / 'locked'}: cannot read this folder (permission denied)"
    )
    unreadable = []
    assert scan_audio(tmp_path, unreadable=unreadable) == [tmp_path / "a.wav"]
    assert [str(e) for e in unreadable] == [str(caught.value)]
    with pytest.raises(InputError) as listed:  # b is listed: the folder is why it is missing
        folder_splits(tmp_path, "listed", unreadable=[])
    assert str(listed.value) == str(caught.value)
    (tmp_path / "a.wav").unlink()
    with pytest.raises(InputError) as nothing:  # the folder, not "holds no audio files"
        scan_audio(tmp_path, unreadable=[])
    assert str(nothing.value) == str(caught.value)


# -- segments ----------------------------------------------------------------------------


def test_segments_align_exactly_with_the_whole_utterance_mel(clips):
    config = MelConfig()
    data = SegmentDataset(clips, config, segment_length=8192, seed=3)
    for i, path in enumerate(clips):
        audio, mel = data[i]
        start = data.segment_start(i)
        assert start % 256 == 0
        full_audio = load_audio(path)
        full_mel = mel_spectrogram(full_audio, config)
        assert audio.shape == (8192,) and mel.shape == (80, 32)
        assert torch.equal(audio, full_audio[start : start + 8192])
        assert torch.equal(mel, full_mel[:, start // 256 : start // 256 + 32])


def test_segments_are_deterministic_per_seed_and_epoch(clips):
    config = MelConfig()
    a = SegmentDataset(clips, config, segment_length=4096, seed=7)
    b = SegmentDataset(clips, config, segment_length=4096, seed=7)
    starts = [a.segment_start(i) for i in range(3)]
    assert starts == [b.segment_start(i) for i in range(3)]
    assert torch.equal(a[2][0], b[2][0]) and torch.equal(a[2][1], b[2][1])
    a.set_epoch(1)
    assert [a.segment_start(i) for i in range(3)] != starts
    other = SegmentDataset(clips, config, segment_length=4096, seed=8)
    assert [other.segment_start(i) for i in range(3)] != starts


def test_short_utterance_is_zero_padded(tmp_path, clips):
    short = save_audio(tmp_path / "short.wav", load_audio(clips[0])[:5000], 22050)
    config = MelConfig()
    audio, mel = SegmentDataset([short], config, segment_length=8192)[0]
    padded = torch.cat([load_audio(short), torch.zeros(8192 - 5000)])
    assert torch.equal(audio, padded)
    assert torch.equal(mel, mel_spectrogram(padded, config)[:, :32])


def test_segment_length_must_be_a_multiple_of_hop(clips):
    with pytest.raises(ConfigError, match="multiple of hop_length"):
        SegmentDataset(clips, MelConfig(), segment_length=16000)


def test_segments_from_mel_dir(tmp_path, clips):
    config = MelConfig()
    for path in clips:
        # Stand-in for TTS-predicted mels: the true mel, shifted, so the source is visible.
        save_mel(tmp_path / f"{path.stem}.npy", mel_spectrogram(load_audio(path)) + 1.0)
    data = SegmentDataset(clips, config, segment_length=8192, seed=1, mel_dir=tmp_path)
    computed = SegmentDataset(clips, config, segment_length=8192, seed=1)
    for i in range(len(clips)):
        torch.testing.assert_close(data[i][1], computed[i][1] + 1.0, atol=1e-6, rtol=0)
    save_mel(tmp_path / f"{clips[0].stem}.npy", torch.zeros(80, 10), overwrite=True)
    with pytest.raises(InputError, match="needs at least"):
        SegmentDataset(clips, config, segment_length=8192, mel_dir=tmp_path)[0]
    save_mel(tmp_path / f"{clips[0].stem}.npy", torch.zeros(64, 200), overwrite=True)
    with pytest.raises(InputError, match="80 mel bins"):
        SegmentDataset(clips, config, segment_length=8192, mel_dir=tmp_path)[0]


def test_utterance_dataset_matches_reference_mels(ljspeech_clips):
    config = MelConfig()
    path = ljspeech_clips / "wavs" / "LJ001-0026.wav"
    audio, mel, name = UtteranceDataset([path], config)[0]
    assert name == "LJ001-0026"
    assert mel.shape == (80, config.num_frames(audio.numel()))
    ref_dir = ljspeech_clips / "mels_tacotron2"
    audio2, ref, _ = UtteranceDataset([path], config, mel_dir=ref_dir)[0]
    assert torch.equal(audio, audio2) and ref.shape == mel.shape
    assert (mel - ref).abs().max() < 5e-4


def test_utterance_dataset_cuts_audio_to_what_an_uncentered_mel_covers(ljspeech_clips):
    config = MelConfig.preset("hifigan")
    path = ljspeech_clips / "wavs" / "LJ001-0026.wav"
    full = load_audio(path).numel()
    audio, mel, _ = UtteranceDataset([path], config)[0]
    assert audio.numel() == mel.shape[1] * config.hop_length == full // 256 * 256 < full
    assert mel.shape[1] == config.num_frames(audio.numel()) == config.num_frames(full)
    assert torch.equal(mel, MelSpectrogram(config)(load_audio(path)))  # the whole clip's mel
    centered, _, _ = UtteranceDataset([path], MelConfig())[0]
    assert centered.numel() == full


def test_audio_loaded_at_the_mel_sample_rate(tmp_path, clips):
    file_8k = save_audio(tmp_path / "a8k.wav", load_audio(clips[0], sample_rate=8000), 8000)
    config = MelConfig()
    audio, mel, _ = UtteranceDataset([file_8k], config)[0]
    assert audio.numel() == round(load_audio(file_8k).numel() * 22050 / 8000)
    assert mel.shape[1] == config.num_frames(audio.numel())


def test_tts_mels_at_another_hop_are_refused(tmp_path, clips):
    """A TTS mel made at hop 256 has the right bins but ~17 % too many frames for a hop-300
    run: training and validation refuse it by name instead of slicing misaligned frames."""
    run = MelConfig.preset("tacotron2", sample_rate=24000, hop_length=300, n_fft=2048)
    for path in clips:
        audio = load_audio(path, sample_rate=24000)
        save_mel(tmp_path / f"{path.stem}.npy", mel_spectrogram(audio, run))
    # the run's own convention passes, also with a frame of TTS padding
    assert SegmentDataset(clips, run, segment_length=9000, mel_dir=tmp_path)[2][1].shape == (80, 30)
    padded = torch.nn.functional.pad(load_mel(tmp_path / f"{clips[2].stem}.npy"), (0, 1))
    save_mel(tmp_path / f"{clips[2].stem}.npy", padded, overwrite=True)
    assert UtteranceDataset(clips[2:], run, mel_dir=tmp_path)[0][1].shape[0] == 80
    # hop 256 at the same rate: too many frames
    other = MelConfig.preset("tacotron2", sample_rate=24000, n_fft=2048)
    wrong = tmp_path / f"{clips[2].stem}.npy"
    save_mel(wrong, mel_spectrogram(load_audio(clips[2], sample_rate=24000), other), overwrite=True)
    for data in (
        SegmentDataset(clips[2:], run, segment_length=9000, mel_dir=tmp_path),
        UtteranceDataset(clips[2:], run, mel_dir=tmp_path),
    ):
        with pytest.raises(InputError) as caught:
            data[0]
        assert caught.value.source == str(wrong)
        assert "frames" in caught.value.problem and "hop_length 300" in caught.value.problem


def test_id_lists_keep_dots_and_folders_of_ids(tmp_path, clips):
    """An id list was cut to `Path.stem`: `take.01` became `take`, `spk/LJ001-0001` lost
    its folder; an audio extension or a prefix that is not part of any id is still dropped."""
    (tmp_path / "ids.txt").write_text("take.01\ntake.02.wav|text\nDUMMY/LJ001-0001.wav|x\n")
    known = {"take.01", "take.02", "LJ001-0001"}
    assert read_id_list(tmp_path / "ids.txt", known) == ["take.01", "take.02", "LJ001-0001"]
    (tmp_path / "ids.txt").write_text("mels/take.01.npy|x\n")  # a mel's path: its stem
    assert read_id_list(tmp_path / "ids.txt", known) == ["take.01"]
    (tmp_path / "ids.txt").write_text("spk/LJ001-0001\n")
    assert read_id_list(tmp_path / "ids.txt", {"spk/LJ001-0001"}) == ["spk/LJ001-0001"]

    voice = tmp_path / "voice"
    voice.mkdir()
    for i, name in enumerate(("take.01", "take.02", "take.03")):
        (voice / f"{name}.wav").write_bytes(clips[i].read_bytes())
    (voice / "train.txt").write_text("take.01\ntake.02.wav\n")
    (voice / "test.txt").write_text("take.03\n")
    parts = folder_splits(voice, "listed")
    assert sorted(p.name for p in parts["train"] + parts["valid"]) == ["take.01.wav", "take.02.wav"]
    assert [p.name for p in parts["test"]] == ["take.03.wav"]


def test_metadata_ids_may_be_written_as_paths(tmp_path, clips):
    """`wavs/x.flac|text` was read as id `wavs/x.flac`: no clip was found for any row."""
    (tmp_path / "wavs").mkdir()
    for i, name in enumerate(("LJ001-0001", "LJ001-0002")):
        (tmp_path / "wavs" / f"{name}.wav").write_bytes(clips[i].read_bytes())
    (tmp_path / "metadata.csv").write_text("wavs/LJ001-0001.wav|a|a\nLJ001-0002.WAV|b|b\n")
    assert read_metadata(tmp_path) == ["LJ001-0001", "LJ001-0002"]
    parts = ljspeech_splits(tmp_path, "random", valid_fraction=0, test_fraction=0)
    assert sorted(p.name for p in parts["train"]) == ["LJ001-0001.wav", "LJ001-0002.wav"]


def test_a_disks_lost_and_found_is_left_out_though_it_cannot_be_read(tmp_path, monkeypatch):
    """Data on its own disk holds fsck's root-only lost+found: not a refusal of the folder."""
    (tmp_path / "lost+found").mkdir()
    (tmp_path / "a.wav").write_bytes(b"")
    deny_reading(tmp_path / "lost+found", monkeypatch)
    unreadable = []
    assert scan_audio(tmp_path, unreadable=unreadable) == [tmp_path / "a.wav"] and not unreadable
    assert scan_audio(tmp_path) == [tmp_path / "a.wav"]
