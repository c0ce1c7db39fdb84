"""The package's import graph: which modules import which (any import, also inside functions), read with ``ast``."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "gan_lightning"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the package's modules it imports (``from pkg import name`` counts pkg.name when it is a module)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                edges |= {a.name for a in node.names if a.name in modules}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module in modules:
                    edges.add(node.module)
                edges |= {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules}
        graph[name] = edges - {name}
    return graph


def cycles_through(graph: dict[str, set[str]], start: str) -> list[list[str]]:
    """Every simple path start -> ... -> start."""
    found, stack = [], [(start, [start])]
    while stack:
        node, path = stack.pop()
        for nxt in graph[node]:
            if nxt == start:
                found.append(path + [start])
            elif nxt not in path:
                stack.append((nxt, path + [nxt]))
    return found


def test_the_graph_reader_sees_a_loop_it_is_shown():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles_through(graph, "a") == [["a", "b", "c", "a"]] and cycles_through(graph, "d") == []


def test_the_feature_extractors_import_one_way():
    """features.py (the dispatcher) imports dinov2_clip.py, which takes what they share from weights.py."""
    graph = import_graph()
    assert "gan_lightning.metrics.dinov2_clip" in graph["gan_lightning.metrics.features"]
    assert "gan_lightning.metrics.weights" in graph["gan_lightning.metrics.dinov2_clip"]
    assert cycles_through(graph, "gan_lightning.metrics.features") == []
    assert cycles_through(graph, "gan_lightning.metrics.dinov2_clip") == []


def test_the_model_folder_format_and_the_commands_import_one_way():
    """commands.py (export, evaluate, sample) imports pretrained.py (the folder's format), never the reverse: the
    format reads folders with the model registry alone."""
    graph = import_graph()
    assert "gan_lightning.pretrained" in graph["gan_lightning.commands"]
    assert "gan_lightning.commands" not in graph["gan_lightning.pretrained"]
    for module in ("gan_lightning.pretrained", "gan_lightning.commands", "gan_lightning.models.base"):
        assert cycles_through(graph, module) == [], module
