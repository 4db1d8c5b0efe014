"""The package's folders are its layers: a module imports only from layers below its own, and
peer modules (one model family, one network) do not import each other."""

from __future__ import annotations

import ast
import graphlib
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# bottom to top; a unit is a top-level module or a subpackage of vocoder
LAYERS = [
    {"errors"},
    {"files", "config", "features", "devices", "sigma", "precision"},
    {"audio", "melio", "griffin_lim", "pretrained", "flows"},
    {"metrics", "data", "nets"},
    {"models"},
    {"checkpoint"},
    {"importers"},
    {"model_source"},
    {"inference", "evaluate", "train"},
    {"cli"},
    {"__main__"},
]
# modules of one package that must not import each other
PEERS = [
    {"vocoder.nets.wavenet2d", "vocoder.nets.wn", "vocoder.nets.upsample"},
    {"vocoder.models.waveglow", "vocoder.models.waveflow"},
    {"vocoder.models.waveglow", "vocoder.models.nanoflow"},
    {"vocoder.inference.cpu", "vocoder.inference.cuda"},
]


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """The vocoder modules `path` imports anywhere (also inside functions); `from vocoder
    import x` counts as `vocoder.x` where x is a module."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "vocoder"}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] != "vocoder":
                continue
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                as_path = REPO / Path(*candidate.split("."))
                is_module = as_path.with_suffix(".py").is_file() or as_path.is_dir()
                found.add(candidate if is_module else node.module)
    return found


def import_graph() -> dict[str, set[str]]:
    return {
        module_name(p): imports_of(p)
        for p in (REPO / "vocoder").rglob("*.py")
        if "__pycache__" not in p.parts
    }


def unit(module: str) -> str | None:
    """The layer unit of a vocoder module; None for the package itself (its __version__)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    rank = {name: i for i, layer in enumerate(LAYERS) for name in layer}
    return sorted(
        f"{module} -> {target}"
        for module, imported in graph.items()
        for target in imported
        if unit(target) is not None
        and unit(module) != unit(target)
        and rank[unit(target)] >= rank[unit(module)]
    )


def peer_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{a} -> {b}"
        for a, imported in graph.items()
        for b in imported
        for peers in PEERS
        if a in peers and b in peers and a != b
    )


def test_every_unit_has_a_layer():
    units = {unit(m) for m in import_graph()} - {None}
    placed = set().union(*LAYERS)
    assert units == placed, f"not placed: {units - placed}; gone: {placed - units}"


def test_the_package_imports_itself_by_absolute_names_the_checks_see():
    relative = [
        f"{module_name(p)}: from {'.' * node.level}{node.module or ''}"
        for p in (REPO / "vocoder").rglob("*.py")
        for node in ast.walk(ast.parse(p.read_text()))
        if isinstance(node, ast.ImportFrom) and node.level > 0
    ]
    assert relative == []


def test_imports_go_only_down_the_layers():
    assert upward_imports(import_graph()) == []


def test_modules_import_no_peer_and_no_cycle():
    graph = import_graph()
    assert peer_imports(graph) == []
    graphlib.TopologicalSorter(graph).prepare()  # raises CycleError on a cycle


def test_the_checks_find_an_upward_and_a_peer_import(tmp_path, monkeypatch):
    fake = tmp_path / "vocoder"
    (fake / "nets").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "errors.py").write_text("def f():\n    from vocoder.cli import main\n")
    (fake / "nets" / "__init__.py").write_text("")
    (fake / "nets" / "wn.py").write_text("from vocoder.nets import wavenet2d\n")
    (fake / "nets" / "wavenet2d.py").write_text("from vocoder import __version__\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    graph = import_graph()
    assert graph["vocoder.errors"] == {"vocoder.cli"}
    assert graph["vocoder.nets.wavenet2d"] == {"vocoder"}
    assert upward_imports(graph) == ["vocoder.errors -> vocoder.cli"]
    assert peer_imports(graph) == ["vocoder.nets.wn -> vocoder.nets.wavenet2d"]
