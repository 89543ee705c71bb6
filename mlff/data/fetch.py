"""Download MD17 and rMD17 into a local cache, verify SHA-256, convert to mlff's MD17 layout.

Addresses (checked against public code that downloads the same files):

- MD17 (original labels, Chmiela et al. 2017): one npz per molecule under
  http://www.quantum-machine.org/gdml/data/npz/ (the sGDML site). The prefix is the one
  sGDML's own downloader uses (stefanch/sGDML, sgdml/get.py); the file names
  (md17_aspirin.npz, md17_benzene2017.npz, ...) are those of torch_geometric's MD17 class
  (pyg-team/pytorch_geometric, torch_geometric/datasets/md17.py) and torchmd-net's MD17.
  Keys: z, R, E [n, 1], F (kcal/mol, kcal/mol/A) and a few strings mlff does not read.
- rMD17 (Christensen and von Lilienfeld 2020, figshare DOI 10.6084/m9.figshare.12672038):
  one archive, rmd17.tar.bz2, at https://figshare.com/ndownloader/files/23950376 (the address
  schnetpack's rMD17, torchmd-net's rMD17 and load-atoms' rmd17 importer download). It holds
  rmd17/npz_data/rmd17_<molecule>.npz (nuclear_charges, coords, energies, forces,
  old_indices, old_energies, old_forces; kcal/mol) and the five published splits
  rmd17/splits/index_{train,test}_0{1..5}.csv (one frame index per line, shared by all
  molecules), read this way by schnetpack's rMD17. torch_geometric now downloads the same
  archive from Materials Cloud instead:
  https://archive.materialscloud.org/record/file?filename=rmd17.tar.bz2&record_id=466
  (usable with `source`, which takes a prefix ending where the file name starts).

Cache layout (default ~/.cache/mlff/datasets, or $MLFF_CACHE_DIR, or the cache_dir argument):

    downloads/<file name>        the files as downloaded (kept: rMD17 is one archive for all molecules)
    sha256.json                  hashes recorded at first download (trust on first use)
    <dataset>_<molecule>.npz     converted: z, R, E, F in kcal/mol and kcal/mol/A, as mlff reads them
"""

import hashlib
import http.client
import io
import json
import os
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import urllib.response
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mlff._version import __version__
from mlff.data.frames import DatasetError
from mlff.data.readers import read_frames
from mlff.utils import atomic_path, sha256_of, write_json

MOLECULES: tuple[str, ...] = (
    "aspirin",
    "benzene",
    "ethanol",
    "malonaldehyde",
    "naphthalene",
    "salicylic",
    "toluene",
    "uracil",
)
DATASETS: tuple[str, ...] = ("md17", "rmd17")

MD17_URL_PREFIX = "http://www.quantum-machine.org/gdml/data/npz/"
# benzene: the 2017 set; the site's md17_benzene2018 / benzene2018_dft files are a different (FHI-aims) set.
MD17_FILE_NAMES: dict[str, str] = {
    molecule: f"md17_{'benzene2017' if molecule == 'benzene' else molecule}.npz" for molecule in MOLECULES
}
RMD17_ARCHIVE_NAME = "rmd17.tar.bz2"
RMD17_ARCHIVE_URL = "https://figshare.com/ndownloader/files/23950376"
RMD17_NUM_SPLITS = 5

# Published SHA-256 values by file name; a value may be a prefix of the digest (at least 12 hex digits).
# rmd17.tar.bz2: the first 12 hex digits of its SHA-256, published by load-atoms
# (jla-gardner/load-atoms, src/load_atoms/database/importers/rmd17.py, expected_hash, which
# load_atoms.utils.generate_checksum defines as sha256(...).hexdigest()[:12]).
# No published hash was found for the sGDML MD17 npz files: they are trusted on first use.
PINNED_SHA256: dict[str, str] = {RMD17_ARCHIVE_NAME: "cddeea2ec2c4"}
MIN_PINNED_HEX_DIGITS = 12

CACHE_ENV_VAR = "MLFF_CACHE_DIR"
REGISTRY_NAME = "sha256.json"
DOWNLOAD_TIMEOUT_S = 60.0
CHUNK_BYTES = 1 << 20

Reporter = Callable[[str], None]


class FetchError(ValueError):
    """A dataset could not be downloaded or converted (the message says which file and why)."""


class ChecksumError(FetchError):
    """A file's SHA-256 differs from the pinned or recorded one; the file has been deleted."""


@dataclass(frozen=True)
class RemoteFile:
    """A file to download: `name` in the cache and under a mirror prefix, `url` its official address."""

    name: str
    url: str


def default_cache_dir() -> Path:
    """$MLFF_CACHE_DIR if set, else ~/.cache/mlff/datasets."""
    override = os.environ.get(CACHE_ENV_VAR, "")
    return Path(override).expanduser() if override else Path.home() / ".cache" / "mlff" / "datasets"


def remote_file(dataset: str, molecule: str) -> RemoteFile:
    """The file that holds `molecule` of `dataset`; FetchError listing the known names if either is unknown."""
    if dataset not in DATASETS:
        raise FetchError(f"unknown dataset {dataset!r}; known: {', '.join(DATASETS)}")
    if molecule not in MOLECULES:
        raise FetchError(f"unknown molecule {molecule!r} for {dataset}; known: {', '.join(MOLECULES)}")
    if dataset == "md17":
        return RemoteFile(MD17_FILE_NAMES[molecule], MD17_URL_PREFIX + MD17_FILE_NAMES[molecule])
    return RemoteFile(RMD17_ARCHIVE_NAME, RMD17_ARCHIVE_URL)


def fetch_dataset(
    dataset: str,
    molecule: str,
    cache_dir: str | Path | None = None,
    source: str | None = None,
    report: Reporter | None = None,
    progress: bool = True,
) -> Path:
    """Download (or reuse) one molecule of MD17 or rMD17, verify it, convert it; return the converted npz.

    Args:
        dataset: "md17" (original sGDML labels) or "rmd17" (revised labels with the published splits).
        molecule: one of MOLECULES.
        cache_dir: cache directory (default: default_cache_dir()).
        source: URL prefix replacing the official addresses (a mirror): the file is fetched from
            `<source>/<file name>`; http(s)://, file:// or a local directory.
        report: called with one line per step, e.g. `print` (default: silent).
        progress: show a download progress bar on terminals.

    Returns:
        `<cache>/<dataset>_<molecule>.npz` with keys z, R, E [frames], F in kcal/mol and kcal/mol/A
        (read_frames converts to eV); rMD17 adds md17_index and split_train, split_test [5, 1000].
    """
    remote = remote_file(dataset, molecule)
    say = report or (lambda line: None)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    url = remote.url if source is None else source_url(source, remote.name)
    raw = obtain_verified(remote.name, url, cache, say, progress)
    output = cache / f"{dataset}_{molecule}.npz"
    if output.is_file():
        say(f"using converted {output}")
        return output
    arrays = read_md17(raw) if dataset == "md17" else read_rmd17(raw, molecule, say)
    write_converted(arrays, output)
    say(f"wrote {output} ({describe(arrays)})")
    return output


def source_url(source: str, name: str) -> str:
    """`<source>/<name>` for a URL prefix, or the file:// URL of `name` in a local directory."""
    if "://" not in source:
        return (Path(source).expanduser().resolve() / name).as_uri()
    scheme = urllib.parse.urlsplit(source).scheme
    if scheme not in ("http", "https", "file"):
        raise FetchError(f"source {source!r}: unsupported scheme {scheme!r} (use http, https or file)")
    return f"{source.rstrip('/')}/{urllib.parse.quote(name)}"


def obtain_verified(name: str, url: str, cache: Path, say: Reporter, progress: bool) -> Path:
    """`<cache>/downloads/<name>`, downloaded if missing; its SHA-256 checked before it is used."""
    target = cache / "downloads" / name
    if target.is_file():
        say(f"using cached download {target}")
        say(f"sha256 {check_sha256(target, name, sha256_of(target), cache)}")
        return target
    say(f"downloading {url}")
    # The download becomes `target` only once its hash is checked.
    with atomic_path(target, suffix=".part") as temporary:
        digest = download(url, temporary, name, progress)
        say(f"sha256 {check_sha256(temporary, name, digest, cache)}")
    return target


def download(url: str, destination: Path, name: str, progress: bool) -> str:
    """Stream `url` into `destination` (a temporary file the caller publishes once verified); its hex SHA-256.

    `name` labels the progress bar. Raises FetchError on any failure, leaving `destination` to the caller.
    """
    digest = hashlib.sha256()
    try:
        with open(destination, "wb") as output, _open_url(url) as response:
            total = _content_length(response)
            received = 0
            with tqdm(
                total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=name, disable=None if progress else True
            ) as bar:
                while chunk := response.read(CHUNK_BYTES):
                    output.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        if total is not None and received != total:
            raise FetchError(f"download of {url} is incomplete: {received} of {total} bytes")
    except urllib.error.HTTPError as error:
        error.close()
        raise FetchError(f"download of {url} failed: HTTP {error.code} {error.reason}") from None
    except urllib.error.URLError as error:
        raise FetchError(f"could not download {url}: {error.reason}") from None
    except (OSError, http.client.HTTPException) as error:
        raise FetchError(f"download of {url} failed: {error!r}") from None
    return digest.hexdigest()


def _open_url(url: str) -> http.client.HTTPResponse | urllib.response.addinfourl:
    # A fresh opener per call, so proxy settings are read from the environment now.
    request = urllib.request.Request(url, headers={"User-Agent": f"mlff/{__version__} (Python urllib)"})
    return urllib.request.build_opener().open(request, timeout=DOWNLOAD_TIMEOUT_S)


def _content_length(response: http.client.HTTPResponse | urllib.response.addinfourl) -> int | None:
    value = response.headers.get("Content-Length")
    return int(value) if value is not None and value.isdigit() else None


def check_sha256(path: Path, name: str, actual: str, cache: Path) -> str:
    """Check `actual` (hex SHA-256 of `path`) against the pinned hash of `name`, else the recorded one.

    With neither, record it (trust on first use). Returns a line saying which check passed;
    on a mismatch deletes `path` and raises ChecksumError naming the file and both hashes.
    """
    pinned = PINNED_SHA256.get(name)
    registry_path = cache / REGISTRY_NAME
    if pinned is not None:
        if len(pinned) < MIN_PINNED_HEX_DIGITS:
            raise FetchError(f"PINNED_SHA256[{name!r}] = {pinned!r} is too short to check anything")
        expected, passed = pinned.lower(), "verified against pinned hash"
    else:
        registry = read_registry(registry_path)
        entry = registry.get(name)
        if entry is None:
            registry[name] = {"sha256": actual, "recorded": datetime.now(timezone.utc).isoformat(timespec="seconds")}
            write_registry(registry, registry_path)
            return f"{actual}: recorded at first download (trust on first use) in {registry_path}"
        expected, passed = entry["sha256"], f"verified against the hash recorded on {entry['recorded']}"
    if not actual.startswith(expected):
        path.unlink(missing_ok=True)
        source = "pinned in mlff.data.fetch.PINNED_SHA256" if pinned is not None else f"recorded in {registry_path}"
        wanted = expected if len(expected) == len(actual) else f"a hash starting with {expected}"
        raise ChecksumError(
            f"SHA-256 mismatch for {name}: expected {wanted} ({source}), got {actual}; "
            f"the file was deleted and nothing was converted"
        )
    return f"{actual}: {passed}"


def read_registry(path: Path) -> dict[str, dict[str, str]]:
    """The recorded hashes ({file name: {"sha256", "recorded"}}); empty if the file does not exist."""
    if not path.is_file():
        return {}
    try:
        registry = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise FetchError(f"{path} is not a readable hash record ({error}); delete it to start over") from None
    if not isinstance(registry, dict) or not all(map(_is_record_entry, registry.values())):
        raise FetchError(
            f"{path} is not a hash record (expected {{file name: {{sha256: 64 hex digits, recorded: date}}}}); "
            "delete it to start over"
        )
    return registry


def _is_record_entry(entry: object) -> bool:
    if not isinstance(entry, dict) or not isinstance(entry.get("recorded"), str):
        return False
    digest = entry.get("sha256")
    return isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)


def write_registry(registry: dict[str, dict[str, str]], path: Path) -> None:
    """Write the recorded hashes atomically (temporary file, then rename)."""
    write_json(path, registry, sort_keys=True)


def read_md17(path: Path) -> dict[str, np.ndarray]:
    """z, R, E (flattened from [n, 1]), F of an sGDML MD17 npz; units unchanged (kcal/mol, kcal/mol/A)."""
    with _open_npz(path, path.name) as archive:
        z, r, e, f = _arrays(archive, ("z", "R", "E", "F"), path.name)
    return {
        "z": z.astype(np.int64),
        "R": r.astype(np.float64),
        "E": e.astype(np.float64).reshape(-1),
        "F": f.astype(np.float64),
    }


def read_rmd17(path: Path, molecule: str, say: Reporter) -> dict[str, np.ndarray]:
    """One molecule of the rMD17 archive in the MD17 layout, with md17_index and the five published splits.

    E, F stay in kcal/mol and kcal/mol/A; split_train[k] / split_test[k] are the frame indices of
    rmd17/splits/index_train_0{k+1}.csv / index_test_0{k+1}.csv (indices into the npz's frames).
    """
    npz_name = f"rmd17/npz_data/rmd17_{molecule}.npz"
    split_names = [
        f"rmd17/splits/index_{kind}_{k:02d}.csv" for kind in ("train", "test") for k in range(1, RMD17_NUM_SPLITS + 1)
    ]
    say(f"reading {npz_name} and the splits from {path.name} (one pass through the archive, minutes for the real one)")
    members = read_tar_members(path, {npz_name, *split_names})
    with _open_npz(io.BytesIO(members[npz_name]), npz_name) as archive:
        keys = ("nuclear_charges", "coords", "energies", "forces", "old_indices")
        numbers, coordinates, energies, forces, old_indices = _arrays(archive, keys, npz_name)
    num_frames = coordinates.shape[0]
    splits = {
        key: np.stack([parse_index_csv(members[name], name, num_frames) for name in names])
        for key, names in (
            ("split_train", split_names[:RMD17_NUM_SPLITS]),
            ("split_test", split_names[RMD17_NUM_SPLITS:]),
        )
    }
    return {
        "z": numbers.astype(np.int64),
        "R": coordinates.astype(np.float64),
        "E": energies.astype(np.float64).reshape(-1),
        "F": forces.astype(np.float64),
        "md17_index": old_indices.astype(np.int64).reshape(-1),
        **splits,
    }


def read_tar_members(path: Path, names: set[str]) -> dict[str, bytes]:
    """The bytes of the named regular files of a .tar.bz2, read in one streaming pass."""
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(path, mode="r|bz2") as archive:
            for member in archive:
                name = member.name.removeprefix("./")
                if member.isfile() and name in names:
                    found[name] = archive.extractfile(member).read()
                    if len(found) == len(names):
                        break
    except (tarfile.TarError, OSError, EOFError) as error:
        raise FetchError(f"{path} is not a readable .tar.bz2 archive: {error}") from None
    missing = sorted(names - set(found))
    if missing:
        raise FetchError(f"{path} lacks {', '.join(missing)}: is it the rMD17 archive ({RMD17_ARCHIVE_NAME})?")
    return found


def parse_index_csv(text: bytes, name: str, num_frames: int) -> np.ndarray:
    """Frame indices, one per line, as int64; FetchError naming the file if any is not in 0..num_frames-1."""
    try:
        values = np.loadtxt(io.StringIO(text.decode()), dtype=np.float64, ndmin=1)
    except (ValueError, UnicodeDecodeError) as error:
        raise FetchError(f"{name}: not a list of frame indices ({error})") from None
    indices = values.astype(np.int64)
    if values.ndim != 1 or not np.array_equal(indices, values):
        raise FetchError(f"{name}: expected one integer frame index per line")
    if indices.size and (indices.min() < 0 or indices.max() >= num_frames):
        raise FetchError(f"{name}: indices outside 0..{num_frames - 1}")
    return indices


def _open_npz(file: Path | io.BytesIO, name: str) -> np.lib.npyio.NpzFile:
    try:
        return np.load(file, allow_pickle=False)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
        raise FetchError(f"{name} is not a readable npz archive: {error}") from None


def _arrays(archive: np.lib.npyio.NpzFile, keys: tuple[str, ...], name: str) -> list[np.ndarray]:
    missing = [key for key in keys if key not in archive.files]
    if missing:
        raise FetchError(f"{name} lacks key(s) {', '.join(missing)} (it has {', '.join(sorted(archive.files))})")
    try:
        return [np.asarray(archive[key]) for key in keys]
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
        raise FetchError(f"{name}: an array could not be read: {error}") from None


def write_converted(arrays: dict[str, np.ndarray], output: Path) -> None:
    """Write a compressed npz atomically, after checking that mlff reads it (read_frames)."""
    # The temporary name ends in .npz: read_frames tells formats apart by extension.
    with atomic_path(output, suffix=".npz") as temporary:
        with open(temporary, "wb") as file:
            np.savez_compressed(file, **arrays)
        try:
            read_frames(temporary)
        except DatasetError as error:
            raise FetchError(f"the converted {output.name} is not a valid dataset: {error}") from None


def describe(arrays: dict[str, np.ndarray]) -> str:
    """E.g. "100000 frames of 9 atoms; 5 splits of 1000 train / 1000 test frames"."""
    text = f"{arrays['R'].shape[0]} frames of {arrays['R'].shape[1]} atoms"
    if "split_train" in arrays:
        (count, train), test = arrays["split_train"].shape, arrays["split_test"].shape[1]
        text += f"; {count} splits of {train} train / {test} test frames"
    return text
