"""What an install puts in site-packages: the vocoder package, the demo inside it as
`vocoder.app`, the shipped weights as `vocoder.shipped`, and nothing named `app` or
`pretrained` to collide with a user's own package; a wheel install runs the default model."""

from __future__ import annotations

import configparser
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _options() -> configparser.SectionProxy:
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    return setup["options"]


def _listed(value: str) -> list[str]:
    return [line.strip() for line in value.splitlines() if line.strip()]


def test_every_subpackage_installs_and_the_demo_only_inside_vocoder():
    packages = _listed(_options()["packages"])
    on_disk = {
        ".".join(init.parent.relative_to(REPO).parts)
        for init in (REPO / "vocoder").rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    assert set(packages) == on_disk | {"vocoder.app", "vocoder.shipped"}
    assert all(name == "vocoder" or name.startswith("vocoder.") for name in packages)
    mapping = dict(
        (part.strip() for part in line.split("=", 1)) for line in _listed(_options()["package_dir"])
    )
    assert mapping == {"vocoder.app": "app", "vocoder.shipped": "pretrained"}
    assert (REPO / "app" / "__init__.py").is_file()
    assert (REPO / "pretrained" / "__init__.py").is_file()


def test_the_demo_imports_its_own_modules_relatively():
    # absolute `app.` imports would break once installed as vocoder.app
    for module in (REPO / "app").glob("*.py"):
        assert "from app" not in module.read_text() and "import app" not in module.read_text()


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The package built as a wheel and installed (no dependencies) into a folder of its own."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"  # setuptools builds in the tree: not in the checkout's
    for name in _source_files():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    build = [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist")]
    done = subprocess.run([*build, str(source)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (wheel,) = (tmp / "dist").glob("vocoder-*.whl")
    target = tmp / "site"
    done = subprocess.run(
        [*pip, "install", "--no-deps", "--target", str(target), str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return target


def _source_files() -> list[str]:
    """The checkout's files as git sees them (ignored ones, such as a venv, left out)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [n for n in listed.split("\0") if n and (REPO / n).is_file()]


def test_a_wheel_carries_the_shipped_model_configs_and_demo_examples(installed):
    shipped = installed / "vocoder" / "shipped"
    registry = json.loads((shipped / "registry.json").read_text())
    files = [f["name"] for model in registry["models"] for f in model["files"]]
    assert files and all((shipped / name).is_file() for name in files)
    assert sorted(p.name for p in (installed / "vocoder" / "configs").glob("*.yaml")) == sorted(
        p.name for p in (REPO / "vocoder" / "configs").glob("*.yaml")
    )
    examples = {p.name for p in (REPO / "app" / "examples").iterdir()}
    assert {p.name for p in (installed / "vocoder" / "app" / "examples").iterdir()} == examples
    assert not (installed / "app").exists() and not (installed / "pretrained").exists()


def test_a_wheel_install_synthesizes_with_the_default_model(installed, tmp_path):
    """It could not before: the registry and the weights lived only in the source tree."""
    example = installed / "vocoder" / "app" / "examples" / "LJ050-0030.wav"
    env = {**os.environ, "PYTHONPATH": str(installed), "OMP_NUM_THREADS": "1"}
    env.pop("VOCODER_REGISTRY", None)
    command = [sys.executable, "-m", "vocoder", "synthesize", str(example), "--out", "out"]
    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "out" / "LJ050-0030.wav").is_file()
    where = subprocess.run(
        [sys.executable, "-c", "import vocoder.pretrained as p; print(p.PRETRAINED_DIR)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert Path(where.stdout.strip()) == installed / "vocoder" / "shipped"
