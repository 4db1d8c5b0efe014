"""The published (not shipped) weights: the registry's `published` list, `vocoder models`
listing them with their import lines, and `vocoder models --download` (offline: a local HTTP
server on 127.0.0.1 stands for the host; any other URL fails the test)."""

from __future__ import annotations

import hashlib
import json
import shlex
import threading
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import vocoder.pretrained as pretrained
from vocoder.cli import main
from vocoder.errors import ConfigError, InputError
from vocoder.pretrained import (
    PRETRAINED_DIR,
    download_published,
    list_models,
    load_published,
    sha256_file,
)

RECORD = json.loads((PRETRAINED_DIR / "registry.json").read_text())
PUBLISHED = load_published()
L0SG_LL = {  # test LL (nats/sample) in the L0SG/NanoFlow README's table
    "waveflow-h16-r64": 5.1499,
    "waveflow-h16-r128": 5.2263,
    "nanoflow-h16-r128-emb512": 5.1711,
    "nanoflow-h16-r128-emb1024-f16": 5.2024,
}
PAYLOAD = bytes(range(256)) * 40  # 10 KiB standing for a checkpoint


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    """No user registry or cache, no proxy for 127.0.0.1, and no URL but the local server's."""
    monkeypatch.delenv("VOCODER_REGISTRY", raising=False)
    monkeypatch.setenv("VOCODER_CACHE", str(tmp_path / "user-cache"))
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")
    real = urllib.request.urlopen

    def local_only(url, *args, **kwargs):
        host = urllib.parse.urlsplit(url if isinstance(url, str) else url.full_url).hostname
        assert host == "127.0.0.1", f"a test tried to reach {url}"
        return real(url, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", local_only)


class _Host(BaseHTTPRequestHandler):
    """/weights.pt: the payload; /error: HTTP 500; /truncated: a body cut short."""

    def do_GET(self):  # noqa: N802 (http.server's name)
        if self.path == "/weights.pt":
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD)
        elif self.path == "/truncated":
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD[:1000])
            self.close_connection = True
        else:
            self.send_error(500, "Internal Server Error")

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    """The base URL of a local HTTP server (in a thread) serving `_Host`."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Host)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def _item(name: str) -> dict:
    return json.loads(json.dumps(next(p for p in RECORD["published"] if p["name"] == name)))


def _registry(folder: Path, monkeypatch, *items: dict, models: list | None = None) -> Path:
    """A registry in `folder` with the shipped models and `items` as its published list,
    named by $VOCODER_REGISTRY (as the CLI reads it)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "registry.json"
    record = {"format": 1, "models": RECORD["models"] if models is None else models}
    path.write_text(json.dumps({**record, "published": list(items)}))
    monkeypatch.setenv("VOCODER_REGISTRY", str(path))
    return path


def _hosted(server: str, route: str = "/weights.pt", **changes) -> dict:
    """The NGC fp32 WaveGlow entry, hosted on the local server."""
    item = _item("waveglow-ngc-fp32")
    item.update(urls=[server + route], **changes)
    return item


def _files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# ---- the list ----


def test_the_published_list_holds_the_authors_checkpoints():
    names = [e.name for e in PUBLISHED]
    assert set(L0SG_LL) < set(names)
    assert {"waveglow-256ch-universal-v5", "waveglow-ngc-fp32"} < set(names)
    assert not set(names) & {e.name for e in list_models()}
    for entry in PUBLISHED:
        words = shlex.split(entry.import_command)
        assert words[:3] == ["vocoder", "import", entry.file] and "--out" in words
        host = urllib.parse.urlsplit(entry.urls[0]).hostname
        if entry.download == "direct":  # plain HTTPS only; Drive needs a browser
            assert all(u.startswith("https://") for u in entry.urls) and "google" not in host
        else:
            assert host == "drive.google.com"
        assert entry.sha256 is None or len(entry.sha256) == 64
    for name, ll in L0SG_LL.items():
        entry = next(e for e in PUBLISHED if e.name == name)
        assert entry.ll == ll and entry.source == "L0SG/NanoFlow" and entry.download == "manual"
        assert entry.config == f"{name}.json" and f"configs/{name}.json" in entry.config_source
        assert f"--config {name}.json" in entry.import_command
    universal = next(e for e in PUBLISHED if e.name == "waveglow-256ch-universal-v5")
    assert universal.file == "waveglow_256channels_universal_v5.pt" and universal.ll is None


@pytest.mark.parametrize(
    "change, field, problem",
    [
        ({"file": None}, r"published\[0\]", "missing 'file'"),
        ({"colour": "red"}, r"published\[0\]", "unknown key"),
        ({"download": "maybe"}, ".download", "expected 'direct' or 'manual'"),
        ({"download": "direct"}, ".download", "drive.google.com needs a browser"),
        ({"ll": "5.15"}, ".ll", "expected a number"),
        ({"size": -1}, ".size", "positive whole number"),
        ({"sha256": "abc"}, ".sha256", "64 lower-case hex digits"),
        ({"urls": []}, ".urls", "non-empty list"),
        ({"urls": ["ftp://example.org/x"]}, r".urls\[0\]", "not an https"),
        ({"file": "../x.pt"}, ".file", "plain file name"),
        ({"import_command": "vocoder import other.pt --out m"}, ".import_command", "expected"),
        ({"config": "other.json"}, ".import_command", "--config other.json"),
        ({"name": "waveflow-small-cpu"}, ".name", "already a shipped model"),
        ({"licence": ""}, ".licence", "non-empty string"),
    ],
)
def test_a_malformed_entry_is_a_config_error_naming_the_field(
    change, field, problem, tmp_path, monkeypatch
):
    item = _item("waveflow-h16-r64")
    for key, value in change.items():
        if value is None:
            del item[key]
        else:
            item[key] = value
    path = _registry(tmp_path, monkeypatch, item)
    with pytest.raises(ConfigError, match=rf"{field}: .*{problem}") as caught:
        load_published(path)
    assert str(caught.value).startswith(f"{path}: published[0]")
    assert "\n" not in str(caught.value)


def test_the_cli_reports_a_malformed_list_in_one_line(tmp_path, monkeypatch, capsys):
    _registry(tmp_path, monkeypatch, {**_item("waveflow-h16-r64"), "ll": "high"})
    assert main(["models"]) == 2
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and err.startswith("error: ") and ".ll: " in err


def test_a_registry_without_a_published_list_lists_none(tmp_path, monkeypatch, capsys):
    path = tmp_path / "registry.json"
    path.write_text(json.dumps({"format": 1, "models": RECORD["models"]}))
    assert load_published(path) == []
    monkeypatch.setenv("VOCODER_REGISTRY", str(path))
    assert main(["models"]) == 0
    assert "Published weights" not in capsys.readouterr().out


# ---- `vocoder models` ----


def test_vocoder_models_lists_each_published_name_and_its_import_line(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    shipped, published = out.split("\nPublished weights (download, then `vocoder import`):\n")
    assert shipped.splitlines()[0].split()[:3] == ["name", "family", "params"]
    assert all(e.name not in shipped for e in PUBLISHED)
    lines = published.splitlines()
    for entry in PUBLISHED:
        row = next(i for i, line in enumerate(lines) if line.startswith(entry.name + " "))
        assert entry.source in lines[row] and entry.licence in lines[row]
        assert lines[row + 1].strip() == entry.import_command
        if entry.ll is not None:
            assert f"{entry.ll:.4f}" in lines[row]
    assert "--download" in next(line for line in lines if line.startswith("waveglow-ngc-fp32"))


@pytest.mark.parametrize("name", ["nanoflow-h16-r128-emb512", "waveglow-ngc-fp32"])
def test_vocoder_models_name_shows_a_published_entry_in_full(name, capsys):
    entry = next(e for e in PUBLISHED if e.name == name)
    assert main(["models", name]) == 0
    out = capsys.readouterr().out
    assert entry.urls[0] in out and entry.page in out and entry.import_command in out
    download = next(line for line in out.splitlines() if line.startswith("download "))
    if entry.download == "manual":
        assert "by hand" in download and entry.config_source in out
    else:
        assert f"vocoder models --download {name}" in download and "unverified" in download


def test_to_and_force_need_download(capsys):
    assert main(["models", "--to", "somewhere"]) == 2
    assert capsys.readouterr().err.startswith("error: --to: goes with --download")


# ---- `vocoder models --download` ----


def test_download_writes_the_file_and_prints_the_import_line(server, tmp_path, monkeypatch, capsys):
    item = _hosted(server)
    _registry(tmp_path / "reg", monkeypatch, item)
    dest = tmp_path / "downloads"
    assert main(["models", "--download", item["name"], "--to", str(dest)]) == 0
    out = capsys.readouterr().out
    assert _files_under(dest) == [dest / item["file"]]  # no temporary file left beside it
    assert (dest / item["file"]).read_bytes() == PAYLOAD
    assert "unverified" in out
    expected = item["import_command"].replace(item["file"], str(dest / item["file"]), 1)
    assert f"next: {expected}\n" in out


def test_download_to_the_current_folder_prints_the_line_as_listed(
    server, tmp_path, monkeypatch, capsys
):
    item = _hosted(server, sha256=hashlib.sha256(PAYLOAD).hexdigest())
    _registry(tmp_path / "reg", monkeypatch, item)
    monkeypatch.chdir(tmp_path)
    assert main(["models", "--download", item["name"]]) == 0
    out = capsys.readouterr().out
    assert sha256_file(tmp_path / item["file"]) == item["sha256"]
    assert "sha256 checked" in out and f"next: {item['import_command']}\n" in out


@pytest.mark.parametrize(
    "route, changes, message",
    [
        ("/error", {}, "download failed (HTTP 500"),
        ("/truncated", {}, "closed after 1000 of 10240 bytes"),
        ("/weights.pt", {"sha256": "0" * 64}, "does not match"),
    ],
    ids=["server-error", "truncated", "wrong-sha256"],
)
def test_a_failed_download_leaves_nothing(
    route, changes, message, server, tmp_path, monkeypatch, capsys
):
    item = _hosted(server, route, **changes)
    _registry(tmp_path / "reg", monkeypatch, item)
    dest = tmp_path / "downloads"
    assert main(["models", "--download", item["name"], "--to", str(dest)]) == 2
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err
    assert not dest.exists(), "the folder this download created is left behind"


def test_an_interrupted_download_leaves_nothing(server, tmp_path, monkeypatch):
    entry = load_published(_registry(tmp_path / "reg", monkeypatch, _hosted(server)))[0]

    def interrupted(url, out, limit=None):
        out.write(PAYLOAD[:100])
        raise KeyboardInterrupt

    monkeypatch.setattr(pretrained.download, "_fetch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        download_published(entry, tmp_path / "downloads")
    assert not (tmp_path / "downloads").exists()


def test_an_existing_file_is_kept_unless_forced(server, tmp_path, monkeypatch, capsys):
    item = _hosted(server)
    _registry(tmp_path / "reg", monkeypatch, item)
    dest = tmp_path / "downloads"
    dest.mkdir()
    (dest / item["file"]).write_bytes(b"the user's own file")
    assert main(["models", "--download", item["name"], "--to", str(dest)]) == 2
    assert "already exists; refusing to overwrite it" in capsys.readouterr().err
    assert _files_under(dest) == [dest / item["file"]]
    assert (dest / item["file"]).read_bytes() == b"the user's own file"
    assert main(["models", "--download", item["name"], "--to", str(dest), "--force"]) == 0
    assert (dest / item["file"]).read_bytes() == PAYLOAD
    assert _files_under(dest) == [dest / item["file"]]


def test_to_must_be_a_folder_not_a_file(server, tmp_path, monkeypatch, capsys):
    item = _hosted(server)
    entry = load_published(_registry(tmp_path / "reg", monkeypatch, item))[0]
    audio = tmp_path / "a.wav"
    audio.write_bytes(b"the user's own file")
    for to in (audio, audio / "sub"):
        assert main(["models", "--download", item["name"], "--to", str(to)]) == 2
        assert capsys.readouterr().err == f"error: --to: must be a folder; {audio} is a file\n"
        with pytest.raises(InputError, match=f"^{audio}: a file, not a folder to download into$"):
            download_published(entry, to)
    assert _files_under(tmp_path) == [audio, tmp_path / "reg" / "registry.json"]
    assert audio.read_bytes() == b"the user's own file"


@pytest.mark.parametrize("name", sorted(L0SG_LL) + ["waveglow-256ch-universal-v5"])
def test_a_google_drive_entry_exits_2_with_one_line(name, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    entry = next(e for e in PUBLISHED if e.name == name)
    assert main(["models", "--download", name]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith(f"error: {name}: drive.google.com allows no plain download")
    assert entry.urls[0] in err and entry.import_command in err
    if entry.config:
        assert entry.config_source in err
    assert list(tmp_path.iterdir()) == []


def test_unknown_names_list_the_published_ones(capsys):
    assert main(["models", "--download", "no-such-weights"]) == 2
    err = capsys.readouterr().err
    assert "known: " in err and "waveglow-ngc-fp32" in err
    assert pretrained.get_published("no-such-weights") is None


def test_the_import_line_reads_the_downloaded_path():
    entry = next(e for e in PUBLISHED if e.name == "nanoflow-h16-r128-emb512")
    line = entry.import_line(Path("my downloads") / entry.file)
    assert shlex.split(line)[2] == f"my downloads/{entry.file}"
    assert line.endswith("--config nanoflow-h16-r128-emb512.json --out models/" + entry.name)
