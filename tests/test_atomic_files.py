"""`modeling_mgcm.atomic_files`: a file is replaced whole or not at all, and no temporary file is left."""

import json
import os

import pytest

from modeling_mgcm.atomic_files import (
    atomic_write_path,
    write_bytes_atomically,
    write_json_atomically,
    write_text_atomically,
)


def test_each_writer_replaces_the_file_and_leaves_nothing_else(tmp_path):
    path = tmp_path / "out.json"
    path.write_text("old", encoding="utf-8")
    write_bytes_atomically(path, b"\x00bytes")
    assert path.read_bytes() == b"\x00bytes"
    write_text_atomically(path, "naïve text")
    assert path.read_bytes() == "naïve text".encode()
    write_json_atomically(path, {"b": 1, "a": [2]})
    assert path.read_text(encoding="utf-8") == '{\n  "b": 1,\n  "a": [\n    2\n  ]\n}\n'
    assert json.loads(path.read_text(encoding="utf-8")) == {"b": 1, "a": [2]}
    assert os.listdir(tmp_path) == ["out.json"]


def test_a_failed_write_keeps_the_previous_file_and_removes_the_temporary_one(tmp_path):
    path = tmp_path / "table.safetensors"
    path.write_bytes(b"previous")
    with pytest.raises(RuntimeError, match="killed"), atomic_write_path(path) as temporary:
        assert temporary.parent == tmp_path and temporary.name.startswith(".table.safetensors.")
        temporary.write_bytes(b"half a fi")
        raise RuntimeError("killed mid-write")
    assert path.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == ["table.safetensors"]


def test_the_file_gets_the_permissions_of_a_plainly_opened_file(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("x", encoding="utf-8")
    atomic = tmp_path / "atomic.txt"
    write_text_atomically(atomic, "x")
    assert atomic.stat().st_mode == plain.stat().st_mode
