"""What an install puts in site-packages: the vocoder package, the demo inside it as
`vocoder.app`, and nothing named `app` to collide with a user's own package."""

from __future__ import annotations

import configparser
from pathlib import Path

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
    assert set(packages) == on_disk | {"vocoder.app"}
    assert all(name == "vocoder" or name.startswith("vocoder.") for name in packages)
    mapping = dict(
        (part.strip() for part in line.split("=", 1)) for line in _listed(_options()["package_dir"])
    )
    assert mapping == {"vocoder.app": "app"} and (REPO / "app" / "__init__.py").is_file()


def test_the_demo_imports_its_own_modules_relatively():
    # absolute `app.` imports would break once installed as vocoder.app
    for module in (REPO / "app").glob("*.py"):
        assert "from app" not in module.read_text() and "import app" not in module.read_text()
