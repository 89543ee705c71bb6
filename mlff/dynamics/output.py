"""What an MD run leaves on disk, written so that a crash or Ctrl-C loses nothing.

* `replica_<k>.h5`: replica k's trajectory through mdtraj's HDF5 format (coordinates nm, time
  ps, energies kJ/mol, temperature K; readable with `mdtraj.load`), flushed at every frame.
* `thermo.csv`: one line per replica and saved frame (eV, K), flushed at every frame.
* `checkpoint.pt`: the engine's and observers' state after the last saved frame, replaced
  atomically; a resumed run truncates the files above to it and continues.
* `summary.json` and PNG plots at the end (or at the interruption).
"""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mlff.dynamics.frame import Frame
from mlff.units import ANGSTROM_TO_NM, EV_TO_KJ_PER_MOL, FS_PER_PS
from mlff.utils import atomic_torch_save, atomic_write_text

# Re-exported: the runner writes summary.json through this name.
from mlff.utils import write_json as write_json

THERMO_HEADER = "step,time_fs,replica,potential_energy_ev,kinetic_energy_ev,total_energy_ev,temperature_k\n"


def trajectory_path(output_dir: Path, replica: int) -> Path:
    return output_dir / f"replica_{replica}.h5"


def mdtraj_topology(atomic_numbers: Sequence[int]):
    """An mdtraj Topology of one molecule: one chain, one residue, atoms named by element and index."""
    import mdtraj

    topology = mdtraj.Topology()
    residue = topology.add_residue("MOL", topology.add_chain())
    for index, z in enumerate(atomic_numbers):
        element = mdtraj.element.Element.getByAtomicNumber(int(z))
        topology.add_atom(f"{element.symbol}{index + 1}", element, residue)
    return topology


class TrajectoryWriter:
    """One mdtraj HDF5 file per replica: the frames of every saved step, appended at each `flush` (each checkpoint).

    Args:
        output_dir: the run's directory.
        atomic_numbers: one [n_k] sequence per replica.
        frames_kept: with resume, the frames of each replica to keep (later ones, written after the
            last checkpoint, are cut); None starts new files.
    """

    def __init__(
        self, output_dir: Path, atomic_numbers: Sequence[Sequence[int]], frames_kept: Sequence[int] | None = None
    ) -> None:
        from mdtraj.formats import HDF5TrajectoryFile

        self.files: dict[int, Any] = {}
        self.pending: dict[int, list[dict[str, np.ndarray]]] = {}
        for k, numbers in enumerate(atomic_numbers):
            path = trajectory_path(output_dir, k)
            if frames_kept is None or not path.exists():
                handle = HDF5TrajectoryFile(str(path), mode="w", force_overwrite=True)
                handle.topology = mdtraj_topology(numbers)
            else:
                handle = HDF5TrajectoryFile(str(path), mode="a")
                for node in ("coordinates", "time", "kineticEnergy", "potentialEnergy", "temperature"):
                    if hasattr(handle.root, node):
                        getattr(handle.root, node).truncate(frames_kept[k])
            self.files[k] = handle

    def write(self, frame: Frame) -> None:
        """Keep the frame; `flush` appends the kept frames to the files (mdtraj flushes the file at
        every write, a tenth of a small molecule's MD time when done per frame)."""
        for b, k in enumerate(frame.replicas):
            self.pending.setdefault(k, []).append(
                {
                    "coordinates": (frame.positions_a[b] * ANGSTROM_TO_NM).astype(np.float32),
                    "time": np.float32(frame.time_fs / FS_PER_PS),
                    "kineticEnergy": np.float32(frame.kinetic_energy_ev[b] * EV_TO_KJ_PER_MOL),
                    "potentialEnergy": np.float32(frame.potential_energy_ev[b] * EV_TO_KJ_PER_MOL),
                    "temperature": np.float32(frame.temperature_k[b]),
                }
            )

    def flush(self) -> None:
        for k, frames in self.pending.items():
            self.files[k].write(**{name: np.stack([frame[name] for frame in frames]) for name in frames[0]})
        self.pending = {}

    def close(self) -> None:
        self.flush()
        for handle in self.files.values():
            handle.close()


class ThermoWriter:
    """`thermo.csv`, a line per replica and frame (`flush` with each checkpoint).

    Args:
        rows_kept: with resume, the data rows to keep (later ones are cut); None starts a new file.
    """

    def __init__(self, path: Path, rows_kept: int | None = None) -> None:
        self.rows = 0
        if rows_kept is not None and path.exists():
            lines = path.read_text().splitlines(keepends=True)[: rows_kept + 1]
            atomic_write_text(path, "".join(lines))
            self.rows = len(lines) - 1
            self.handle = open(path, "a")
        else:
            self.handle = open(path, "w")
            self.handle.write(THERMO_HEADER)
        self.handle.flush()

    def write(self, frame: Frame) -> None:
        for b, k in enumerate(frame.replicas):
            potential, kinetic = float(frame.potential_energy_ev[b]), float(frame.kinetic_energy_ev[b])
            self.handle.write(
                f"{frame.step},{frame.time_fs},{k},{potential},{kinetic},{potential + kinetic},"
                f"{float(frame.temperature_k[b])}\n"
            )
            self.rows += 1

    def flush(self) -> None:
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


def save_checkpoint(path: Path, checkpoint: dict[str, Any]) -> None:
    """torch.save to a temporary file, then an atomic rename: a crash leaves the previous checkpoint."""
    atomic_torch_save(checkpoint, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"no MD checkpoint to resume from: {path}")
    try:
        return torch.load(path, weights_only=False)
    except Exception as error:
        raise ValueError(f"{path} is not a readable MD checkpoint: {error}") from None


def plot_bond_deviation(path: Path, series: dict[int, tuple[list[float], list[float]]], threshold_a: float) -> None:
    """PNG: the largest bond deviation (Angstrom) against time (ps), one line per replica."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4))
    axes = figure.subplots()
    for k, (times_fs, deviations) in sorted(series.items()):
        shown = np.minimum(np.asarray(deviations, dtype=float), 2.0 * threshold_a)
        axes.plot(np.asarray(times_fs) / FS_PER_PS, shown, label=f"replica {k}", lw=1)
    axes.axhline(threshold_a, color="k", ls="--", lw=1, label=f"collapse ({threshold_a} A)")
    axes.set_xlabel("time (ps)")
    axes.set_ylabel("largest bond deviation (A)")
    axes.set_ylim(0.0, 2.0 * threshold_a)
    axes.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def plot_hr(path: Path, centres_a: np.ndarray, densities: dict[str, np.ndarray]) -> None:
    """PNG: h(r) (per Angstrom) against r (Angstrom), one line per named distribution."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4))
    axes = figure.subplots()
    for name, density in densities.items():
        style = {"color": "k", "lw": 1.4} if name == "reference" else {"lw": 1.0}
        axes.plot(centres_a, density, label=name, **style)
    axes.set_xlabel("r (A)")
    axes.set_ylabel("h(r) (1/A)")
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
