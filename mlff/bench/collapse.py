"""Why a potential's MD collapses: the bond, the frames before it, and DFT on them (`mlff bench collapse`).

    result = analyse_collapses("salicylic", load_protocol(protocol_path("md17-stability-cpu")),
                               "potentials/stability-cpu/collapse", frames_before=3, dft="pbe/def2-svp")

The protocol's MD runs through `mlff.dynamics.run_md` with a `CollapseObserver`, which keeps the
last saved frames of every replica. For each replica that collapses (a bond deviates more than
the protocol's `max_bond_deviation_a` from its reference length, MDsim's criterion) the result
names the bond that crossed the limit (atom indices, 0-based, elements, reference length, its
length at the last stable frame and at the collapse frame), the largest-deviation bond of each of
the last stable frames, and, when the broken bond holds a hydrogen, the heavy atom nearest to that
hydrogen at the collapse frame (a proton moving to another O or N reads there). The frames
around the collapse (the last `frames_before` stable frames and the collapse frame) are written as
extxyz with the model's energy (eV) and forces (eV/A).

DFT (default PBE/def2-SVP, rMD17's level, through `mlff.data.label.label_frames`, so every label
is appended to `<molecule>/replica<k>_dft.extxyz` as soon as it is computed and a rerun skips it)
labels the start frame of each collapsed replica (the energy reference) and its last stable
frames. Energies are compared relative to the start frame (dE = E(frame) - E(start), which
removes the constant offset between the model's and DFT's energy zero). The verdict:

* `hole`: on some last stable frame DFT's dE exceeds the model's by more than
  `max(0.5 eV, 5 x the model's test energy MAE)`: the model let the molecule into a region whose
  true energy is far higher, one it never saw.
* `chemistry`: on every labelled last stable frame |dE_DFT - dE_model| is within
  `max(0.1 eV, 3 x the model's test energy MAE)`: the model's energetics up to the collapse are
  right, so the event is what the molecule does at this temperature (e.g. a proton moving
  between two oxygens, which MDsim's bond criterion counts as a collapse).
* `unclear`: in between; `no-dft`: no DFT labels (`dft=None`, or the start frame's failed).

Outputs under `output_dir`: `<molecule>/md.json` (the observed MD: settings, series, kept frames;
a rerun with the same potential and settings reuses it instead of running the MD again),
`<molecule>/replica<k>_collapse.extxyz`, `<molecule>/replica<k>_dft_input.extxyz` and `replica<k>_dft.extxyz`,
`<molecule>/collapse.json`, `<molecule>/bond_deviation.png` (largest bond deviation of each
replica against time, collapses marked), and over every molecule in the folder `collapse.json`
and `collapse.md` (the table).
"""

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from mlff import utils
from mlff.dynamics.settings import MDSettings
from mlff.units import FS_PER_PS

DEFAULT_DFT = "pbe/def2-svp"
# Verdict thresholds (eV): see the module docstring.
HOLE_MIN_EV = 0.5
HOLE_MAE_FACTOR = 5.0
AGREE_MIN_EV = 0.1
AGREE_MAE_FACTOR = 3.0
# A hydrogen this close to a heavy atom other than its bonded partner has moved over to it, Angstrom.
H_TRANSFER_DISTANCE_A = 1.35
HEAVY_ACCEPTORS = (7, 8, 9, 16, 17)  # N, O, F, S, Cl: atoms a proton moves to

# (frames, cache file) -> per frame (energy eV, forces [n, 3] eV/A), or None where no label came.
Labeller = Callable[[list[Atoms], Path], list[tuple[float, np.ndarray] | None]]


@dataclass(frozen=True)
class VerdictThresholds:
    """When a collapse is a hole or chemistry (see the module docstring), eV.

    Attributes:
        hole_ev: DFT's dE above the model's by more than this on some last stable frame: `hole`.
        agree_ev: |dE_DFT - dE_model| within this on every labelled last stable frame: `chemistry`.
    """

    hole_ev: float = HOLE_MIN_EV
    agree_ev: float = AGREE_MIN_EV

    @classmethod
    def for_model(cls, energy_mae_ev: float | None) -> "VerdictThresholds":
        """The thresholds of a model whose test energy MAE is `energy_mae_ev` (None: the floors)."""
        mae = float(energy_mae_ev or 0.0)
        return cls(max(HOLE_MIN_EV, HOLE_MAE_FACTOR * mae), max(AGREE_MIN_EV, AGREE_MAE_FACTOR * mae))


def verdict(de_dft_ev: Sequence[float | None], de_model_ev: Sequence[float], thresholds: VerdictThresholds) -> str:
    """`hole`, `chemistry`, `unclear` or `no-dft` from dE (relative to the start frame, eV) of the
    last stable frames, DFT's (None where unlabelled) and the model's."""
    gaps = [dft - model for dft, model in zip(de_dft_ev, de_model_ev) if dft is not None]
    if not gaps:
        return "no-dft"
    if max(gaps) > thresholds.hole_ev:
        return "hole"
    if max(abs(gap) for gap in gaps) <= thresholds.agree_ev:
        return "chemistry"
    return "unclear"


def recorded_collapse_times(summary_path: str | os.PathLike) -> dict[int, float]:
    """Replica -> collapse time (ps) of a stability run's summary.json (`mlff md`, `mlff bench stability`)."""
    summary = json.loads(Path(summary_path).read_text())
    per_replica = summary["stability"]["per_replica"]
    return {k: float(r["collapse_time_ps"]) for k, r in enumerate(per_replica) if r.get("collapse_time_ps") is not None}


def stop_time(recorded: dict[int, float], margin_ps: float = 1.0) -> str | None:
    """The MD length that covers every recorded collapse: the latest + `margin_ps` ("28.55ps"), or None."""
    return f"{max(recorded.values()) + margin_ps:.6g}ps" if recorded else None


def pyscf_labeller(
    method: str = DEFAULT_DFT, workers: int = 1, report: Callable[[str], None] | None = print, compute: bool = True
) -> Labeller:
    """A `Labeller` through `mlff.data.label.label_frames` (resumable, one thread per worker): the
    frames go to `<cache stem>_input.extxyz` beside the cache file, the labels are appended to the
    cache. `compute=False` computes nothing and returns what the cache already holds."""

    def label(frames: list[Atoms], cache: Path) -> list[tuple[float, np.ndarray] | None]:
        import ase.io

        from mlff.data.label import label_frames, positions_hash, read_labelled

        source = cache.with_name(f"{cache.stem}_input.extxyz")
        with utils.atomic_path(source, suffix=".extxyz") as temporary:
            ase.io.write(temporary, frames, format="extxyz")
        if compute:
            result = label_frames(source, cache, method=method, workers=workers, threads_per_worker=1, report=report)
            if report and result.failed:
                report(f"DFT failed on {len(result.failed)} frame(s): {result.failed}")
        done = {str(f.info["positions_sha256"]): f for f in read_labelled(cache)}
        labels: list[tuple[float, np.ndarray] | None] = []
        # The labels are keyed by the positions as the input file holds them (extxyz rounds to 1e-8 A).
        for atoms in ase.io.read(source, index=":"):
            hit = done.get(positions_hash(atoms.get_atomic_numbers(), atoms.get_positions()))
            labels.append(None if hit is None else (float(hit.get_potential_energy()), hit.get_forces()))
        return labels

    return label


def analyse_collapses(
    potential: str | os.PathLike,
    settings: MDSettings,
    output_dir: str | os.PathLike,
    frames_before: int = 3,
    dft: str | None = DEFAULT_DFT,
    labeller: Labeller | None = None,
    structure: str | Sequence[str] | None = None,
    md_dir: str | os.PathLike | None = None,
    recorded: dict[int, float] | None = None,
    dft_workers: int = 1,
    dft_frames: int | None = None,
    label_collapse_frame: bool = False,
    dft_compute: bool = True,
    replay: str | os.PathLike | None = None,
    report: Callable[[str], None] | None = print,
    engine: str = "torch",
) -> dict[str, Any]:
    """Run the protocol, find each replica's collapse and judge it (see the module docstring).

    Args:
        potential: a potential file or a shipped potential's name.
        settings: the MD protocol (its length may be cut to the recorded collapses, `stop_time`).
        output_dir: where `<molecule>/` and the tables go.
        frames_before: stable frames kept and labelled before each collapse.
        dft: "pbe/def2-svp" (or another `mlff.data.label` method), or None: no DFT.
        labeller: computes the DFT labels instead of `pyscf_labeller(dft)` (e.g. a stand-in in tests).
        structure: start structures as `run_md` takes them (None: the potential's start frames).
        md_dir: the MD run's own output (trajectories, checkpoint: an interrupted run resumes);
            None: the MD keeps nothing on disk.
        recorded: replica -> collapse time (ps) of an earlier run, for the comparison column.
        dft_workers: DFT processes at once (one thread each).
        dft_frames: label only the last this many stable frames of each collapse (None: all kept).
        label_collapse_frame: label the collapse frame too (after the others; it counts in the verdict).
        dft_compute: False: use only the DFT labels already cached, compute none.
        engine: the batched MD engine, "torch" or "torch-compiled" (the same MD, its potential call
            compiled: faster on long runs).
        replay: an earlier MD run's folder of this potential (`replica_<k>.h5`, `summary.json`): its
            saved frames are read instead of running the MD (`replayed_md`); `settings` must be its.
        report: called with progress lines (None: quiet).

    Returns:
        {"molecule", "potential", "settings", "thresholds", "collapses": [...], "replicas", ...}.
    """
    from mlff.data.generate import METHODS
    from mlff.export import load_potential, read_metadata
    from mlff.resources import potential_path

    if frames_before < 1:
        raise ValueError(f"frames_before must be >= 1, got {frames_before}")
    if dft is not None and labeller is None and dft not in METHODS:
        raise ValueError(f"unknown DFT method {dft!r}: choose one of {', '.join(METHODS)} or none")
    if dft_frames is not None and not 1 <= dft_frames <= frames_before:
        raise ValueError(f"dft_frames must be between 1 and frames_before ({frames_before}), got {dft_frames}")
    path = potential_path(potential)
    name = path.stem
    molecule_dir = Path(output_dir) / name
    molecule_dir.mkdir(parents=True, exist_ok=True)
    _clear_other_potential(molecule_dir, utils.sha256_of(path))
    metadata = read_metadata(path)
    if replay is not None:
        observed = replayed_md(path, settings, frames_before, replay, report)
    else:
        observed = _observed_md(path, settings, frames_before, structure, md_dir, molecule_dir, report, engine)
    model = load_potential(path)
    mae_mev = (metadata.get("test_metrics") or {}).get("energy_mae_mev")
    force_mae_mev = (metadata.get("test_metrics") or {}).get("force_mae_mev_per_a")
    thresholds = VerdictThresholds.for_model(None if mae_mev is None else mae_mev / 1000.0)
    numbers = np.asarray(observed["atomic_numbers"], dtype=np.int64)
    bonds = np.asarray(observed["bonds"], dtype=np.int64)
    reference = np.asarray(observed["reference_lengths_a"], dtype=np.float64)
    collapses = []
    for k, c in sorted(observed["collapses"].items(), key=lambda item: int(item[0])):
        entry = _describe(int(k), c, numbers, bonds, reference, settings.max_bond_deviation_a)
        frames_file = molecule_dir / f"replica{k}_collapse.extxyz"
        _write_frames(frames_file, numbers, c["frames"], bonds, reference, int(k))
        entry["frames_file"] = frames_file.name
        if recorded is not None:
            entry["recorded_collapse_time_ps"] = recorded.get(int(k))
        collapses.append(entry)
    method = "custom" if labeller is not None else dft
    if labeller is None and dft is not None:
        labeller = pyscf_labeller(dft, dft_workers, report, compute=dft_compute)
    for entry in collapses:
        to_label, owners = _dft_frames([entry], observed, numbers, dft_frames or frames_before, label_collapse_frame)
        labels: list[tuple[float, np.ndarray] | None] = [None] * len(to_label)
        if labeller is not None:
            if report:
                report(f"{name}: DFT of replica {entry['replica']}'s start and last stable frames ...")
            labels = labeller(to_label, molecule_dir / f"replica{entry['replica']}_dft.extxyz")
        model_labels = [model.energy_and_forces(numbers, atoms.get_positions()) for atoms in to_label]
        _compare(entry, 0, owners, labels, model_labels, thresholds)
    result = {
        "molecule": name,
        "potential": str(potential),
        "potential_sha256": observed["potential_sha256"],
        "settings": settings.to_dict(),
        "frames_before": frames_before,
        "dft_frames": dft_frames or frames_before,
        "label_collapse_frame": label_collapse_frame,
        "dft": method,
        "model_energy_mae_mev": mae_mev,
        "model_force_mae_mev_per_a": force_mae_mev,
        "thresholds": asdict(thresholds),
        "replicas": settings.replicas,
        "length_ps": settings.steps * settings.timestep_fs / FS_PER_PS,
        "recorded_collapse_time_ps": None if recorded is None else {str(k): v for k, v in sorted(recorded.items())},
        "collapses": collapses,
    }
    utils.write_json(molecule_dir / "collapse.json", utils.finite_or_none(result))
    plot_collapses(molecule_dir / "bond_deviation.png", observed, settings.max_bond_deviation_a, name)
    return result


def _clear_other_potential(molecule_dir: Path, potential_sha256: str) -> None:
    """Remove what an analysis of another potential file left in the molecule's folder: its record,
    observed MD, per-replica frames and DFT labels. Otherwise a replica that collapsed then and holds
    now keeps its files beside the new ones, and a DFT cache keeps the old frames' labels."""
    records = [molecule_dir / "collapse.json", molecule_dir / "md.json"]
    shas = {json.loads(path.read_text()).get("potential_sha256") for path in records if path.is_file()}
    if not shas - {potential_sha256}:
        return
    for path in [*records, *molecule_dir.glob("replica*.extxyz")]:
        path.unlink(missing_ok=True)


def _observed_md(
    path: Path,
    settings: MDSettings,
    keep: int,
    structure: str | Sequence[str] | None,
    md_dir: str | os.PathLike | None,
    molecule_dir: Path,
    report: Callable[[str], None] | None,
    engine: str = "torch",
) -> dict[str, Any]:
    """The MD with a CollapseObserver, or the `md.json` of an earlier call with the same potential,
    settings, kept frames and structures."""
    from mlff.dynamics.runner import can_resume, run_md

    specs = [structure] if isinstance(structure, str) else list(structure or [])
    key = {"potential_sha256": utils.sha256_of(path), "settings": settings.to_dict(), "keep": keep, "structure": specs}
    cache = molecule_dir / "md.json"
    if cache.is_file():
        saved = json.loads(cache.read_text())
        if all(saved.get(field) == value for field, value in key.items()):
            if report:
                report(f"{path.stem}: reusing the observed MD in {cache}")
            return saved
    systems, numbers, observer = _collapse_observer(path, specs, settings, keep)
    if report:
        report(f"{path.stem}: {settings.replicas} replicas x {settings.steps} steps of MD ...")
    resume = md_dir is not None and can_resume(md_dir, engine, settings, path)
    run_md(path, specs or None, settings, md_dir, engine=engine, resume=resume, observers=[observer])
    observed = _observed_record(key, numbers, systems, observer)
    utils.write_json(cache, observed)
    return observed


def _collapse_observer(
    path: Path, specs: list[str], settings: MDSettings, keep: int
) -> tuple[list[Atoms], np.ndarray, Any]:
    """The replicas' start structures, their atomic numbers and a `CollapseObserver` on the molecule's
    bonds (reference lengths from the potential's metadata), as `run_md` would set them up."""
    from mlff.dynamics.observers import CollapseObserver
    from mlff.dynamics.runner import load_structures, replica_observers
    from mlff.export import read_metadata

    reference = read_metadata(path).get("reference") or {}
    systems = load_structures(specs, {"reference": reference}, settings.replicas)
    numbers = systems[0].get_atomic_numbers()
    if any(atoms.get_atomic_numbers().tolist() != numbers.tolist() for atoms in systems):
        raise ValueError("the collapse analysis needs every replica to be the same molecule (same atoms in order)")
    stability, _ = replica_observers(systems[0], reference, settings.max_bond_deviation_a)
    observer = CollapseObserver(stability.bonds, stability.reference_lengths_a, settings.max_bond_deviation_a, keep)
    return systems, numbers, observer


def _observed_record(key: dict[str, Any], numbers: np.ndarray, systems: list[Atoms], observer: Any) -> dict[str, Any]:
    """What an observed MD keeps (JSON-able): `key` (what identifies the MD), the molecule, its bonds and
    start frames, and the `CollapseObserver`'s series and collapses."""
    observed = key | {
        "atomic_numbers": numbers.tolist(),
        "bonds": observer.bonds.tolist(),
        "reference_lengths_a": observer.reference_lengths_a.tolist(),
        "start_positions_a": [atoms.get_positions().tolist() for atoms in systems],
        "series": {str(k): v for k, v in sorted(observer.series.items())},
        "collapses": {str(k): c for k, c in sorted(observer.collapses.items())},
    }
    return json.loads(utils.to_json(utils.finite_or_none(observed)))


def replayed_md(
    path: Path,
    settings: MDSettings,
    keep: int,
    run_dir: str | os.PathLike,
    report: Callable[[str], None] | None,
) -> dict[str, Any]:
    """The observed MD (as `_observed_md` returns it) from an earlier run's saved frames, no MD run.

    The frames of `run_dir/replica_<k>.h5` (mdtraj HDF5, every `settings.save_every` steps, each
    replica's file ending at its collapse) go through a `CollapseObserver` in time order, and the
    model's energy and forces are computed at the frames it keeps; the kept frames are those the run
    saved (a replayed collapse is located to within one saved interval, as the run's own detection was).

    Raises:
        ValueError: the run is of another potential file, of other settings, or its files do not
            match each other.
    """
    import mdtraj

    from mlff.dynamics.frame import Frame
    from mlff.dynamics.output import trajectory_path
    from mlff.export import load_potential
    from mlff.units import NM_TO_ANGSTROM

    run_dir = Path(run_dir)
    summary_path = run_dir / "summary.json"
    if not summary_path.is_file():
        raise FileNotFoundError(f"replay: no {summary_path} (an MD run's folder is needed)")
    summary = json.loads(summary_path.read_text())
    sha256 = utils.sha256_of(path)
    if summary.get("potential_sha256") != sha256:
        raise ValueError(
            f"replay: {run_dir} was run with another potential file (SHA-256 {summary.get('potential_sha256')}), "
            f"not {path} ({sha256})"
        )
    mismatched = sorted(k for k, v in settings.to_dict().items() if k != "steps" and summary["settings"].get(k) != v)
    if mismatched:
        raise ValueError(f"replay: the settings differ from {run_dir}'s in {mismatched}")
    # The runner records the specs it was given, or this text for the potential's own start frames.
    specs = summary.get("structure")
    specs = [] if isinstance(specs, str) else list(specs or [])
    systems, numbers, observer = _collapse_observer(path, specs, settings, keep)
    if report:
        report(f"{path.stem}: replaying the {settings.replicas} saved trajectories of {run_dir} ...")
    model = load_potential(path)
    frames: dict[int, dict[int, np.ndarray]] = {}
    for k in range(settings.replicas):
        trajectory_file = trajectory_path(run_dir, k)
        trajectory = mdtraj.load(str(trajectory_file))
        if trajectory.n_atoms != len(numbers):
            raise ValueError(f"replay: {trajectory_file} has {trajectory.n_atoms} atoms, not {len(numbers)}")
        for time_ps, xyz in zip(trajectory.time, trajectory.xyz):
            step = int(round(float(time_ps) * FS_PER_PS / settings.timestep_fs))
            frames.setdefault(step, {})[k] = np.asarray(xyz, dtype=np.float64) * NM_TO_ANGSTROM
    for step in sorted(frames):
        if step > settings.steps:
            break
        replicas = sorted(frames[step])
        nan = np.full(len(replicas), np.nan)
        positions = [frames[step][k] for k in replicas]
        # The bond criterion needs positions only; the model is evaluated below on the kept frames alone.
        observer.observe(
            Frame(
                step=step,
                time_fs=step * settings.timestep_fs,
                replicas=replicas,
                positions_a=positions,
                forces_ev_per_a=[np.full_like(p, np.nan) for p in positions],
                potential_energy_ev=nan,
                kinetic_energy_ev=nan,
                temperature_k=nan,
            )
        )
    for collapse in observer.collapses.values():
        for kept in collapse["frames"]:
            if np.isfinite(kept["positions_a"]).all():
                kept["energy_ev"], kept["forces_ev_per_a"] = model.energy_and_forces(numbers, kept["positions_a"])
    key = {"potential_sha256": sha256, "settings": settings.to_dict(), "keep": keep, "structure": specs}
    return _observed_record(key | {"replayed_from": str(run_dir)}, numbers, systems, observer)


def atom_label(numbers: np.ndarray, index: int) -> str:
    """An atom's element and 0-based index, e.g. O9."""
    return f"{utils.element_symbol(int(numbers[index]))}{index}"


def bond_label(numbers: np.ndarray, bond: Sequence[int]) -> str:
    """The atom labels of a bond, e.g. C3-O9."""
    return f"{atom_label(numbers, int(bond[0]))}-{atom_label(numbers, int(bond[1]))}"


def _describe(
    replica: int,
    collapse: dict[str, Any],
    numbers: np.ndarray,
    bonds: np.ndarray,
    reference: np.ndarray,
    limit_a: float,
) -> dict[str, Any]:
    """What happened at one replica's collapse: the bond over the limit and the bonds before it."""
    from mlff.data.reference import bond_lengths

    frames = collapse["frames"]
    positions = [np.asarray(f["positions_a"], dtype=np.float64) for f in frames]
    lengths = [bond_lengths(p, bonds) for p in positions]
    deviations = [np.abs(length - reference) for length in lengths]
    last, stable = deviations[-1], deviations[:-1]
    finite = bool(np.isfinite(last).all())
    broken = int(np.nanargmax(last)) if finite else 0
    i, j = (int(a) for a in bonds[broken])
    entry: dict[str, Any] = {
        "replica": replica,
        "collapse_time_ps": collapse["time_fs"] / FS_PER_PS,
        "stable_time_ps": frames[-2]["time_fs"] / FS_PER_PS if len(frames) > 1 else 0.0,
        "finite": finite,
        "bond": [i, j],
        "bond_label": bond_label(numbers, (i, j)),
        "elements": [utils.element_symbol(int(numbers[i])), utils.element_symbol(int(numbers[j]))],
        "reference_length_a": float(reference[broken]),
        "length_last_stable_a": float(lengths[-2][broken]) if len(frames) > 1 else None,
        "length_collapse_a": float(lengths[-1][broken]),
        "bonds_over_limit": [bond_label(numbers, bond) for bond, d in zip(bonds, last) if not d <= limit_a],
        "last_stable_frames": [
            {
                "time_ps": f["time_fs"] / FS_PER_PS,
                "largest_deviation_bond": bond_label(numbers, bonds[w]),
                "largest_deviation_a": float(d[w]),
                "collapse_bond_length_a": float(length[broken]),
            }
            for f, d, length in zip(frames[:-1], stable, lengths[:-1])
            for w in [int(np.argmax(d))]
        ],
    }
    entry["event"] = _event(numbers, positions[-1], i, j) if finite else "positions no longer finite"
    return entry


def _event(numbers: np.ndarray, positions: np.ndarray, i: int, j: int) -> str:
    """A short description of the broken bond i-j at the collapse frame: where a hydrogen went."""
    hydrogen = i if numbers[i] == 1 else j if numbers[j] == 1 else None
    length = float(np.linalg.norm(positions[i] - positions[j]))
    if hydrogen is None:
        return f"{atom_label(numbers, i)}-{atom_label(numbers, j)} stretched to {length:.2f} A"
    partner = j if hydrogen == i else i
    distances = np.linalg.norm(positions - positions[hydrogen], axis=-1)
    distances[[hydrogen, partner]] = np.inf
    distances[numbers == 1] = np.inf
    text = f"{atom_label(numbers, hydrogen)} left {atom_label(numbers, partner)} ({length:.2f} A)"
    if not np.isfinite(distances).any():
        return text
    nearest = int(np.argmin(distances))
    near = float(distances[nearest])
    text += f"; nearest other heavy atom {atom_label(numbers, nearest)} at {near:.2f} A"
    if near < H_TRANSFER_DISTANCE_A and int(numbers[nearest]) in HEAVY_ACCEPTORS:
        text += " (hydrogen transfer)"
    return text


def _write_frames(
    path: Path,
    numbers: np.ndarray,
    frames: list[dict[str, Any]],
    bonds: np.ndarray,
    reference: np.ndarray,
    replica: int,
) -> None:
    """The kept frames as extxyz with the model's energy and forces, collapse frame last."""
    import ase.io

    from mlff.data.reference import bond_lengths

    images = []
    for index, frame in enumerate(frames):
        positions = np.asarray(frame["positions_a"], dtype=np.float64)
        atoms = Atoms(numbers=numbers, positions=np.nan_to_num(positions))
        forces = np.nan_to_num(np.asarray(frame["forces_ev_per_a"], dtype=np.float64))
        energy = frame["energy_ev"] if frame["energy_ev"] is not None else float("nan")
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
        deviation = np.abs(bond_lengths(positions, bonds) - reference)
        atoms.info.update(
            replica=replica,
            step=int(frame["step"]),
            time_ps=frame["time_fs"] / FS_PER_PS,
            stage="collapse" if index == len(frames) - 1 else "stable",
            largest_bond_deviation_a=float(np.nanmax(deviation)) if np.isfinite(positions).all() else float("inf"),
        )
        images.append(atoms)
    with utils.atomic_path(path, suffix=".extxyz") as temporary:
        ase.io.write(temporary, images, format="extxyz")


def _dft_frames(
    collapses: list[dict[str, Any]],
    observed: dict[str, Any],
    numbers: np.ndarray,
    count: int,
    collapse_frame: bool = False,
) -> tuple[list[Atoms], list[tuple[int, str, float]]]:
    """The frames to label, in the order they are most useful when time runs short: per collapse,
    its replica's start frame, then its last `count` stable frames from the last one back, then
    (`collapse_frame`) the collapse frame. Owners: (position in `collapses`, "start", "stable" or
    "collapse", time ps)."""
    frames: list[Atoms] = []
    owners: list[tuple[int, str, float]] = []
    for position, entry in enumerate(collapses):
        k = entry["replica"]
        start = Atoms(numbers=numbers, positions=observed["start_positions_a"][k])
        start.info.update(replica=k, stage="start", time_ps=0.0)
        frames.append(start)
        owners.append((position, "start", 0.0))
        kept = observed["collapses"][str(k)]["frames"][:-1]
        for frame in reversed(kept[-count:]):
            atoms = Atoms(numbers=numbers, positions=frame["positions_a"])
            atoms.info.update(replica=k, stage="stable", time_ps=frame["time_fs"] / FS_PER_PS)
            frames.append(atoms)
            owners.append((position, "stable", frame["time_fs"] / FS_PER_PS))
        last = observed["collapses"][str(k)]["frames"][-1]
        if collapse_frame and np.isfinite(np.asarray(last["positions_a"], dtype=float)).all():
            atoms = Atoms(numbers=numbers, positions=last["positions_a"])
            atoms.info.update(replica=k, stage="collapse", time_ps=last["time_fs"] / FS_PER_PS)
            frames.append(atoms)
            owners.append((position, "collapse", last["time_fs"] / FS_PER_PS))
    return frames, owners


def _compare(
    entry: dict[str, Any],
    position: int,
    owners: list[tuple[int, str, float]],
    labels: list[tuple[float, np.ndarray] | None],
    model_labels: list[tuple[float, np.ndarray]],
    thresholds: VerdictThresholds,
) -> None:
    """Fill collapse entry `position` (its index in the owners) with dE (DFT and model, relative to
    its start frame), force MAE and verdict."""
    mine = [index for index, owner in enumerate(owners) if owner[0] == position]
    start = next(index for index in mine if owners[index][1] == "start")
    stable = sorted((index for index in mine if owners[index][1] == "stable"), key=lambda index: owners[index][2])
    start_dft = labels[start]
    rows = [_energy_row(index, start, owners, labels, model_labels) for index in stable]
    entry["start_force_mae_vs_dft_mev_per_a"] = (
        None if start_dft is None else float(np.abs(model_labels[start][1] - start_dft[1]).mean()) * 1000.0
    )
    entry["dft_frames"] = rows
    last = rows[-1] if rows else {}
    entry["de_model_ev"] = last.get("de_model_ev")
    entry["de_dft_ev"] = last.get("de_dft_ev")
    entry["de_dft_minus_model_ev"] = last.get("de_dft_minus_model_ev")
    maes = [row["force_mae_vs_dft_mev_per_a"] for row in rows if row["force_mae_vs_dft_mev_per_a"] is not None]
    entry["force_mae_vs_dft_mev_per_a"] = float(np.mean(maes)) if maes else None
    collapse = next((index for index in mine if owners[index][1] == "collapse"), None)
    entry["collapse_frame"] = None if collapse is None else _energy_row(collapse, start, owners, labels, model_labels)
    # The collapse frame counts where it is labelled: a hole entered within the last saved interval
    # (the frames before still normal) shows only there.
    judged = rows + ([entry["collapse_frame"]] if entry["collapse_frame"] is not None else [])
    entry["verdict"] = verdict([row["de_dft_ev"] for row in judged], [row["de_model_ev"] for row in judged], thresholds)


def _energy_row(
    index: int,
    start: int,
    owners: list[tuple[int, str, float]],
    labels: list[tuple[float, np.ndarray] | None],
    model_labels: list[tuple[float, np.ndarray]],
) -> dict[str, Any]:
    """dE of frame `index` relative to frame `start` (DFT and model, eV) and its force MAE vs DFT (meV/A)."""
    label, start_label = labels[index], labels[start]
    de_model = model_labels[index][0] - model_labels[start][0]
    de_dft = None if label is None or start_label is None else label[0] - start_label[0]
    return {
        "time_ps": owners[index][2],
        "de_model_ev": de_model,
        "de_dft_ev": de_dft,
        "de_dft_minus_model_ev": None if de_dft is None else de_dft - de_model,
        "force_mae_vs_dft_mev_per_a": None
        if label is None
        else float(np.abs(model_labels[index][1] - label[1]).mean()) * 1000.0,
    }


def plot_collapses(path: Path, observed: dict[str, Any], threshold_a: float, title: str) -> None:
    """PNG: each replica's largest bond deviation (A) against time (ps), each collapse marked and
    labelled with its bond."""
    from matplotlib.figure import Figure

    numbers = np.asarray(observed["atomic_numbers"])
    bonds = observed["bonds"]
    figure = Figure(figsize=(8, 4.5))
    axes = figure.subplots()
    for k, series in sorted(observed["series"].items(), key=lambda item: int(item[0])):
        times = np.asarray(series["times_fs"], dtype=float) / FS_PER_PS
        shown = np.minimum(
            np.array([np.inf if d is None else d for d in series["deviation_a"]], dtype=float), 2.0 * threshold_a
        )
        (line,) = axes.plot(times, shown, lw=0.8, label=f"replica {k}")
        if k in observed["collapses"]:
            i, j = bonds[series["bond"][-1]]
            axes.plot(times[-1], shown[-1], "x", color=line.get_color(), ms=9, mew=2)
            axes.annotate(
                f"{atom_label(numbers, i)}-{atom_label(numbers, j)}",
                (times[-1], shown[-1]),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=7,
                color=line.get_color(),
            )
    axes.axhline(threshold_a, color="k", ls="--", lw=1, label=f"collapse ({threshold_a} A)")
    axes.set_xlabel("time (ps)")
    axes.set_ylabel("largest bond deviation (A)")
    axes.set_ylim(0.0, 2.0 * threshold_a + 0.1)
    axes.set_title(f"{title}: largest bond deviation, collapses marked (x)")
    axes.legend(fontsize=7, ncol=3)
    figure.tight_layout()
    with utils.atomic_path(path, suffix=".png") as temporary:
        figure.savefig(temporary, dpi=110)


TABLE_HEADERS = (
    "molecule",
    "replica",
    "collapse (ps)",
    "recorded (ps)",
    "bond",
    "ref / last stable / collapse (A)",
    "event",
    "dE DFT (eV)",
    "dE model (eV)",
    "DFT - model (eV)",
    "force MAE vs DFT (meV/A)",
    "verdict",
    "DFT - model, collapse frame (eV)",
)


def table_rows(results: list[dict[str, Any]]) -> list[list[Any]]:
    """One row per collapse of each molecule's result (dE at the last stable frame)."""
    rows = []
    for result in results:
        for c in result["collapses"]:
            lengths = " / ".join(
                _number(c[key]) for key in ("reference_length_a", "length_last_stable_a", "length_collapse_a")
            )
            rows.append(
                [
                    result["molecule"],
                    c["replica"],
                    _number(c["collapse_time_ps"]),
                    _number(c.get("recorded_collapse_time_ps")),
                    c["bond_label"],
                    lengths,
                    c["event"],
                    _number(c["de_dft_ev"], ".3f"),
                    _number(c["de_model_ev"], ".3f"),
                    _number(c["de_dft_minus_model_ev"], ".3f"),
                    _number(c["force_mae_vs_dft_mev_per_a"], ".0f"),
                    c["verdict"],
                    _number((c.get("collapse_frame") or {}).get("de_dft_minus_model_ev")),
                ]
            )
    return rows


def _number(value: float | None, spec: str = ".2f") -> str:
    """A table cell: `value` formatted, "-" for None."""
    return "-" if value is None else format(value, spec)


def format_collapse_table(results: list[dict[str, Any]]) -> str:
    """The collapses as a Markdown table."""
    return utils.format_table(table_rows(results), TABLE_HEADERS, numparse=False)


def write_summary(output_dir: str | os.PathLike) -> tuple[Path, Path]:
    """`collapse.json` and `collapse.md` over every `<molecule>/collapse.json` in `output_dir`."""
    output_dir = Path(output_dir)
    found = [json.loads(p.read_text()) for p in sorted(output_dir.glob("*/collapse.json"))]
    results = [result for result in found if "collapses" in result]  # not a nested output folder's summary
    json_path = utils.write_json(output_dir / "collapse.json", {"molecules": results})
    thresholds = "; ".join(
        f"{r['molecule']}: hole > {r['thresholds']['hole_ev']:.2f} eV, "
        f"chemistry within {r['thresholds']['agree_ev']:.2f} eV"
        for r in results
    )
    lines = [
        "# Why the MD collapses",
        "",
        "Generated by `mlff bench collapse` (see docs/collapse.md). Atoms are 0-based indices; dE is relative "
        "to the replica's start frame, at the last stable frame; force MAE over the labelled last stable frames.",
        "",
        f"Verdict thresholds: {thresholds}.",
        "",
        format_collapse_table(results),
        "",
    ]
    lines += [f"![{r['molecule']}]({r['molecule']}/bond_deviation.png)" for r in results]
    md_path = utils.atomic_write_text(output_dir / "collapse.md", "\n".join(lines) + "\n")
    return json_path, md_path
