"""The package's shape: no import cycles among pcmpipe modules; only cli/ and report/render/ print or use rich.

Both checks read the source (ast), so they see lazy imports inside functions too: a cycle hidden in a function
body is still a cycle in the design, it only fails later.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "pcmpipe"
PRINTERS = ("pcmpipe.cli", "pcmpipe.report.render")
# The layers of docs/design.md ("Import rules"): a module may import its own folder and lower layers only.
LAYERS = {
    "errors": 0, "modalities": 0, "atomic": 0, "textfile": 0, "tempdirs": 0, "version": 0, "checksums": 0,
    "limits": 0, "readback": 0, "folderswap": 0,
    "cache": 1, "datasets": 1, "backbones": 1, "augment": 1, "config": 1,
    "samples": 2, "samples_stream": 2, "heads": 2, "losses": 2, "distributed": 2, "index": 2,
    "evaluation": 3, "extract": 3,
    "training": 4,
    "report": 5, "runs": 5,
    "pipelines": 6, "serve": 6,
    "cli": 7, "__main__": 7,
}  # fmt: skip


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _import_nodes(tree: ast.AST):
    """Every import statement at any depth, `if TYPE_CHECKING:` ones included (a cycle the types need is one)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _package_of(name: str, path: Path) -> str:
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def imported(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The pcmpipe modules `name` imports (a `from a import b` names a.b when that is a module, else a)."""
    out: set[str] = set()
    for node in _import_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                pkg = _package_of(name, path).split(".")
                pkg = pkg[: len(pkg) - node.level + 1]
                base = ".".join(pkg + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        out |= {t for t in targets if t in modules and t != name}
    return out


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_sees_a_cycle():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_in_pcmpipe():
    modules = _modules()
    graph = {name: imported(name, path, modules) for name, path in modules.items()}
    assert "pcmpipe.report.model" in graph["pcmpipe.report.build"]  # the parser does see imports
    assert find_cycles(graph) == []


def _stage(name: str) -> str:
    """pcmpipe.training.finetune.data -> training; pcmpipe -> '' (the package's public face, above every layer)."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_every_stage_has_a_layer():
    stages = {_stage(name) for name in _modules()} - {""}
    assert stages <= set(LAYERS), f"place these in LAYERS and docs/design.md: {sorted(stages - set(LAYERS))}"


def test_no_module_imports_a_higher_layer():
    modules = _modules()
    upward = []
    for name, path in modules.items():
        if not _stage(name):
            continue
        for target in imported(name, path, modules):
            if _stage(target) and LAYERS[_stage(target)] > LAYERS[_stage(name)]:
                upward.append(f"{name} -> {target}")
    assert upward == []


# the cache's own files, hidden and under the names caches had before (still read)
CACHE_FILE_NAMES = {".manifest.json", ".errors.jsonl", "manifest.json", "errors.jsonl"}


def test_only_the_cache_package_names_the_manifest_file():
    """The cache tree is joined in pcmpipe/cache/ only (cache.layout); elsewhere code asks it for paths."""
    offenders = []
    for name, path in _modules().items():
        if name == "pcmpipe.cache" or name.startswith("pcmpipe.cache."):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in CACHE_FILE_NAMES:
                offenders.append(f"{name}:{node.lineno}")
    assert offenders == []


def test_only_the_cache_package_reads_shard_files():
    """A cache's shard list and its files' encoding stay in pcmpipe/cache/: other code streams a cache through
    `CacheReader.iter_shards()` and reads whole caches through `open_cache` (docs/design.md, Import rules)."""
    modules = _modules()
    offenders = []
    for name, path in modules.items():
        if name == "pcmpipe.cache" or name.startswith("pcmpipe.cache."):
            continue
        if "pcmpipe.cache.shard" in imported(name, path, modules):
            offenders.append(f"{name} imports pcmpipe.cache.shard")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value == "shards":
                offenders.append(f"{name}:{node.lineno} names a manifest's shard list")
    assert offenders == []


# a run directory's own files (pcmpipe/training/rundir/files.py, manifest.py; state.py's checkpoint)
RUN_FILE_NAMES = {
    "config.json", "heads.safetensors", "metrics.jsonl", "test_metrics.json", "untrained_metrics.json",
    "files.json", "checkpoint.safetensors",
}  # fmt: skip


def test_runs_report_and_pipelines_read_runs_through_the_run_directory_package():
    """One owner of the run directory (docs/run-directory.md): runs/, report/ and pipelines/ never name a run's
    files; they ask pcmpipe.training.rundir to read or write them."""
    offenders = []
    for name, path in _modules().items():
        if not _within(name, ("pcmpipe.runs", "pcmpipe.report", "pcmpipe.pipelines")):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in RUN_FILE_NAMES:
                offenders.append(f"{name}:{node.lineno} names {node.value}")
    assert offenders == []


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _prints(path: Path) -> list[str]:
    """Lines that import rich or write to the terminal (print, typer.echo, sys.stdout/stderr.write, console.print)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "rich" for a in node.names):
            found.append(f"{node.lineno}: import rich")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "rich":
            found.append(f"{node.lineno}: from {node.module} import")
        elif isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Name) and f.id == "print":
                found.append(f"{node.lineno}: print()")
            elif (
                isinstance(f, ast.Attribute)
                and isinstance(f.value, ast.Name)
                and f.value.id == "typer"
                and f.attr in ("echo", "secho")
            ):
                found.append(f"{node.lineno}: typer.{f.attr}()")
            elif (
                isinstance(f, ast.Attribute)
                and f.attr == "write"
                and isinstance(f.value, ast.Attribute)
                and f.value.attr in ("stdout", "stderr")
            ):
                found.append(f"{node.lineno}: sys.{f.value.attr}.write()")
            elif (
                isinstance(f, ast.Attribute)
                and f.attr in ("print", "rule", "log")
                and isinstance(f.value, ast.Name)
                and "console" in f.value.id
            ):
                found.append(f"{node.lineno}: {f.value.id}.{f.attr}()")
    return found


def test_print_finder_sees_printing(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("import sys\nfrom rich.table import Table\nprint(1)\nsys.stderr.write('x')\nconsole.print(2)\n")
    assert sorted(line.split(":")[0] for line in _prints(src)) == ["2", "3", "4", "5"]


def test_only_cli_and_report_render_print():
    offenders = {name: _prints(path) for name, path in _modules().items() if not _within(name, PRINTERS)}
    assert {k: v for k, v in offenders.items() if v} == {}
