"""Importing the NanoFlow reference code's checkpoints, checked against its own outputs.

The goldens (`../shared/reference/goldens/`) are checkpoints in the reference's published
format with what the reference code computed from them: the oracle. Without them (a plain
clone) the golden tests skip; the conversion's structure is still tested on a model of ours
written out in the reference's names.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from vocoder.checkpoint import latest_checkpoint, load_model
from vocoder.cli import main
from vocoder.config import to_dict
from vocoder.errors import ConfigError, InputError
from vocoder.flows.permutations import row_orders
from vocoder.flows.splines import DEFAULT_MIN_DERIVATIVE
from vocoder.flows.squeeze import squeeze, unsqueeze
from vocoder.importers import import_checkpoint, resolve_checkpoint
from vocoder.inference.engine import Synthesizer
from vocoder.models import ModelConfig, build_model

GOLDENS = Path(__file__).resolve().parents[2] / "shared" / "reference" / "goldens"
L0SG_GOLDENS = [
    "waveflow-small",
    "waveflow-small-nsf",
    "nanoflow-decomp-small",
    "nanoflow-naive-small",
    "nanoflow-small-nsf",
    "nanoflow-small-h8",
    "nanoflow-h16-r128-emb512",
]
needs_goldens = pytest.mark.skipif(
    not GOLDENS.is_dir(), reason=f"the reference goldens are not beside this checkout ({GOLDENS})"
)


def golden(name: str):
    """The imported model (with the reference config) and the reference's outputs."""
    imported = import_checkpoint(GOLDENS / f"{name}.pt", GOLDENS / f"{name}.json")
    data = np.load(GOLDENS / f"{name}.npz")
    return imported.model, {k: torch.from_numpy(data[k]) for k in data.files}


@needs_goldens
@pytest.mark.parametrize("name", L0SG_GOLDENS)
def test_imported_model_reproduces_the_reference(name):
    model, ref = golden(name)
    h = model.config.n_group
    with torch.no_grad():
        z, _ = model(ref["audio"], ref["mel"])
        ll = model.log_prob(ref["audio"], ref["mel"])
        # the reference's z is [1, 1, h, W] in the last flow's row order, which is the
        # original one after an even number of reversals (every golden has 4 or 8 flows)
        assert (squeeze(z, h) - ref["z"][:, 0]).abs().max().item() < 1e-4
        assert abs(ll.item() - ref["ll"].item()) < 1e-5
        # its reverse generates 63 * 256 - 768 samples from 63 frames: z is that long
        reverse_z = unsqueeze(ref["reverse_z"][:, 0])
        assert reverse_z.shape[1] == ref["reverse_audio"].shape[1] == 15360
        audio = model.inverse(reverse_z, ref["mel"])
    assert (audio - ref["reverse_audio"]).abs().max().item() < 1e-3


@needs_goldens
@pytest.mark.parametrize("name", ["waveflow-small-nsf", "nanoflow-small-nsf"])
def test_every_spline_knot_keeps_the_reference_derivative(name):
    """The goldens' inputs stay inside |x| < 4.2, where the outer bins (the first interior
    knot is near -4.7) are never reached: here each projection's bias, the spline's
    parameters where the network adds nothing, is compared knot by knot. The reference
    reads widths and heights as they are and an interior derivative as
    min_derivative + softplus(logit); this toolkit adds `derivative_offset` to the logit."""
    model, _ = golden(name)
    state = torch.load(GOLDENS / f"{name}.pt", weights_only=True)["model"]
    bins, spline = model.config.spline_bins, model.coupling.elementwise
    for k, projection in enumerate(model.projections):
        (key,) = [n for n in state if n.endswith("proj.conv.bias") and f"flows.{k}." in n]
        reference, imported = state[key], projection.bias.detach()
        assert imported.shape == reference.shape == (3 * bins - 1,)
        torch.testing.assert_close(imported[: 2 * bins], reference[: 2 * bins], rtol=0, atol=0)
        derivative = DEFAULT_MIN_DERIVATIVE + F.softplus(reference[2 * bins :])
        ours = DEFAULT_MIN_DERIVATIVE + F.softplus(imported[2 * bins :] + spline.derivative_offset)
        torch.testing.assert_close(ours, derivative, rtol=1e-6, atol=1e-6)


@needs_goldens
@pytest.mark.parametrize("name", ["nanoflow-h16-r128-emb512", "waveflow-small-nsf"])
def test_the_fast_engine_reproduces_the_reference_inverse(name):
    """Row-step engine (folded gates, cached biases, rows reversed before flow 0 too)."""
    model, ref = golden(name)
    synth = Synthesizer.from_model(model, device="cpu", precision="fp32")
    audio = synth.inverse(unsqueeze(ref["reverse_z"][:, 0])[0], ref["mel"][0])
    assert (audio - ref["reverse_audio"][0]).abs().max().item() < 1e-3


@needs_goldens
@pytest.mark.parametrize(
    "name, height", [("waveflow-small", 16), ("nanoflow-small-h8", 8), ("nanoflow-small-nsf", 16)]
)
def test_without_the_reference_config_the_shapes_tell_the_architecture(name, height):
    with_config, _ = golden(name)
    imported = import_checkpoint(GOLDENS / f"{name}.pt", n_height=height)
    assert imported.model.config == with_config.config
    for key, value in with_config.state_dict().items():
        torch.testing.assert_close(imported.model.state_dict()[key], value, rtol=0, atol=0)


@needs_goldens
def test_reference_variants_are_what_the_import_builds():
    model, _ = golden("nanoflow-h16-r128-emb512")
    c = model.config
    assert (c.family, c.sharing, c.embedding_variant) == ("nanoflow", "full", "reference")
    assert c.permute_first_flow and c.embedding_dim == 512
    assert model.flow_indication.log_gates is None
    assert model.flow_indication.residual_gates.shape == (8, 7, 128)
    # the paper's NanoFlow: 2.818 M; the last layer's unused residual half is dropped
    assert model.parameter_count(inference_form=True) == 2_802_002
    naive, _ = golden("nanoflow-naive-small")
    assert naive.config.sharing == "naive" and len(naive.projections) == 1


def test_rows_are_reversed_before_every_flow_including_the_first():
    reverse = list(range(3, -1, -1))
    orders = row_orders("reverse", 4, 3, first_flow=True).tolist()
    assert orders == [reverse, [0, 1, 2, 3], reverse]
    assert row_orders("reverse", 4, 3).tolist() == [[0, 1, 2, 3], reverse, [0, 1, 2, 3]]


@needs_goldens
def test_cli_import_then_load_model(tmp_path, capsys):
    src = GOLDENS / "nanoflow-small-h8.pt"  # DataParallel names, optimizer state
    out = tmp_path / "models" / "h8"
    assert main(["import", str(src), "--out", str(out), "--n-height", "8"]) == 0
    assert "nanoflow from nanoflow-small-h8.pt" in capsys.readouterr().out
    model, info = load_model(out.with_suffix(".safetensors"))
    assert info.form == "training" and info.metadata["imported_from"] == "L0SG/NanoFlow"
    ref = np.load(GOLDENS / "nanoflow-small-h8.npz")
    with torch.no_grad():
        ll = model.log_prob(torch.from_numpy(ref["audio"]), torch.from_numpy(ref["mel"]))
    assert abs(ll.item() - float(ref["ll"])) < 1e-5
    # no silent overwrite
    assert main(["import", str(src), "--out", str(out), "--n-height", "8"]) == 2
    assert "already exists" in capsys.readouterr().err


@needs_goldens
def test_stray_h_cache_is_ignored_and_foreign_tensors_are_refused(tmp_path):
    state = torch.load(GOLDENS / "nanoflow-small-nsf.pt", weights_only=True)
    state["model"]["h_cache"] = torch.zeros(4, 4, 32, 1, 1)
    torch.save(state, tmp_path / "published.pt")
    imported = import_checkpoint(tmp_path / "published.pt", GOLDENS / "nanoflow-small-nsf.json")
    assert imported.model.config.coupling == "rqs"
    state["model"]["something.else"] = torch.zeros(3)
    torch.save(state, tmp_path / "odd.pt")
    with pytest.raises(InputError, match=r"odd\.pt: 1 tensors fit no part .*something\.else"):
        import_checkpoint(tmp_path / "odd.pt")


@needs_goldens
def test_config_mismatch_and_missing_flow_count_are_one_line_errors(tmp_path):
    with pytest.raises(InputError, match="does not record its number of flows") as e:
        import_checkpoint(GOLDENS / "nanoflow-naive-small.pt")
    assert "\n" not in str(e.value)
    wrong = tmp_path / "wrong.json"
    config = json.loads((GOLDENS / "waveflow-small.json").read_text())
    config["waveflow_config"]["res_channels"] = 64
    wrong.write_text(json.dumps(config))
    with pytest.raises(InputError, match="the config says res_channels 64, the weights have 16"):
        import_checkpoint(GOLDENS / "waveflow-small.pt", wrong)
    # the file whose value is wrong is the one named (it was the checkpoint)
    with pytest.raises(InputError) as e:
        import_checkpoint(GOLDENS / "waveflow-small.pt", wrong)
    assert e.value.source == str(wrong)


@needs_goldens
def test_a_rearranged_tensor_is_refused_not_reshaped(tmp_path):
    data = torch.load(GOLDENS / "waveflow-small.pt", weights_only=True)
    key = "upsample_conv.0.weight_v"
    data["model"][key] = data["model"][key].transpose(2, 3).contiguous()  # (1, 1, 32, 3)
    torch.save(data, tmp_path / "transposed.pt")
    with pytest.raises(InputError, match=r"has shape \(1, 1, 32, 3\), the model expects \(1, 1, 3"):
        import_checkpoint(tmp_path / "transposed.pt", GOLDENS / "waveflow-small.json")


@needs_goldens
def test_a_damaged_layer_is_named_not_the_intact_one_after_it(tmp_path):
    data = torch.load(GOLDENS / "waveflow-small.pt", weights_only=True)
    key = "flows.0.coupling.net.res_blocks.0.filter_gate_conv_c.weight_v"
    data["model"][key] = data["model"][key][:, :40].contiguous()
    torch.save(data, tmp_path / "cut.pt")
    with pytest.raises(InputError, match=rf"{key} has 40 input channels, where \d+ of the"):
        import_checkpoint(tmp_path / "cut.pt", GOLDENS / "waveflow-small.json")


@needs_goldens
def test_a_bare_state_dict_imports_as_the_saved_checkpoint(tmp_path):
    data = torch.load(GOLDENS / "waveflow-small.pt", weights_only=True)
    torch.save(data["model"], tmp_path / "bare.pt")  # torch.save(model.state_dict())
    bare = import_checkpoint(tmp_path / "bare.pt", GOLDENS / "waveflow-small.json")
    saved = import_checkpoint(GOLDENS / "waveflow-small.pt", GOLDENS / "waveflow-small.json")
    for (name, a), (_, b) in zip(
        bare.model.state_dict().items(), saved.model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


@needs_goldens
def test_a_config_that_describes_another_model_is_refused(tmp_path):
    with pytest.raises(
        InputError, match="coupling_type 'nanoflow_decomp', the weights are a 'nano"
    ):
        import_checkpoint(GOLDENS / "nanoflow-small-nsf.pt", GOLDENS / "nanoflow-decomp-small.json")
    affine = tmp_path / "affine.json"
    config = json.loads((GOLDENS / "nanoflow-small-nsf.json").read_text())
    config["waveflow_config"]["bijection"] = "affine"
    affine.write_text(json.dumps(config))
    with pytest.raises(InputError, match="bijection 'affine', the weights are RQ-NSF"):
        import_checkpoint(GOLDENS / "nanoflow-small-nsf.pt", affine)
    config = json.loads((GOLDENS / "nanoflow-small-nsf.json").read_text())
    config["waveflow_config"]["size_flow_embed"] = 512  # the published model's; this has 32
    (tmp_path / "embed.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match="the config says size_flow_embed 512, the weights have"):
        import_checkpoint(GOLDENS / "nanoflow-small-nsf.pt", tmp_path / "embed.json")
    # a config of no reference codebase (HiFi-GAN's; this toolkit's own model JSON)
    hifigan = {"resblock": "1", "num_mels": 80, "upsample_rates": [8, 8, 2, 2]}
    toolkit = {"format": "vocoder-export", "model": {"family": "nanoflow", "n_group": 8}}
    for name, document in [("hifigan.json", hifigan), ("model.json", toolkit)]:
        (tmp_path / name).write_text(json.dumps(document))
        for source in ("nanoflow-small-h8.pt", "waveglow-small.pt"):
            with pytest.raises(InputError) as error:
                import_checkpoint(GOLDENS / source, tmp_path / name)
            assert error.value.source == str(tmp_path / name)
            wanted = "waveflow_config.n_height" if "flow" in source else "waveglow_config.n_flows"
            assert f"no {wanted}: not a config of " in str(error.value)
    glow = GOLDENS / "waveglow-small.json"
    with pytest.raises(InputError, match="waveglow-small.json: a config with waveglow_config"):
        import_checkpoint(GOLDENS / "waveflow-small.pt", glow)
    with pytest.raises(InputError, match="a config with waveflow_config, not waveglow_config"):
        import_checkpoint(GOLDENS / "waveglow-small.pt", GOLDENS / "waveflow-small.json")


@needs_goldens
def test_malformed_values_in_a_checkpoint_or_config_are_one_line(tmp_path, capsys):
    data = torch.load(GOLDENS / "nanoflow-small-nsf.pt", weights_only=True)
    gates = data["model"]["flows.2.multgate"]
    data["model"]["flows.2.multgate"] = gates[:, :8]  # one flow's gates cut short
    torch.save(data, tmp_path / "gates.pt")
    data["model"]["flows.2.multgate"] = None
    torch.save(data, tmp_path / "none.pt")
    words = json.loads((GOLDENS / "waveflow-small-nsf.json").read_text())
    words["waveflow_config"]["tail_bound"] = "five"
    (tmp_path / "words.json").write_text(json.dumps(words))
    cases = [
        (["gates.pt"], "cannot be converted (stack expects each tensor to be equal size"),
        (["none.pt"], "flows.2.multgate is a NoneType, not a tensor"),
        ([GOLDENS / "waveflow-small-nsf.pt", "--config", tmp_path / "words.json"], "tail_bound"),
    ]
    for (source, *rest), problem in cases:
        out = tmp_path / "out" / "model"
        assert main(["import", str(tmp_path / source), *map(str, rest), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and problem in err and err.count("\n") == 1, err
        named = rest[-1] if rest else tmp_path / source
        assert err.startswith(f"error: {named}: "), err
        assert not (tmp_path / "out").exists()


@needs_goldens
def test_the_missing_flow_count_points_to_the_command_that_takes_a_config(tmp_path, capsys):
    naive = str(GOLDENS / "nanoflow-naive-small.pt")
    assert main(["info", naive]) == 2  # info has no --config: import has
    assert capsys.readouterr().err.endswith(
        "does not record its number of flows; pass --config FILE (the reference config) to "
        "vocoder import\n"
    )
    assert main(["import", naive, "--out", str(tmp_path / "naive")]) == 2
    assert capsys.readouterr().err.endswith("pass --config FILE (the reference config)\n")


def test_foreign_files_give_one_line(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint\n")
    with pytest.raises(InputError) as e:
        import_checkpoint(text)
    assert str(e.value).startswith(str(text)) and "\n" not in str(e.value)
    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(3)}, plain)
    with pytest.raises(InputError, match="not a checkpoint format this toolkit imports"):
        import_checkpoint(plain)


@needs_goldens
def test_model_option_runs_published_weights_on_the_fly(tmp_path, monkeypatch, capsys, caplog):
    """`--model OFFICIAL.pt`: imported once into the cache (keyed by sha256), then reused."""
    monkeypatch.setenv("VOCODER_CACHE", str(tmp_path / "cache"))
    caplog.set_level(logging.INFO, logger="vocoder.importers")
    src = tmp_path / "waveflow.pt"
    src.write_bytes((GOLDENS / "waveflow-small.pt").read_bytes())
    mel = np.load(GOLDENS / "waveflow-small.npz")["mel"][0]
    np.save(tmp_path / "utt.npy", mel)
    args = ["synthesize", str(tmp_path / "utt.npy"), "--model", str(src), "--seed", "0"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    cached = sorted((tmp_path / "cache" / "imported").glob("*.safetensors"))
    assert len(cached) == 1 and f"imported {src}" in caplog.text
    assert f"{src}: h = 16 rows assumed, as in every published model" in caplog.text
    assert capsys.readouterr().out.startswith("model waveflow (")
    stamp = os.stat(cached[0]).st_mtime_ns
    renamed = tmp_path / "renamed.pt"
    src.rename(renamed)  # the cache is keyed by content, not by name
    caplog.clear()
    assert resolve_checkpoint(renamed) == cached[0]
    assert os.stat(cached[0]).st_mtime_ns == stamp
    # the assumption is said on every use: only the first had said it (`info` of an h = 8
    # checkpoint then gave h = 16 figures without a word)
    assert f"{renamed}: h = 16 rows assumed" in caplog.text
    assert main(["info", str(renamed)]) == 0
    assert "waveflow" in capsys.readouterr().out
    # a damaged cache entry (a full disk, a crash) is imported again, not an error forever
    cached[0].write_bytes(cached[0].read_bytes()[:1000])
    assert resolve_checkpoint(renamed) == cached[0]
    assert load_model(cached[0])[0].config.family == "waveflow"


@needs_goldens
def test_import_and_export_never_write_over_the_files_they_read(tmp_path, capsys):
    """The config saved beside its checkpoint under the same name (as the README says) would
    be the import's JSON: refused even with --force; so is an export over its model."""
    for name in ("nanoflow-small-h8.pt", "nanoflow-small-h8.json"):
        (tmp_path / name).write_bytes((GOLDENS / name).read_bytes())
    src, config = tmp_path / "nanoflow-small-h8.pt", tmp_path / "nanoflow-small-h8.json"
    kept = config.read_bytes()
    args = ["import", str(src), "--config", str(config), "--out", f"{tmp_path}/", "--force"]
    assert main(args) == 2
    assert f"{config}: is a file this model is made from" in capsys.readouterr().err
    assert config.read_bytes() == kept and not (tmp_path / "nanoflow-small-h8.safetensors").exists()
    assert main([*args[:-2], str(tmp_path / "imported")]) == 0
    model = tmp_path / "imported.safetensors"
    trained = model.read_bytes()
    for out in (str(tmp_path / "imported"), f"{tmp_path}/"):
        assert main(["export", str(model), "--out", out, "--force"]) == 2
        assert f"{model}: is a file this model is made from" in capsys.readouterr().err
    assert model.read_bytes() == trained


@needs_goldens
@pytest.mark.slow
@pytest.mark.parametrize("source", ["nanoflow-small-nsf.pt", "waveglow-small.pt"])
def test_fine_tuning_starts_from_an_imported_checkpoint(tmp_path, ljspeech_clips, source):
    src = GOLDENS / source
    config_json = GOLDENS / source.replace(".pt", ".json")
    stem = tmp_path / "imported"
    args = ["import", str(src), "--out", str(stem)]
    if source.startswith("nanoflow"):
        args += ["--config", str(config_json)]
    assert main(args) == 0
    imported, info = load_model(stem.with_suffix(".safetensors"))
    ids = (ljspeech_clips / "train.txt").read_text().split()[:3]
    data = tmp_path / "data"
    data.mkdir()
    for part in ("train", "valid"):
        (data / f"{part}.txt").write_text(
            "".join(f"{ljspeech_clips / 'wavs' / n}.wav\n" for n in ids)
        )
    model_section = to_dict(info.model)
    config = {
        "features": to_dict(info.features),
        "model": model_section,
        "data": {
            "prepared": str(data),
            "segment_length": 4096,
            "batch_size": 1,
            "num_workers": 0,
            "valid_max_files": 1,
            "valid_audio_clips": 0,
        },
        "train": {
            "max_steps": 2,
            "lr": 1e-5,
            "log_every": 1,
            "valid_every": 100,
            "checkpoint_every": 100,
            "device": "cpu",
            "init_from": str(stem.with_suffix(".safetensors")),
        },
    }
    conf = tmp_path / "conf.yaml"
    conf.write_text(yaml.safe_dump(config))
    run = tmp_path / "run"
    assert main(["train", "--config", str(conf), "--out", str(run)]) == 0
    tuned, _ = load_model(latest_checkpoint(run))
    before, after = imported.state_dict(), tuned.state_dict()
    assert before.keys() == after.keys()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed  # it trained
    # two tiny steps from the imported weights, not from a fresh initialisation
    fresh = build_model(ModelConfig(**model_section)).state_dict()
    drift = max((after[k] - before[k]).abs().max().item() for k in before)
    gap = max((fresh[k] - before[k]).abs().max().item() for k in before)
    assert drift < 0.1 * gap


def test_a_bad_height_or_a_folder_is_named_not_blamed_on_the_checkpoint(tmp_path, capsys):
    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(3)}, plain)
    out = str(tmp_path / "out" / "model")
    for height in (0, -4, 3, 512):  # h must divide the reference models' hop of 256
        assert main(["import", str(plain), "--out", out, "--n-height", str(height)]) == 2
        assert capsys.readouterr().err == (
            "error: --n-height must divide the reference models' hop of 256 (1, 2, 4, ..., "
            f"256), got {height}\n"
        )
    with pytest.raises(ConfigError, match="^n_height must divide .* got 24$"):
        import_checkpoint(plain, n_height=24)
    folder = tmp_path / "run"
    folder.mkdir()
    assert main(["import", str(folder), "--out", out]) == 2
    assert capsys.readouterr().err == f"error: {folder}: a folder, not a checkpoint file\n"
    assert main(["import", str(plain), "--config", str(folder), "--out", out]) == 2
    assert capsys.readouterr().err == f"error: {folder}: a folder, not a JSON config file\n"
    assert not (tmp_path / "out").exists()
