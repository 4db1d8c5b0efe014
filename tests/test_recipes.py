"""The recipes, run for real on CPU: prepare, train (tiny), evaluate; stage 0's checksum."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from vocoder.audio import audio_info, load_audio, save_audio
from vocoder.checkpoint import latest_checkpoint, load_checkpoint
from vocoder.config import to_dict
from vocoder.data.filelist import read_filelist
from vocoder.data.segments import SegmentDataset
from vocoder.evaluate import evaluate
from vocoder.features import MelConfig, mel_spectrogram
from vocoder.models import build_model
from vocoder.train.config import load_experiment_config

REPO = Path(__file__).resolve().parents[1]
LJSPEECH = REPO / "recipes" / "ljspeech" / "run.sh"
CUSTOM = REPO / "recipes" / "custom_voice" / "run.sh"


def run_recipe(
    script: Path, *args: str, timeout: int = 240, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    # two shared cores: no thread fights
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(
        ["bash", str(script), *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def test_ljspeech_stages_1_to_4_on_the_mini_set(ljspeech_mini, tmp_path):
    data, exp = tmp_path / "data", tmp_path / "exp"
    done = run_recipe(
        LJSPEECH, "--stage", "1", "--stop-stage", "4", "--conf", "conf/smoke.yaml",
        "--corpus", str(ljspeech_mini), "--data-dir", str(data),
        "--exp", str(exp), "--eval-max-files", "2", "--synth-max-files", "1",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]

    # stage 1: the corpus's own lists give the split by default (the NanoFlow split, the
    # recipe's default before, trained on 14 of the 16 test clips), and a prepared folder
    # keeps its split: asking for another stops, where it was ignored before
    assert "(default split," in done.stdout
    again = run_recipe(
        LJSPEECH, "--stage", "1", "--stop-stage", "1", "--conf", "conf/smoke.yaml",
        "--corpus", str(ljspeech_mini), "--data-dir", str(data), "--split", "nanoflow",
    )  # fmt: skip
    assert again.returncode == 2
    assert f"{data} was prepared with the listed split, not nanoflow" in again.stderr
    # a stage that is no stage stopped nothing before: exit 0, having run nothing
    for script in (LJSPEECH, CUSTOM):
        for stages in (
            ["--stage", "2x"],
            ["--stop-stage", "9"],
            ["--stage", "3", "--stop-stage", "1"],
        ):
            wrong = run_recipe(script, *stages, "--conf", "conf/smoke.yaml")
            assert wrong.returncode == 2, wrong.stderr
            assert wrong.stderr.startswith("run.sh: --stage"), wrong.stderr
        none = run_recipe(script, "--synth-max-files", "0", "--conf", "conf/smoke.yaml")
        assert none.returncode == 2 and "--synth-max-files takes a positive" in none.stderr

    # the listed split keeps the 16 test ids out of training
    test_ids = set((ljspeech_mini / "test.txt").read_text().split())
    train = {p.stem for p in read_filelist(data / "train.txt")}
    test = {p.stem for p in read_filelist(data / "test.txt")}
    assert test == test_ids and not train & test_ids and len(train) >= 30

    # stage 2: 40 steps of a tiny WaveFlow, checkpointed
    checkpoint = latest_checkpoint(exp)
    assert load_checkpoint(checkpoint)["step"] == 40

    # stage 3: the report; the test LL rose well above the untrained model's
    report = json.loads((exp / "eval" / "report.json").read_text())
    summary = report["summary"]
    assert summary["files"] == 2 and report["info"]["step"] == 40
    config = load_experiment_config(exp / "config.yaml")
    torch.manual_seed(config.train.seed)
    untrained = build_model(config.model)
    files = read_filelist(data / "test.txt")[:2]
    before = evaluate(untrained, config.features, files, synthesis=False).ll
    assert before == pytest.approx(-0.92, abs=0.02)  # an identity flow: log N(x; 0, 1)
    assert summary["ll"] > before + 1.0, (before, summary["ll"])
    # Griffin-Lim from the same mels lands near the reference figures (PESQ 3.25, STOI 0.97)
    floor = summary["griffin_lim"]
    assert 2.8 < floor["pesq_wb"] < 3.8 and floor["stoi"] > 0.93 and floor["log_mel_l1"] < 0.2
    assert (exp / "eval" / "report.csv").is_file()

    # stage 4: the first test clip synthesized, as long as its recording; run again, it
    # replaces the folder whole, where an earlier run's wavs stayed beside the new ones
    (exp / "wav" / "earlier-run.wav").write_bytes(b"")
    rerun = run_recipe(
        LJSPEECH, "--stage", "4", "--conf", "conf/smoke.yaml", "--data-dir", str(data),
        "--exp", str(exp), "--synth-max-files", "1",
    )  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    first = read_filelist(data / "test.txt")[0]
    wav = exp / "wav" / f"{first.stem}.wav"
    assert sorted(p.name for p in (exp / "wav").iterdir()) == [wav.name]
    synthesized, recording = load_audio(wav), load_audio(first)
    assert abs(synthesized.numel() - recording.numel()) < 256
    assert torch.isfinite(synthesized).all() and synthesized.abs().max() > 0


def test_custom_voice_fine_tunes_on_tts_mels(male_reader_clips, tmp_path):
    """Every stage on the male-reader recordings: stage 1 (one file at 44.1 kHz, resampled),
    stage 2 from a "pretrained" model on TTS mels, stage 3's two reports, stage 4."""
    recordings, mels = tmp_path / "recordings", tmp_path / "tts_mels"
    recordings.mkdir()
    mels.mkdir()
    train_ids = (male_reader_clips / "train.txt").read_text().split()[:5]
    test_ids = (male_reader_clips / "test.txt").read_text().split()[:1]
    (recordings / "train.txt").write_text("\n".join(train_ids) + "\n")
    (recordings / "test.txt").write_text("\n".join(test_ids) + "\n")
    for name in train_ids[1:] + test_ids:
        (recordings / f"{name}.flac").symlink_to(male_reader_clips / "wavs" / f"{name}.flac")
    # one recording at another rate: stage 1 must resample it to the conf's 22050 Hz
    native = load_audio(male_reader_clips / "wavs" / f"{train_ids[0]}.flac", sample_rate=44100)
    save_audio(recordings / f"{train_ids[0]}.wav", native, 44100)
    for name in train_ids + test_ids:
        # a stand-in for a TTS model's teacher-forced mels: the true mel, perturbed
        source = next(recordings.glob(f"{name}.*"))
        mel = mel_spectrogram(load_audio(source, sample_rate=22050))
        mel += 0.1 * torch.randn(mel.shape, generator=torch.Generator().manual_seed(0))
        np.save(mels / f"{name}.npy", mel.numpy().astype(np.float32))

    # a "pretrained" model: 3 steps of the same tiny config
    pretrained = tmp_path / "pretrained"
    common = ["--conf", "conf/smoke.yaml", "--data-dir", str(tmp_path / "data")]
    done = run_recipe(
        CUSTOM, "--stage", "1", "--stop-stage", "2", "--audio-dir", str(recordings),
        *common, "--exp", str(pretrained), "--", "train.max_steps=3",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = json.loads((tmp_path / "data" / "manifest.json").read_text())
    assert manifest["counts"]["test"] == 1
    resampled = tmp_path / "data" / "wavs" / f"{train_ids[0]}.wav"
    assert audio_info(resampled).sample_rate == 22050

    exp = tmp_path / "exp"
    done = run_recipe(
        CUSTOM, "--stage", "2", "--stop-stage", "4", *common, "--exp", str(exp),
        "--init-from", str(pretrained), "--mel-dir", str(mels), "--synth-max-files", "1",
        "--", "train.max_steps=4",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "initialised from" in done.stderr
    state = load_checkpoint(latest_checkpoint(exp))
    assert state["step"] == 4 and state["config"]["data"]["mel_dir"] == str(mels)
    # stage 3: one report on the recordings' mels, one on the TTS mels (they differ)
    own = json.loads((exp / "eval" / "report.json").read_text())
    tts = json.loads((exp / "eval" / "report_tts_mels.json").read_text())
    assert own["info"]["mel_dir"] is None and tts["info"]["mel_dir"] == str(mels)
    assert [f["name"] for f in own["files"]] == test_ids == [f["name"] for f in tts["files"]]
    assert math.isfinite(own["summary"]["ll"]) and own["summary"]["ll"] != tts["summary"]["ll"]
    assert {"model", "griffin_lim"} <= set(own["summary"])
    # stage 4: the test clip synthesized from its TTS mel
    assert [p.name for p in (exp / "wav").iterdir()] == [f"{test_ids[0]}.wav"]

    # the TTS mels are really read: without one of them, training stops naming it
    missing = mels / f"{train_ids[0]}.npy"
    missing.unlink()
    done = run_recipe(
        CUSTOM, "--stage", "2", "--stop-stage", "2", *common, "--exp", str(tmp_path / "exp2"),
        "--mel-dir", str(mels), "--", "train.max_steps=2",
    )  # fmt: skip
    assert done.returncode == 2 and missing.name in done.stderr
    # ... and stage 4, without a test clip's mel, does not fall back to the recording's
    (mels / f"{test_ids[0]}.npy").unlink()
    done = run_recipe(CUSTOM, "--stage", "4", *common, "--exp", str(exp), "--mel-dir", str(mels))
    assert done.returncode == 2
    assert f"{mels / test_ids[0]}.npy: no such file (stage 4" in done.stderr


def small_voice(male_reader_clips: Path, folder: Path, listed: bool = True) -> Path:
    """A recordings folder of 5 male-reader clips (4 train, 1 test when `listed`)."""
    folder.mkdir()
    train_ids = (male_reader_clips / "train.txt").read_text().split()[:4]
    test_ids = (male_reader_clips / "test.txt").read_text().split()[:1]
    if listed:
        (folder / "train.txt").write_text("\n".join(train_ids) + "\n")
        (folder / "test.txt").write_text("\n".join(test_ids) + "\n")
    for name in train_ids + test_ids:
        (folder / f"{name}.flac").symlink_to(male_reader_clips / "wavs" / f"{name}.flac")
    return folder


def test_custom_voice_keeps_no_data_folder_it_would_not_make_now(male_reader_clips, tmp_path):
    """A rerun of stage 1 with another split or other recordings stopped nothing: it kept
    the old folder ("prepared already"), whose training list then held the new test ids."""
    voice = small_voice(male_reader_clips, tmp_path / "voice", listed=False)
    data = tmp_path / "data"
    stage_1 = ["--stage", "1", "--stop-stage", "1", "--conf", "conf/smoke.yaml"]
    done = run_recipe(CUSTOM, *stage_1, "--audio-dir", str(voice), "--data-dir", str(data))
    assert done.returncode == 0, done.stderr[-3000:]
    again = run_recipe(CUSTOM, *stage_1, "--audio-dir", str(voice), "--data-dir", str(data))
    assert again.returncode == 0 and "prepared already" in again.stdout
    (voice / "train.txt").write_text("")  # lists now: the default split becomes listed
    (voice / "test.txt").write_text("")
    listed = run_recipe(CUSTOM, *stage_1, "--audio-dir", str(voice), "--data-dir", str(data))
    assert listed.returncode == 2
    assert f"{data} was prepared with the random split, not listed" in listed.stderr
    other = small_voice(male_reader_clips, tmp_path / "other", listed=False)
    moved = run_recipe(CUSTOM, *stage_1, "--audio-dir", str(other), "--data-dir", str(data))
    assert moved.returncode == 2
    assert f"was prepared from {voice.resolve()}, not {other.resolve()}" in moved.stderr
    # a prepared folder alone (no --audio-dir) is taken as it is
    alone = run_recipe(CUSTOM, *stage_1, "--data-dir", str(data))
    assert alone.returncode == 0 and "prepared already" in alone.stdout


def test_custom_voice_words_bad_options_and_overrides_in_one_line(tmp_path):
    base = ["--conf", "conf/smoke.yaml", "--data-dir", str(tmp_path / "data")]
    done = run_recipe(CUSTOM, *base, "--ngpu", "x")
    assert (
        done.returncode == 2
        and done.stderr == "run.sh: --ngpu takes a positive whole number, got 'x'\n"
    )
    done = run_recipe(CUSTOM, *base, "--", "train.lrr=2e-4")
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith("error: override train.lrr=2e-4: ")


def test_a_stopped_recipe_stops_its_trainer(male_reader_clips, tmp_path):
    """kill -TERM of run.sh (a scheduler's stop) reaches the trainer once: it saves a
    checkpoint and ends, and the recipe with it. It used to train on, orphaned, holding the
    run folder's lock against the rerun."""
    voice = small_voice(male_reader_clips, tmp_path / "voice")
    data, exp = tmp_path / "data", tmp_path / "exp"
    common = ["--conf", "conf/smoke.yaml", "--audio-dir", str(voice), "--data-dir", str(data)]
    done = run_recipe(CUSTOM, *common, "--stop-stage", "1")
    assert done.returncode == 0, done.stderr[-3000:]
    log = tmp_path / "recipe.log"
    with log.open("w") as out:
        recipe = subprocess.Popen(
            ["bash", str(CUSTOM), *common, "--stage", "2", "--exp", str(exp), "--"]
            + ["data.batch_size=2", "train.max_steps=100000", "train.log_every=1"]
            + ["train.checkpoint_every=100000"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        try:
            deadline = time.monotonic() + 120
            while "step 2/" not in log.read_text() and time.monotonic() < deadline:
                assert recipe.poll() is None, log.read_text()[-3000:]
                time.sleep(0.5)
            recipe.send_signal(signal.SIGTERM)
            assert recipe.wait(timeout=120) == 143, log.read_text()[-3000:]
        finally:
            recipe.kill()
    trainers = subprocess.run(["pgrep", "-f", f"--out {exp}"], capture_output=True, text=True)
    assert trainers.stdout == "", "the trainer outlived its recipe"
    assert latest_checkpoint(exp) is not None  # saved on the way out
    assert "stage 3" not in log.read_text()


TINY = [  # the shipped conf, shrunk to a few CPU steps
    "model.n_flows=2", "model.n_layers=2", "model.channels=8", "data.batch_size=2",
    "data.num_workers=0", "data.valid_max_files=1", "data.valid_audio_clips=1",
    "train.max_steps=3", "train.log_every=1", "train.valid_every=3",
    "train.checkpoint_every=3", "train.device=cpu",
]  # fmt: skip


@pytest.mark.parametrize(
    "conf, rate, hop",
    [("waveflow-24k-hop300.yaml", 24000, 300), ("waveflow-44k-hop512.yaml", 44100, 512)],
)
def test_custom_voice_at_the_confs_rate_and_hop(male_reader_clips, tmp_path, conf, rate, hop):
    """Stages 1 to 4 on 22.05 kHz recordings with a 24 kHz / hop 300 or 44.1 kHz / hop 512
    conf: prepare works to the conf's convention, and training's mels have its hop and bins."""
    recordings, data, exp = tmp_path / "recordings", tmp_path / "data", tmp_path / "exp"
    recordings.mkdir()
    train_ids = (male_reader_clips / "train.txt").read_text().split()[:4]
    test_ids = (male_reader_clips / "test.txt").read_text().split()[:1]
    (recordings / "train.txt").write_text("\n".join(train_ids) + "\n")
    (recordings / "test.txt").write_text("\n".join(test_ids) + "\n")
    for name in train_ids + test_ids:
        (recordings / f"{name}.flac").symlink_to(male_reader_clips / "wavs" / f"{name}.flac")
    done = run_recipe(
        CUSTOM, "--stage", "1", "--stop-stage", "4", "--audio-dir", str(recordings),
        "--conf", f"conf/{conf}", "--data-dir", str(data), "--exp", str(exp),
        "--eval-max-files", "1", "--synth-max-files", "1", "--", *TINY,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    config = load_experiment_config(exp / "config.yaml")
    features = config.features
    assert (features.sample_rate, features.hop_length, features.n_mels) == (rate, hop, 80)
    assert (config.model.sample_rate, config.model.hop_length) == (rate, hop)

    # stage 1 prepared the folder for the conf's convention: the manifest states it, the
    # rewritten audio is at its rate, and no mels of another convention lie beside it
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["mel_config"] == to_dict(features)
    assert manifest["segment_length"] == config.data.segment_length
    files = read_filelist(data / "train.txt")
    assert len(files) == 3 and all(audio_info(f).sample_rate == rate for f in files)
    assert not (data / "mels").exists()

    # the mels training used: those of the trainer's segment dataset, exact slices of the
    # whole utterance's mel at the conf's hop and bin count
    dataset = SegmentDataset(files, features, config.data.segment_length, seed=config.train.seed)
    audio, mel = dataset[0]
    assert mel.shape == (80, config.data.segment_length // hop)
    whole = mel_spectrogram(load_audio(files[0], sample_rate=rate), features)
    assert whole.shape[1] == 1 + audio_info(files[0]).frames // hop
    frame = dataset.segment_start(0) // hop
    assert torch.equal(mel, whole[:, frame : frame + mel.shape[1]])
    assert load_checkpoint(latest_checkpoint(exp))["step"] == 3

    # stages 3 and 4 at the conf's rate
    report = json.loads((exp / "eval" / "report.json").read_text())
    assert math.isfinite(report["summary"]["ll"])
    wav = exp / "wav" / f"{test_ids[0]}.wav"
    assert audio_info(wav).sample_rate == rate
    recording = load_audio(male_reader_clips / "wavs" / f"{test_ids[0]}.flac", sample_rate=rate)
    assert abs(audio_info(wav).frames - recording.numel()) < hop

    # a folder prepared for another convention is refused by training, by name
    other = "waveflow-44k-hop512.yaml" if hop == 300 else "waveflow-24k-hop300.yaml"
    done = run_recipe(
        CUSTOM, "--stage", "2", "--stop-stage", "2", "--conf", f"conf/{other}",
        "--data-dir", str(data), "--exp", str(tmp_path / "exp2"), "--", *TINY,
    )  # fmt: skip
    error = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 2 and error.startswith(f"error: {data / 'manifest.json'}: ")
    assert f"hop_length ({hop} there" in error, error


def test_stage_0_verifies_the_archive_checksum(tmp_path):
    corpus = tmp_path / "src" / "LJSpeech-1.1"
    corpus.mkdir(parents=True)
    (corpus / "metadata.csv").write_text("LJ001-0001|x|x\n")
    archive = tmp_path / "LJSpeech-1.1.tar.bz2"
    with tarfile.open(archive, "w:bz2") as tar:
        tar.add(corpus, arcname="LJSpeech-1.1")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    db = tmp_path / "db"
    stage0 = ["--stage", "0", "--stop-stage", "0", "--db-root", str(db), "--archive", str(archive)]
    bad = run_recipe(LJSPEECH, *stage0, "--sha256", "0" * 64)
    assert bad.returncode == 2 and "SHA-256" in bad.stderr
    assert not db.exists()  # nor an empty db folder, as before
    good = run_recipe(LJSPEECH, *stage0, "--sha256", digest)
    assert good.returncode == 0, good.stderr
    assert (db / "LJSpeech-1.1" / "metadata.csv").is_file()


def test_recipe_rejects_unknown_options():
    done = run_recipe(LJSPEECH, "--stagee", "1")
    assert done.returncode == 2 and "unknown option --stagee" in done.stderr


def test_every_recipe_conf_is_valid():
    confs = sorted((REPO / "recipes").glob("*/conf/*.yaml"))
    assert len(confs) >= 14
    for conf in confs + sorted((REPO / "recipes" / "pretrained").glob("*.yaml")):
        config = load_experiment_config(conf)
        assert config.features.hop_length == config.model.hop_length, conf
        # the mel convention is stated once, in features, and not again in the model
        raw = yaml.safe_load(conf.read_text())
        for name in ("sample_rate", "hop_length", "n_mels"):
            assert name in raw["features"] and name not in raw["model"], (conf, name)
    mel = MelConfig()
    assert load_experiment_config(confs[0]).features.n_mels == mel.n_mels


PRETRAINED = REPO / "recipes" / "pretrained" / "run.sh"


@pytest.fixture(scope="module")
def tiny_run(male_reader_clips, tmp_path_factory) -> tuple[Path, Path]:
    """A prepared folder of 5 male-reader clips (1 test clip) and a 1-step run on it."""
    root = tmp_path_factory.mktemp("tiny_run")
    voice = small_voice(male_reader_clips, root / "voice")
    data, exp = root / "data", root / "exp"
    done = run_recipe(
        CUSTOM, "--stop-stage", "2", "--conf", "conf/smoke.yaml", "--audio-dir", str(voice),
        "--data-dir", str(data), "--exp", str(exp), "--", "data.batch_size=2", "train.max_steps=1",
        "train.checkpoint_every=1", "train.valid_every=1",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return data, exp


@pytest.mark.parametrize("script", [LJSPEECH, CUSTOM], ids=["ljspeech", "custom_voice"])
def test_stage_4_prints_paths_that_are_there_when_it_ends(tiny_run, tmp_path, script):
    """Stage 4 wrote into wav.new and renamed it wav: every path synthesize printed was gone
    when the stage ended, and its header counted --synth-max-files (10), not the 1 clip."""
    data, run = tiny_run
    exp = tmp_path / "exp"
    shutil.copytree(run, exp)
    stage_4 = ["--stage", "4", "--conf", "conf/smoke.yaml", "--data-dir", str(data)]
    done = run_recipe(script, *stage_4, "--exp", str(exp))
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0] == f"stage 4: synthesize 1 test clip -> {exp}/wav"
    assert lines[-1] == f"stage 4: 1 file in {exp}/wav"
    printed = [word for word in done.stdout.split() if ".wav" in word]
    assert printed and all(Path(word).is_file() for word in printed), printed
    assert f"outputs in {exp}/wav;" in done.stdout
    test_id = read_filelist(data / "test.txt")[0].stem
    assert sorted(p.name for p in exp.iterdir() if p.name.startswith("wav")) == ["wav"]
    assert [p.name for p in (exp / "wav").iterdir()] == [f"{test_id}.wav"]
    # a failed rerun (a test clip gone) puts the earlier complete folder back, and so does
    # the next run after a kill -9 (here: the earlier folder still aside, a partial one in wav)
    (exp / "wav").rename(exp / "wav.old")
    (exp / "wav").mkdir()
    (exp / "wav" / "partial.wav").write_bytes(b"")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "test.txt").write_text("gone.wav\n")
    failed = run_recipe(script, *stage_4[:-1], str(broken), "--exp", str(exp))
    assert failed.returncode == 2 and "gone.wav" in failed.stderr
    assert failed.stderr.endswith(
        f"stage 4 failed: {exp}/wav holds the earlier run's audio again\n"
    )
    assert sorted(p.name for p in exp.iterdir() if p.name.startswith("wav")) == ["wav"]
    assert [p.name for p in (exp / "wav").iterdir()] == [f"{test_id}.wav"]


def test_a_stage_run_before_its_inputs_exist_says_which_stage_makes_them(tiny_run, tmp_path):
    """Each stage alone, without what an earlier stage writes: one line naming that stage
    and exit 2, where stage 4 stopped on a bash redirection error (exit 1) and stages 1-3
    on vocoder's own error, which named no stage."""
    data, exp = tmp_path / "data", tmp_path / "exp"
    where = ["--conf", "conf/smoke.yaml", "--db-root", str(tmp_path / "db"), "--data-dir"]
    for stage, needs in [
        ("1", f"stage 1 needs the corpus {tmp_path / 'db' / 'LJSpeech-1.1'} (run stage 0"),
        ("2", f"stage 2 needs stage 1's prepared data in {data} (run stage 1 first)"),
        ("3", f"stage 3 needs stage 1's {data}/test.txt (run stage 1 first)"),
        ("4", f"stage 4 needs stage 1's {data}/test.txt (run stage 1 first)"),
    ]:
        done = run_recipe(
            LJSPEECH, "--stage", stage, "--stop-stage", stage, *where, str(data),
            "--exp", str(exp),
        )  # fmt: skip
        assert done.returncode == 2 and done.stderr.startswith(f"run.sh: {needs}"), done.stderr
        assert len(done.stderr.splitlines()) == 1, done.stderr
    # prepared data, but no run yet
    prepared, _ = tiny_run
    done = run_recipe(
        CUSTOM, "--stage", "3", *where[:2], "--data-dir", str(prepared), "--exp", str(exp)
    )
    assert done.returncode == 2, done.stderr
    assert (
        done.stderr == f"run.sh: stage 3 needs stage 2's checkpoint in {exp} (run stage 2 first)\n"
    )
    assert not exp.exists() and not data.exists()


def test_pretrained_recipe_in_a_plain_clone_names_the_missing_stage(tmp_path):
    """`run.sh 3 5` without ../shared ended in a Python traceback (register.py's InputError);
    stage 4 alone left a synthesize.log of its failure for stage 5 to read."""
    clone = tmp_path / "clone"
    shutil.copytree(PRETRAINED.parent, clone / "recipes" / "pretrained")
    shutil.copy(REPO / "recipes" / "stages.sh", clone / "recipes")
    script = clone / "recipes" / "pretrained" / "run.sh"
    env = {k: v for k, v in os.environ.items() if k != "SHARED"}
    env["PYTHONPATH"] = str(REPO)
    run_first = "first; stage 1 needs ../shared/data)\n"
    checkpoint = "stage 2's checkpoint exp/pretrained/wf-small (run stages 1-2 " + run_first
    for stages, error in [
        (["1", "5"], "stage 1 needs the shared data set ../shared/data/ljspeech-mini "),
        (["2", "2"], "stage 2 needs stage 1's list exp/pretrained/data/train.txt (run stage 1 "),
        (["3", "5"], "stage 3 needs " + checkpoint),
        (["4"], "stage 4 needs stage 3's fp32 model exp/pretrained/eval/fp32.safetensors (run "),
        (["5", "5"], "stage 5 needs " + checkpoint),
        (["0"], "stages are 1..5, got '0'"),
    ]:  # fmt: skip
        done = subprocess.run(
            ["bash", str(script), *stages], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 2, (stages, done.stderr)
        assert done.stderr.startswith(f"run.sh: {error}") and len(done.stderr.splitlines()) == 1
        assert done.stdout == "" and "Traceback" not in done.stderr
    assert sorted(p.name for p in clone.iterdir()) == ["recipes"]  # nothing written


def fake_curl(folder: Path, body: bytes, status: int) -> dict[str, str]:
    """An environment whose curl writes `body` to its -o file and exits with `status`."""
    folder.mkdir()
    (folder / "body").write_bytes(body)
    curl = folder / "curl"
    curl.write_text(
        "#!/bin/sh\n"
        f'while [ $# -gt 0 ]; do [ "$1" = -o ] && cat "{folder}/body" > "$2"; shift; done\n'
        f'echo "curl: failed" >&2; exit {status}\n'
    )
    curl.chmod(0o755)
    return {"PATH": f"{folder}:{os.environ['PATH']}"}


def test_a_failed_stage_0_leaves_nothing_it_made(tmp_path):
    """An offline download left an empty downloads/ folder (and wget an empty .part)."""
    db = tmp_path / "db" / "deeper"
    stage0 = ["--stage", "0", "--stop-stage", "0", "--db-root", str(db)]
    offline = run_recipe(LJSPEECH, *stage0, env=fake_curl(tmp_path / "offline", b"", 6))
    assert offline.returncode == 2
    assert offline.stderr.endswith("run.sh: download failed (offline? pass --archive)\n")
    assert not (tmp_path / "db").exists()
    # a damaged download is deleted (else every rerun failed on it); a cut one is kept to resume
    damaged = run_recipe(LJSPEECH, *stage0, env=fake_curl(tmp_path / "damaged", b"x", 0))
    assert damaged.returncode == 2 and "(the download is deleted)" in damaged.stderr
    assert not (tmp_path / "db").exists()
    cut = run_recipe(LJSPEECH, *stage0, env=fake_curl(tmp_path / "cut", b"x", 18))
    assert cut.returncode == 2
    assert [p.name for p in db.iterdir()] == ["LJSpeech-1.1.tar.bz2.part"]


def test_custom_voice_keeps_no_data_folder_whose_recordings_or_lists_changed(
    male_reader_clips, tmp_path
):
    """A clip moved from train.txt to test.txt, or a clip added, kept the old folder
    ("prepared already"): stage 2 then trained on the clip now held out for testing."""
    voice = small_voice(male_reader_clips, tmp_path / "voice")
    data = tmp_path / "data"
    stage_1 = ["--stage", "1", "--stop-stage", "1", "--conf", "conf/smoke.yaml"]
    stage_1 += ["--audio-dir", str(voice), "--data-dir", str(data)]
    done = run_recipe(CUSTOM, *stage_1)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "prepared already" in run_recipe(CUSTOM, *stage_1).stdout
    train_ids = (voice / "train.txt").read_text().split()
    (voice / "train.txt").write_text("\n".join(train_ids[1:]) + "\n")
    (voice / "test.txt").write_text((voice / "test.txt").read_text() + train_ids[0] + "\n")
    changed = run_recipe(CUSTOM, *stage_1)
    assert changed.returncode == 2
    assert changed.stderr.strip() == (
        f"error: {data} was prepared from {voice.resolve()} as it was before its recordings "
        "or lists changed: delete it to prepare it again, or give another --data-dir"
    )
