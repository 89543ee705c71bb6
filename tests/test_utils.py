"""mlff.utils: atomic writes, JSON, tables, the dtype map and element names."""

import json
import math
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mlff import utils
from mlff.units import FS_PER_NS, SECONDS_PER_DAY, ns_per_day


def test_importing_utils_imports_no_torch():
    code = "import sys, mlff.utils; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def _failing_writer(stream):
    stream.write(b"half of the new file")
    raise RuntimeError("disk on fire")


def test_atomic_write_keeps_the_old_file_when_the_writer_raises(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="disk on fire"):
        utils.atomic_write(path, _failing_writer)
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.bin"]


def test_atomic_write_replaces_the_file_and_makes_its_folder(tmp_path):
    path = tmp_path / "new" / "folder" / "data.txt"
    assert utils.atomic_write_text(path, "one") == path
    utils.atomic_write_bytes(path, b"two")
    assert path.read_text() == "two"
    assert sorted(p.name for p in path.parent.iterdir()) == ["data.txt"]


def test_atomic_write_gives_what_open_would_give_unless_told(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    written = utils.atomic_write_text(tmp_path / "atomic.txt", "x")
    assert stat.S_IMODE(written.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)
    shared = utils.atomic_write(tmp_path / "shared.pt", lambda stream: stream.write(b"x"), mode=0o640)
    assert stat.S_IMODE(shared.stat().st_mode) == 0o640


def test_atomic_path_keeps_the_suffix_and_publishes_only_on_success(tmp_path):
    path = tmp_path / "frames.npz"
    with utils.atomic_path(path, suffix=".npz") as temporary:
        assert temporary.parent == tmp_path and temporary.suffix == ".npz" and temporary != path
        np.savez(temporary, x=np.arange(3))
    assert np.load(path)["x"].tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="check failed"), utils.atomic_path(path, suffix=".npz") as temporary:
        np.savez(temporary, x=np.arange(5))
        raise ValueError("check failed")
    assert np.load(path)["x"].tolist() == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames.npz"]


def test_atomic_torch_save_round_trips(tmp_path):
    path = utils.atomic_torch_save({"weights": torch.arange(4.0)}, tmp_path / "checkpoint.pt")
    assert torch.equal(torch.load(path)["weights"], torch.arange(4.0))


def test_json_writes_numpy_torch_paths_and_sets(tmp_path):
    data = {
        "array": np.array([[1.5, 2.0]]),
        "scalar": np.float32(0.25),
        "integer": np.int64(7),
        "flag": np.bool_(True),
        "tensor": torch.tensor([1, 2]),
        "tensor_scalar": torch.tensor(3.5, dtype=torch.float64),
        "path": Path("a") / "b.pt",
        "species": {8, 1, 6},
    }
    expected = {
        "array": [[1.5, 2.0]],
        "scalar": 0.25,
        "integer": 7,
        "flag": True,
        "tensor": [1, 2],
        "tensor_scalar": 3.5,
        "path": os.path.join("a", "b.pt"),
        "species": [1, 6, 8],
    }
    assert json.loads(utils.to_json(data)) == expected
    path = utils.write_json(tmp_path / "out.json", {"b": np.arange(2), "a": 1}, sort_keys=True)
    assert path.read_text() == '{\n  "a": 1,\n  "b": [\n    0,\n    1\n  ]\n}\n'


def test_json_refuses_what_it_cannot_write_and_keeps_the_old_file(tmp_path):
    path = utils.write_json(tmp_path / "out.json", {"kept": True})
    with pytest.raises(TypeError, match="object"):
        utils.write_json(path, {"bad": object()})
    assert json.loads(path.read_text()) == {"kept": True}


def test_finite_or_none_replaces_nan_and_infinity():
    value = {"a": [1.0, math.nan, {"b": -math.inf}], "c": (2, math.inf), "d": "nan"}
    assert utils.finite_or_none(value) == {"a": [1.0, None, {"b": None}], "c": [2, None], "d": "nan"}
    assert json.loads(utils.to_json(utils.finite_or_none([math.nan]))) == [None]


def test_format_table_markdown_and_plain():
    rows = [["ethanol", 9, 1.23456], ["aspirin", 21, 10.0]]
    markdown = utils.format_table(rows, ["molecule", "atoms", "MAE"], floatfmt=("", "", ".2f"))
    lines = markdown.splitlines()
    assert [cell.strip() for cell in lines[0].strip("|").split("|")] == ["molecule", "atoms", "MAE"]
    assert set(lines[1]) <= {"|", "-", ":"}
    assert [cell.strip() for cell in lines[2].strip("|").split("|")] == ["ethanol", "9", "1.23"]
    plain = utils.format_table([["x", "1.50"]], ["name", "value"], fmt="plain", numparse=False)
    header, row = plain.splitlines()
    assert header.split() == ["name", "value"] and row.split() == ["x", "1.50"]
    assert header.index("value") == row.index("1.50")
    assert utils.format_table([["cutoff", "5.0 Angstrom"]], (), fmt="plain") == "cutoff  5.0 Angstrom"


def test_dtype_map_names_and_errors():
    assert utils.torch_dtype("float32") is torch.float32 and utils.torch_dtype(torch.float64) is torch.float64
    assert utils.dtype_name(torch.float32) == "float32" and utils.dtype_name("float64") == "float64"
    assert tuple(utils.dtype_map()) == utils.DTYPE_NAMES
    for bad in ("float16", "double", torch.int64, None):
        with pytest.raises(ValueError, match=r"dtype must be one of \['float32', 'float64'\]"):
            utils.torch_dtype(bad)


def test_every_public_dtype_map_is_the_one_in_utils():
    from mlff.export import load
    from mlff.models import DTYPES
    from mlff.models.config import ModelConfig

    assert DTYPES == load.DTYPES == utils.dtype_map()
    assert load.dtype_from_name is utils.torch_dtype and load.dtype_name is utils.dtype_name
    with pytest.raises(ValueError, match="model.dtype must be one of"):
        ModelConfig(dtype="float16")


def test_element_names_and_their_errors():
    assert utils.element_symbol(8) == "O" and utils.atomic_number("C") == 6
    assert utils.species_symbols([1, 6, 8]) == "H C O"
    assert utils.element_label(9) == "F (Z=9)" and utils.element_label(200) == "Z=200"
    for bad in (0, -1, 200):
        with pytest.raises(ValueError, match=f"unknown atomic number {bad}"):
            utils.element_symbol(bad)
    for bad in ("X", "Xx", "c"):
        with pytest.raises(ValueError, match="unknown element"):
            utils.atomic_number(bad)


def test_ns_per_day():
    assert ns_per_day(1.0, 1.0) == pytest.approx(SECONDS_PER_DAY / FS_PER_NS)
    assert ns_per_day(100.0, 0.5) == pytest.approx(4.32)
