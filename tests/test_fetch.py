"""`mlff data fetch`: download over file:// and loopback HTTP, SHA-256 checks, conversion, CLI.

Every file is a small fake the tests build: rMD17-style archives and sGDML-style npz files
with 20 frames of the synthetic molecule (kcal/mol, like the real ones).
"""

import functools
import http.server
import json
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from synthetic import NUMBERS, make_frames

from mlff.cli.main import main
from mlff.data import fetch as fetch_module
from mlff.data import read_frames
from mlff.data.fetch import ChecksumError, FetchError, default_cache_dir, fetch_dataset
from mlff.units import KCAL_PER_MOL_TO_EV

NUM_FRAMES = 20
SPLIT_SIZE = 5
TOFU = "recorded at first download (trust on first use)"


@pytest.fixture(autouse=True)
def no_pinned_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fakes cannot match the real pinned hashes: tests start with an empty table."""
    monkeypatch.setattr(fetch_module, "PINNED_SHA256", {})


def write_fake_rmd17(directory: Path, molecule: str = "ethanol", seed: int = 0) -> dict[str, np.ndarray]:
    """rmd17.tar.bz2 in `directory` with npz_data/rmd17_<molecule>.npz and five split csv pairs; its arrays."""
    positions, energies, forces = make_frames(NUM_FRAMES, seed=seed)
    rng = np.random.default_rng(seed + 10)
    arrays = {
        "nuclear_charges": NUMBERS,
        "coords": positions,
        "energies": energies,
        "forces": forces,
        "old_indices": rng.choice(1000, NUM_FRAMES, replace=False),
        "old_energies": energies - 100.0,
        "old_forces": forces * 1.1,
    }
    staging = directory / f"staging-{seed}"
    (staging / "rmd17" / "npz_data").mkdir(parents=True)
    (staging / "rmd17" / "splits").mkdir()
    np.savez(staging / "rmd17" / "npz_data" / f"rmd17_{molecule}.npz", **arrays)
    splits = {"train": [], "test": []}
    for k in range(1, 6):
        order = rng.permutation(NUM_FRAMES)
        for kind, indices in (("train", order[:SPLIT_SIZE]), ("test", order[SPLIT_SIZE : 2 * SPLIT_SIZE])):
            splits[kind].append(indices)
            (staging / "rmd17" / "splits" / f"index_{kind}_0{k}.csv").write_text("".join(f"{i}\n" for i in indices))
    with tarfile.open(directory / "rmd17.tar.bz2", "w:bz2") as archive:
        archive.add(staging / "rmd17", arcname="rmd17")
    return {**arrays, "split_train": np.array(splits["train"]), "split_test": np.array(splits["test"])}


def write_fake_md17(directory: Path, molecule: str = "ethanol", seed: int = 0) -> dict[str, np.ndarray]:
    """An sGDML-style md17_<molecule>.npz (E as [n, 1], string metadata) in `directory`; its arrays."""
    positions, energies, forces = make_frames(NUM_FRAMES, seed=seed)
    arrays = {"z": NUMBERS, "R": positions, "E": energies[:, None], "F": forces}
    name = fetch_module.MD17_FILE_NAMES[molecule]
    np.savez(directory / name, **arrays, name=np.array(molecule), theory=np.array("PBE+vdW-TS"))
    return arrays


@dataclass
class Server:
    """A loopback HTTP server for `root`: `url` is its prefix, `requests` the paths asked for."""

    root: Path
    url: str
    requests: list[str] = field(default_factory=list)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    requests: list[str]

    def do_GET(self) -> None:
        self.requests.append(self.path)
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    """Serve tmp_path/served on 127.0.0.1 (any free port) from a thread, shut down after the test."""
    root = tmp_path / "served"
    root.mkdir()
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")
    requests: list[str] = []
    handler = type("Handler", (_QuietHandler,), {"requests": requests})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield Server(root, f"http://127.0.0.1:{httpd.server_address[1]}/", requests)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture
def source_dir(tmp_path: Path) -> Path:
    """A directory served through file:// URLs."""
    path = tmp_path / "mirror"
    path.mkdir()
    return path


def leftovers(cache: Path) -> list[str]:
    """Files in the cache other than the hash record (downloads, partial files, converted npz)."""
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file() and p.name != "sha256.json")


def test_rmd17_over_http_is_converted_with_splits_and_units(tmp_path, server):
    expected = write_fake_rmd17(server.root)
    lines: list[str] = []
    path = fetch_dataset("rmd17", "ethanol", cache_dir=tmp_path / "cache", source=server.url, report=lines.append)
    assert path == tmp_path / "cache" / "rmd17_ethanol.npz"
    assert server.requests == ["/rmd17.tar.bz2"]
    with np.load(path) as converted:
        assert sorted(converted.files) == ["E", "F", "R", "md17_index", "split_test", "split_train", "z"]
        np.testing.assert_array_equal(converted["E"], expected["energies"])  # kcal/mol, unchanged
    frames = read_frames(path)
    assert frames.num_frames == NUM_FRAMES
    np.testing.assert_allclose(frames.energies, expected["energies"] * KCAL_PER_MOL_TO_EV)
    np.testing.assert_allclose(frames.forces, expected["forces"].reshape(-1, 3) * KCAL_PER_MOL_TO_EV)
    np.testing.assert_allclose(frames.positions, expected["coords"].reshape(-1, 3))
    assert frames.splits["split_train"].shape == (5, SPLIT_SIZE)
    np.testing.assert_array_equal(frames.splits["split_train"], expected["split_train"])
    np.testing.assert_array_equal(frames.splits["split_test"], expected["split_test"])
    np.testing.assert_array_equal(frames.extra["md17_index"], expected["old_indices"])
    assert any(TOFU in line for line in lines)
    assert leftovers(tmp_path / "cache") == ["downloads/rmd17.tar.bz2", "rmd17_ethanol.npz"]


def test_md17_over_file_url_flattens_energies(tmp_path, source_dir):
    expected = write_fake_md17(source_dir, "benzene")
    path = fetch_dataset("md17", "benzene", cache_dir=tmp_path / "cache", source=source_dir.as_uri())
    with np.load(path) as converted:
        assert sorted(converted.files) == ["E", "F", "R", "z"]
        assert converted["E"].shape == (NUM_FRAMES,)
    frames = read_frames(path)
    np.testing.assert_allclose(frames.energies, expected["E"][:, 0] * KCAL_PER_MOL_TO_EV)
    assert frames.species() == [1, 6, 8] and frames.splits == {}
    assert (tmp_path / "cache" / "downloads" / "md17_benzene2017.npz").is_file()


def test_second_fetch_uses_the_cache_and_verifies_the_recorded_hash(tmp_path, server):
    write_fake_rmd17(server.root)
    cache = tmp_path / "cache"
    first = fetch_dataset("rmd17", "ethanol", cache_dir=cache, source=server.url)
    record = json.loads((cache / "sha256.json").read_text())
    assert set(record) == {"rmd17.tar.bz2"}
    assert record["rmd17.tar.bz2"]["sha256"] == fetch_module.sha256_of(server.root / "rmd17.tar.bz2")
    lines: list[str] = []
    second = fetch_dataset("rmd17", "ethanol", cache_dir=cache, source=server.url, report=lines.append)
    assert second == first
    assert server.requests == ["/rmd17.tar.bz2"]  # no second download
    assert any(f"verified against the hash recorded on {record['rmd17.tar.bz2']['recorded']}" in x for x in lines)
    assert not any(TOFU in line for line in lines)


def test_a_different_file_under_a_recorded_name_is_rejected_and_not_converted(tmp_path, server):
    write_fake_rmd17(server.root, seed=0)
    cache = tmp_path / "cache"
    fetch_dataset("rmd17", "ethanol", cache_dir=cache, source=server.url)
    recorded = json.loads((cache / "sha256.json").read_text())["rmd17.tar.bz2"]["sha256"]
    for path in cache.rglob("*.npz"):
        path.unlink()
    (cache / "downloads" / "rmd17.tar.bz2").unlink()
    write_fake_rmd17(server.root, seed=1)
    actual = fetch_module.sha256_of(server.root / "rmd17.tar.bz2")
    with pytest.raises(ChecksumError) as caught:
        fetch_dataset("rmd17", "ethanol", cache_dir=cache, source=server.url)
    assert "rmd17.tar.bz2" in str(caught.value) and recorded in str(caught.value) and actual in str(caught.value)
    assert leftovers(cache) == []


def test_a_cached_file_that_changed_is_deleted(tmp_path, source_dir):
    write_fake_md17(source_dir)
    cache = tmp_path / "cache"
    fetch_dataset("md17", "ethanol", cache_dir=cache, source=source_dir.as_uri())
    (cache / "md17_ethanol.npz").unlink()
    with open(cache / "downloads" / "md17_ethanol.npz", "ab") as handle:
        handle.write(b"tampered")
    with pytest.raises(ChecksumError, match="md17_ethanol.npz"):
        fetch_dataset("md17", "ethanol", cache_dir=cache, source=source_dir.as_uri())
    assert leftovers(cache) == []


def test_a_damaged_hash_record_is_an_error(tmp_path, source_dir):
    write_fake_md17(source_dir)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "sha256.json").write_text(json.dumps({"md17_ethanol.npz": {"sha256": "", "recorded": "today"}}))
    with pytest.raises(FetchError, match="sha256.json is not a hash record"):
        fetch_dataset("md17", "ethanol", cache_dir=cache, source=source_dir.as_uri())
    assert not (cache / "md17_ethanol.npz").exists()


def test_pinned_hash(tmp_path, source_dir, monkeypatch):
    write_fake_md17(source_dir)
    good = fetch_module.sha256_of(source_dir / "md17_ethanol.npz")
    monkeypatch.setattr(fetch_module, "PINNED_SHA256", {"md17_ethanol.npz": "0" * 64})
    with pytest.raises(ChecksumError, match=f"expected {'0' * 64}.*got {good}"):
        fetch_dataset("md17", "ethanol", cache_dir=tmp_path / "cache", source=source_dir.as_uri())
    assert leftovers(tmp_path / "cache") == []
    assert not (tmp_path / "cache" / "sha256.json").exists()
    monkeypatch.setattr(fetch_module, "PINNED_SHA256", {"md17_ethanol.npz": good[:12]})
    lines: list[str] = []
    fetch_dataset("md17", "ethanol", cache_dir=tmp_path / "cache", source=source_dir.as_uri(), report=lines.append)
    assert any("verified against pinned hash" in line for line in lines)


def test_unknown_names_list_the_known_ones(tmp_path):
    with pytest.raises(FetchError, match="unknown molecule 'ethnol'.*aspirin, benzene, ethanol"):
        fetch_dataset("rmd17", "ethnol", cache_dir=tmp_path)
    with pytest.raises(FetchError, match="unknown dataset 'md22'; known: md17, rmd17"):
        fetch_dataset("md22", "ethanol", cache_dir=tmp_path)
    assert not any(tmp_path.iterdir())


def test_http_errors_and_bad_archives_are_clear(tmp_path, server):
    cache = tmp_path / "cache"
    with pytest.raises(FetchError, match=r"rmd17.tar.bz2 failed: HTTP 404"):
        fetch_dataset("rmd17", "ethanol", cache_dir=cache, source=server.url)
    assert leftovers(cache) == []
    write_fake_rmd17(server.root)
    with pytest.raises(FetchError, match="lacks rmd17/npz_data/rmd17_toluene.npz"):
        fetch_dataset("rmd17", "toluene", cache_dir=cache, source=server.url)
    assert not (cache / "rmd17_toluene.npz").exists()


def test_cache_directory_from_environment(tmp_path, source_dir, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFF_CACHE_DIR", raising=False)
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "mlff" / "datasets"
    monkeypatch.setenv("MLFF_CACHE_DIR", str(tmp_path / "env-cache"))
    write_fake_md17(source_dir)
    assert fetch_dataset("md17", "ethanol", source=str(source_dir)) == tmp_path / "env-cache" / "md17_ethanol.npz"


def test_cli_fetch(tmp_path, source_dir, capsys):
    write_fake_rmd17(source_dir)
    cache = tmp_path / "cache"
    argv = ["data", "fetch", "rmd17", "ethanol", "--cache", str(cache), "--source", source_dir.as_uri()]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert TOFU in out and f"ready: {cache / 'rmd17_ethanol.npz'}" in out
    assert main(argv) == 0
    assert "verified against the hash recorded on" in capsys.readouterr().out
    assert main(["data", "fetch", "rmd17", "water", "--cache", str(cache)]) == 2
    assert "unknown molecule 'water'" in capsys.readouterr().err


def test_cli_module_imports_no_torch():
    script = "import sys, mlff.cli.main, mlff.data.fetch; mlff.cli.main.build_parser(); print('torch' in sys.modules)"
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "False"
