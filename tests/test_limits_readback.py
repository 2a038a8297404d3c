"""The shared guards: machine bounds for sizing settings, bounded reads of structured files, foreign errors."""

from __future__ import annotations

import errno

import faiss
import pytest
from pydantic import BaseModel

from pcmpipe import limits
from pcmpipe.errors import UserError, file_errors
from pcmpipe.readback import check_shape, parse_json, parse_yaml, read_json, read_model


def test_bounds_name_the_limit_and_where_it_comes_from():
    with pytest.raises(UserError, match=r"--workers must be between 0 and \d+ \(4 per CPU core; this machine has"):
        limits.check_workers("--workers", 100_000)
    with pytest.raises(UserError, match="between 0"):
        limits.check_workers("--workers", -1)
    assert limits.check_workers("--workers", 0) == 0
    assert limits.check_workers("--workers", None) is None
    with pytest.raises(UserError, match="finite"):
        limits.check_positive("--lock-timeout", float("nan"))
    with pytest.raises(UserError, match="whole number"):
        limits.check_int("--views", 2.5, low=0, high=64)
    with pytest.raises(UserError, match=r"GiB of memory"):
        limits.check_memory("--views", 10 * limits.memory_bytes(), "the cached views")


def test_deep_huge_and_recursive_structures_are_one_line():
    with pytest.raises(UserError, match="nested too deeply"):
        parse_json("[" * 100_000 + "]" * 100_000, "x.json")
    with pytest.raises(UserError, match="deeper than 64"):
        parse_json("[" * 80 + "]" * 80, "x.json")
    laughs = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]\n" for i in range(9)
    )
    with pytest.raises(UserError, match="expands to more than"):
        parse_yaml(laughs, "spec.yaml")
    with pytest.raises(UserError, match="refers to itself"):
        parse_yaml("a: &a [*a]", "spec.yaml")
    shared = [1, 2]
    check_shape({"a": [shared, shared, {"b": shared}]}, "fine")  # shared, not recursive


def test_read_json_bounds_size_and_validates_types(tmp_path):
    class Meta(BaseModel):
        rows: int
        ids: list[str]

    path = tmp_path / "index.json"
    path.write_text('{"rows": "many", "ids": []}')
    with pytest.raises(UserError, match=r"index.json is not a valid Meta: rows: Input should be a valid integer"):
        read_model(path, Meta, "index metadata")
    path.write_bytes(b"\xef\xbb\xbf" + b'{"rows": 1, "ids": ["a"]}')
    assert read_model(path, Meta, "index metadata").rows == 1
    with pytest.raises(UserError, match="more than the 10 such a file can be"):
        read_json(path, "index metadata", max_bytes=10)
    with pytest.raises(UserError, match="is missing"):
        read_json(tmp_path / "nope.json", "index metadata")


def test_foreign_errors_name_the_file(tmp_path):
    bad = tmp_path / "index.faiss"
    bad.write_bytes(b"garbage" * 10)
    with pytest.raises(UserError, match=r"index file .*index.faiss cannot be read \(RuntimeError: Index type"):
        with file_errors(bad, "read", "index file"):
            faiss.read_index(str(bad))
    with pytest.raises(OSError) as info:
        with file_errors(bad, "write"):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert info.value.filename == str(bad)  # the CLI guard can now say which file
    with pytest.raises(ValueError):  # not a foreign file error: a bug keeps its traceback
        with file_errors(bad):
            raise ValueError("a bug")
