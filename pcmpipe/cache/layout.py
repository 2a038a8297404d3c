"""The cache tree, known here and nowhere else.

    <cache_root>/<dataset>/<modality>/<split>/part-NNNNN.{parquet,h5}  (rank r of a torchrun: part-rNNN-*)
                                             /.manifest.json, .errors.jsonl  (ranks: .manifest.rNNN.json)
    <cache_root>/runs/<run name>/...                                    (runs live beside the cache they read)

Other code asks this module for a path or a listing instead of joining the parts itself, so the tree can change
in one place. Directories whose name starts with "." are an unfinished import's temp directories: never listed.
So a dataset, modality or split name may not start with "." (it would be invisible to listings and could be
taken for a temp directory and removed by the next import's cleanup), and a dataset may not be named `runs`
(where runs live); `check_name` refuses such names, and `cache_dir` asks it for every part.

The manifest and the errors file are hidden (leading ".") so that a split directory holds nothing but shards
to the tools users point at it: `pyarrow.parquet.read_table(dir)` skips basenames starting with "." or "_"
(pyarrow.dataset's `ignore_prefixes` default) and `datasets.load_dataset("parquet", data_dir=dir)` skips
hidden files and folders unless a pattern names them. Caches written before (`manifest.json`, `errors.jsonl`,
`manifest.rNNN.json`) still read: every lookup below falls back to the old name, and a writer renames an old
split's files to the hidden names when it opens it (`pcmpipe.cache.manifest.hide_legacy_names`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from pcmpipe.errors import UserError

MANIFEST = ".manifest.json"
ERRORS = ".errors.jsonl"  # the inputs extraction skipped, beside the manifest
RUNS = "runs"
_RANK_MANIFEST = re.compile(r"^\.?manifest\.r(\d{3,})\.json$")  # a rank's manifest, hidden or old
# the names caches had before they were hidden -> the hidden name each became (errors before the manifest:
# the order `hide_legacy_names` moves them in)
LEGACY_NAMES = {"errors.jsonl": ERRORS, "manifest.json": MANIFEST}


def rank_manifest_name(rank: int) -> str:
    """The manifest rank `rank` of a torchrun writes beside its own shards."""
    return f".manifest.r{rank:03d}.json"


def rank_manifests(directory: str | Path) -> dict[int, Path]:
    """rank -> its manifest in `directory` (the hidden name where both an old and a hidden one are there)."""
    found: dict[int, Path] = {}
    directory = Path(directory)
    if directory.is_dir():
        for path in sorted(directory.iterdir(), key=lambda p: not p.name.startswith(".")):  # hidden ones first
            m = _RANK_MANIFEST.match(path.name)
            if m:
                found.setdefault(int(m.group(1)), path)
    return dict(sorted(found.items()))


def _hidden_or_old(directory: Path, name: str) -> Path:
    """The file of `name`'s role in `directory`: its hidden name, else its old name where only that exists."""
    hidden = LEGACY_NAMES.get(name, name)
    old = next((o for o, h in LEGACY_NAMES.items() if h == hidden), None)
    if old is not None and not (directory / hidden).exists() and (directory / old).exists():
        return directory / old
    return directory / hidden


def legacy_files(directory: str | Path) -> list[tuple[Path, Path]]:
    """(old path, hidden path) for each file of `directory` still under its pre-hidden name, errors file and
    rank manifests before the manifest."""
    directory = Path(directory)
    pairs = [(directory / old, directory / new) for old, new in LEGACY_NAMES.items()]
    pairs[1:1] = [(p, directory / rank_manifest_name(r)) for r, p in _old_rank_manifests(directory)]
    return [(old, new) for old, new in pairs if old.exists()]


def _old_rank_manifests(directory: Path) -> list[tuple[int, Path]]:
    if not directory.is_dir():
        return []
    return sorted(
        (int(m.group(1)), p)
        for p in directory.iterdir()
        if (m := _RANK_MANIFEST.match(p.name)) and not p.name.startswith(".")
    )


def is_cache_file(name: str) -> bool:
    """True for the manifest, errors file and rank manifests of a cache (hidden or old names): the hidden files
    a cache keeps, as against the `.<name>.tmp` files and temp directories of an interrupted writer."""
    return name in LEGACY_NAMES or name in LEGACY_NAMES.values() or bool(_RANK_MANIFEST.match(name))


# Modality names also key the heads' nn.ModuleDict and safetensors entries, where "." separates submodules.
_NAME_PATTERNS = {
    "dataset": re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$"),
    "modality": re.compile(r"^[A-Za-z0-9_-]+$"),
    "split": re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$"),
}
_ALLOWED = {
    "dataset": "letters, digits, '_', '-' and '.' (not first)",
    "modality": "letters, digits, '_' and '-'",
    "split": "letters, digits, '_', '-' and '.' (not first)",
}
RESERVED = {"dataset": (RUNS,)}  # <cache_root>/runs holds the runs trained on the cache


def check_name(part: str, name: object) -> str:
    """`name` as a `part` ("dataset", "modality" or "split") of the cache tree, else one UserError line.

    A name starting with "." would be hidden from every listing (`cache-info`, training's modality lookup) and
    could match an import's temp directory (`.<split>.import-<pid>-*`), which the next import deletes; "runs" as a
    dataset would put caches among the runs. Modality names have no "." at all (it separates the heads' keys).
    """
    what = "modality name" if part == "modality" else part
    if not isinstance(name, str) or not _NAME_PATTERNS[part].match(name):
        why = " (a name starting with '.' is hidden: cache-info and training would not see it)"
        hidden = why if isinstance(name, str) and name.startswith(".") else ""
        raise UserError(f"{what} {name!r} is not a valid name{hidden}; use {_ALLOWED[part]}")
    if name in RESERVED.get(part, ()):
        raise UserError(f"{what} {name!r} is reserved in the cache tree (<cache-root>/{name} holds runs); rename it")
    return name


def cache_dir(root: str | Path, dataset: str, modality: str, split: str) -> Path:
    """root/dataset/modality/split; UserError for a part that is not a valid name (`check_name`)."""
    for part, name in (("dataset", dataset), ("modality", modality), ("split", split)):
        check_name(part, name)
    return Path(root) / dataset / modality / split


def refuse_link(directory: Path, action: str) -> None:
    """One UserError line where `directory`, a split about to be replaced or deleted by `action`, is a symbolic
    link: deleting through it would remove files outside the cache tree, and renaming over it would leave the
    link behind under a temp name. The link is never followed, nor removed: the user decides."""
    if directory.is_symlink():
        raise UserError(
            f"{directory} is a symbolic link (to {os.readlink(directory)}); {action} never replaces a linked "
            "cache split: remove the link and rerun (what it points to is not touched)"
        )


def manifest_path(root: str | Path, dataset: str, modality: str, split: str) -> Path:
    """The manifest of one (dataset, modality, split); it exists once the cache has been started."""
    return manifest_in(cache_dir(root, dataset, modality, split))


def manifest_in(directory: str | Path) -> Path:
    """The manifest of the cache in `directory`: `.manifest.json`, or an old cache's `manifest.json`."""
    return _hidden_or_old(Path(directory), MANIFEST)


def errors_in(directory: str | Path) -> Path:
    """The errors file of the cache in `directory`: `.errors.jsonl`, or an old cache's `errors.jsonl`."""
    return _hidden_or_old(Path(directory), ERRORS)


def side_file_in(directory: str | Path, name: str) -> Path:
    """The file a manifest's `side_files` entry names; an entry written before the rename (`errors.jsonl`)
    finds the file under its hidden name too, so a split half-way through `hide_legacy_names` still verifies."""
    return _hidden_or_old(Path(directory), name)


def manifests_under(root: str | Path) -> list[Path]:
    """The manifest of every cache directory below `root` (or of `root` itself), old names included."""
    root = Path(root)
    dirs = {p.parent for name in (MANIFEST, "manifest.json") for p in root.rglob(name)}
    return [manifest_in(d) for d in sorted(dirs)]


def runs_root(cache_root: str | Path) -> Path:
    """Where runs trained on `cache_root` go by default."""
    return Path(cache_root) / RUNS


def _subdirs(directory: Path) -> list[str]:
    if not directory.is_dir():
        return []
    return sorted(p.name for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))


def cached_datasets(cache_root: str | Path) -> list[str]:
    """Dataset directories under the cache root (runs/ excluded)."""
    return [name for name in _subdirs(Path(cache_root)) if name != RUNS]


def cached_modalities(cache_root: str | Path, dataset: str) -> list[str]:
    """Modality directories cached for one dataset."""
    return _subdirs(Path(cache_root) / dataset)


def parts_of(directory: str | Path) -> tuple[str, str, str]:
    """(dataset, modality, split) a cache directory stands for, read from its last three path parts."""
    return tuple((["", "", ""] + list(Path(directory).resolve().parts))[-3:])  # type: ignore[return-value]


# Files that tell other folders pcmpipe writes from a cache, for `describe` (their formats live in training/,
# runs/ and index/, which this layer cannot import; the names are part of those formats).
_RUN_FILES = ("heads.safetensors", "checkpoint.safetensors", "metrics.jsonl", "test_metrics.json")
_INDEX_FILES = ("index.faiss", "ids.json")


def caches_below(directory: Path, *, depth: int = 3, limit: int = 3) -> list[Path]:
    """Up to `limit` cache folders (holding a manifest) at most `depth` levels below `directory`, hidden folders
    skipped; a bounded walk, so a caller pointed at a large tree does not scan all of it."""
    found: list[Path] = []
    level = [directory]
    for _ in range(depth):
        below = []
        for d in level:
            try:
                entries = sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
            except OSError:
                continue
            for p in entries[:1000]:
                if (p / MANIFEST).is_file() or (p / "manifest.json").is_file():
                    found.append(p)
                    if len(found) >= limit:
                        return found
                else:
                    below.append(p)
        level = below
    return found


POINT_AT_A_CACHE = "point at a cache folder, <cache-root>/<dataset>/<modality>/<split>"


def describe(directory: Path) -> tuple[str, str]:
    """(what `directory` is, what to do instead) for a folder that holds no cache where one was expected. The
    second part is '' where the caller's own advice (how to make what it expected) is the right one, and
    POINT_AT_A_CACHE where the folder is something else that pcmpipe wrote (the caller's advice, if any, wins)."""
    if not directory.exists():
        return "the folder does not exist", ""
    if not directory.is_dir():
        return "it is a file, not a folder", POINT_AT_A_CACHE
    try:
        names = {p.name for p in directory.iterdir()}
    except OSError as e:
        return f"it cannot be listed ({e.strerror or e})", ""
    if rank_manifests(directory):
        return "it has per-rank manifests only", "merge them first (pcmpipe.cache.manifest.merge_manifests)"
    if "config.json" in names and names.intersection(_RUN_FILES):
        return "it is a training run (or an exported one), not a cache", POINT_AT_A_CACHE
    if names.intersection(_INDEX_FILES):
        return "it is an index folder (`pcmpipe index` writes one), not a cache", POINT_AT_A_CACHE
    below = caches_below(directory, limit=4)
    if below:
        shown = ", ".join(str(p.relative_to(directory)) for p in below[:3])
        return f"it is a folder holding caches ({shown}{', ...' if len(below) > 3 else ''})", "name one of them"
    if directory.name == RUNS:
        return "it is the runs folder beside a cache", POINT_AT_A_CACHE
    return f"it holds no {MANIFEST}", ""
