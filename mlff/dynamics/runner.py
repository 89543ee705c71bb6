"""Run MD with a potential file through any engine, watch it, and report stability and throughput.

    summary = run_md("potentials/ethanol.pt", settings=load_protocol("md/md17-stability-cpu.yaml"),
                     engine="torch", output_dir="runs/md")

Replica k starts from start structure k (cycling through them) with velocities and noise seeded
settings.seed + k. A replica's trajectory does not depend on the others in its batch, so a
protocol's replicas can run as several processes (`run_md(first_replica=...)`, one range each) and
`merge_runs` makes them one run's summary and plots. At every saved frame each live replica's
observers (bond-length stability, then h(r) while stable) see it and the trajectory and thermo
lines are written; at the first frame, then every `checkpoint_seconds` of wall time and at the end,
the files are flushed and a checkpoint is replaced atomically (not at every frame: the observers'
state grows with the run, and saving it every frame took a third of a 50 ps run's time); a replica
that collapses stops while the others go on. Further observers (`run_md(observers=[...])`,
`mlff.dynamics.observers.Observer`) see every saved state with its positions, forces and energies.
Ctrl-C (or SIGTERM through the CLI) writes every frame so far; a process killed outright keeps what
its last checkpoint holds. `resume=True` continues from the last checkpoint, recomputing what came
after it.

The potential runs in its file's dtype unless `dtype` names another (mlff's one dtype policy).
"""

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from mlff.data.reference import (
    HR_MAX_A,
    bond_lengths,
    dataset_reference,
    find_bonds,
    half_width,
    hr_density,
    molecular_bonds,
)
from mlff.dynamics.engines import ENGINES, Engine, build_engine
from mlff.dynamics.frame import Frame, add_force_spread
from mlff.dynamics.observers import Observer, RDFObserver, StabilityObserver
from mlff.dynamics.output import (
    ThermoWriter,
    TrajectoryWriter,
    load_checkpoint,
    plot_bond_deviation,
    plot_hr,
    save_checkpoint,
    write_json,
)
from mlff.dynamics.settings import MDSettings, throughput_measures
from mlff.dynamics.thermo import energy_drift_mev_per_ps_atom
from mlff.threads import apply_thread_policy
from mlff.units import FS_PER_PS, ns_per_day
from mlff.utils import dtype_name

CHECKPOINT_VERSION = 1
# The dtype run_md used for every run before it kept the file's: a resumed old run goes on in it.
LEGACY_RUN_DTYPE = "float64"


def load_structure(spec: str | None, metadata: dict[str, Any]) -> Atoms:
    """The start structure: FILE (anything ASE reads), DATASET:INDEX, or None for the potential's own."""
    return load_structures([spec] if spec else [], metadata, 1)[0]


def load_structures(specs: Sequence[str], metadata: dict[str, Any], replicas: int, first: int = 0) -> list[Atoms]:
    """One start structure per replica: replica k takes specs[k % len(specs)] (FILE or DATASET:INDEX),
    or with no specs the potential's start frame k (cycling), drawn from its test split at export;
    replicas first .. first + replicas - 1 of that sequence."""
    if not specs:
        reference = metadata.get("reference") or {}
        starts = reference.get("start_positions") or []
        if not starts:
            raise ValueError("this potential carries no start structure: pass --structure FILE or DATASET:INDEX")
        numbers = reference["atomic_numbers"]
        return [Atoms(numbers=numbers, positions=starts[k % len(starts)]) for k in range(first, first + replicas)]
    structures = [_read_structure(spec) for spec in specs]
    return [structures[k % len(structures)].copy() for k in range(first, first + replicas)]


def _read_structure(spec: str) -> Atoms:
    path, sep, index = spec.rpartition(":")
    if sep and index.isdigit() and Path(path).is_file():
        from mlff.data import read_frames

        frames = read_frames(path)
        if int(index) >= frames.num_frames:
            raise ValueError(f"{spec}: the dataset has {frames.num_frames} frames")
        numbers, positions, _, _ = frames.frame(int(index))
        return Atoms(numbers=numbers, positions=positions)
    if not Path(spec).is_file():
        raise FileNotFoundError(f"structure not found: {spec}")
    import ase.io

    return ase.io.read(spec)


def replica_observers(
    atoms: Atoms, reference: dict[str, Any], max_deviation_a: float
) -> tuple[StabilityObserver, RDFObserver]:
    """Stability and h(r) observers of one replica: the reference's bonds, lengths and h(r) when it
    describes this molecule (same atomic numbers in the same order), else bonds from the start
    structure (ASE natural cutoffs) at their start lengths, and no reference h(r)."""
    numbers = atoms.get_atomic_numbers().tolist()
    if atoms.pbc.any():
        # A liquid or crystal: the intramolecular bonds of the start, under minimum image, and h(r)
        # per element pair up to half the box width (what minimum image gets right).
        cell, pbc = np.array(atoms.cell.array), np.array(atoms.pbc)
        bonds, _ = molecular_bonds(atoms.get_atomic_numbers(), atoms.get_positions(), cell, pbc)
        lengths = bond_lengths(atoms.get_positions(), bonds, cell, pbc)
        rdf = RDFObserver(
            r_max_a=min(HR_MAX_A, half_width(cell, pbc)), atomic_numbers=atoms.get_atomic_numbers(), cell=cell, pbc=pbc
        )
        return StabilityObserver(bonds, lengths, max_deviation_a, cell=cell, pbc=pbc), rdf
    if reference.get("atomic_numbers") == numbers and reference.get("bonds") is not None:
        bonds = np.array(reference["bonds"], dtype=np.int64).reshape(-1, 2)
        lengths = np.array(reference["mean_bond_lengths"], dtype=np.float64)
        hr = reference.get("hr") or {}
        density = np.array(hr["density"]) if hr.get("density") else None
    else:
        bonds = find_bonds(atoms.get_atomic_numbers(), atoms.get_positions())
        lengths = bond_lengths(atoms.get_positions(), bonds)
        density = None
    return StabilityObserver(bonds, lengths, max_deviation_a), RDFObserver(reference_density=density)


@dataclass
class ReplicaRecord:
    """Per-replica series kept for the summary: saved-frame times (fs), total energies (eV), temperatures (K)."""

    times_fs: list[float] = field(default_factory=list)
    total_energy_ev: list[float] = field(default_factory=list)
    temperature_k: list[float] = field(default_factory=list)


@dataclass
class RunCounters:
    """Work done so far, summed over resumed processes."""

    wall_seconds: float = 0.0
    atom_steps: int = 0
    replica_steps: int = 0
    # Time inside the potential during the timed loop only: the engine's own count also holds the
    # force call that builds its first state, which falls outside `wall_seconds`.
    potential_seconds: float | None = 0.0


def run_md(
    potential_path: str | Path,
    structure: str | Sequence[str] | None = None,
    settings: MDSettings | None = None,
    output_dir: str | Path | None = None,
    device: str = "cpu",
    dtype: str | None = None,
    engine: str = "torch",
    reference_data: str | Path | None = None,
    resume: bool = False,
    progress: bool = False,
    observers: Sequence[Observer] = (),
    checkpoint_seconds: float = 30.0,
    first_replica: int = 0,
) -> dict[str, Any]:
    """MD of `settings.replicas` replicas with a potential file; returns a JSON-able summary.

    Args:
        potential_path: the potential file or a shipped potential's name ("ethanol").
        structure: FILE or DATASET:INDEX, or several (replica k takes the k-th, cycling); None: the
            potential's start frames.
        settings: the run (`load_protocol("md/....yaml")`).
        output_dir: where trajectories, thermo.csv, checkpoint.pt, summary.json and plots go.
        device: where the potential runs.
        dtype: "float32" or "float64" to run the potential in; None (default) keeps the file's dtype
            (a resumed run keeps the dtype it started with). Integration is float64 either way.
        engine: a key of `ENGINES` ("torch", "openmm", "ase").
        reference_data: a dataset of the molecule whose bonds, bond lengths, h(r) and start frames
            replace the potential's own reference statistics.
        resume: continue the run in `output_dir` from its checkpoint.
        progress: show a progress bar with live steps/s and temperature.
        observers: further observers (distinct `name`s), shown every saved state of the live
            replicas (positions, forces, energies) before collapsed replicas stop; their summaries
            go under summary["observers"][name] and their state into the run's checkpoint.
        checkpoint_seconds: wall seconds between checkpoints (and flushes of the output files);
            a run killed outright resumes from its last checkpoint and recomputes what came after.
        first_replica: this run holds replicas first_replica .. first_replica + settings.replicas - 1
            of the protocol (start structure and seed settings.seed + k of replica k), so that its
            replicas can run as several processes and be merged (`merge_runs`).

    Torch's CPU thread count follows `mlff.threads.apply_thread_policy` for the atoms of one
    potential call (`atoms_per_call`) unless the user chose one (`mlff.threads.set_user_threads`,
    OMP_NUM_THREADS / MKL_NUM_THREADS).
    """
    from mlff.export import load_potential

    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {sorted(ENGINES)}, got {engine!r}")
    if resume and output_dir is None:
        raise ValueError("resume needs the output directory of the run to continue")
    if first_replica < 0:
        raise ValueError(f"first_replica must be >= 0, got {first_replica}")
    names = [observer.name for observer in observers]
    if len(set(names)) != len(names):
        raise ValueError(f"observers need distinct names, got {names}")
    settings = settings or MDSettings()
    directory = Path(output_dir) if output_dir is not None else None
    checkpoint = load_checkpoint(directory / "checkpoint.pt") if resume else None
    if checkpoint is not None and dtype is None:
        dtype = checkpoint.get("dtype", LEGACY_RUN_DTYPE)
    potential = load_potential(potential_path, device=device, dtype=dtype)
    digest = potential_sha256(potential_path)
    reference = dataset_reference(reference_data) if reference_data else (potential.metadata.get("reference") or {})
    specs = [structure] if isinstance(structure, str) else list(structure or [])
    systems = load_structures(specs, {"reference": reference}, settings.replicas, first_replica)
    replica_watch = [replica_observers(atoms, reference, settings.max_bond_deviation_a) for atoms in systems]
    apply_thread_policy(atoms_per_call(systems, engine))
    # The engines seed replica k with seed + k: shifting the seed makes this run's replica k the
    # protocol's replica first_replica + k.
    md = build_engine(engine, potential, systems, replace(settings, seed=settings.seed + first_replica))
    records = [ReplicaRecord() for _ in systems]
    counters = RunCounters()
    if checkpoint is not None:
        _check_resumable(checkpoint, engine, settings, digest, first_replica)
        md.load_state_dict(checkpoint["engine"])
        for (stability, rdf), saved in zip(replica_watch, checkpoint["observers"]):
            stability.load_state_dict(saved["stability"])
            rdf.load_state_dict(saved["rdf"])
        saved_observers = checkpoint.get("run_observers", {})
        for observer in observers:
            if observer.name in saved_observers:
                observer.load_state_dict(saved_observers[observer.name])
        records = [ReplicaRecord(**saved) for saved in checkpoint["records"]]
        counters = RunCounters(**checkpoint["counters"])
    writers = _open_writers(directory, systems, checkpoint)
    interrupted = False
    started = time.perf_counter()
    saved_at: float | None = None
    wall_before = counters.wall_seconds
    potential_before, potential_started = counters.potential_seconds, md.potential_seconds
    bar = _progress_bar(progress, settings.steps, md.step)
    try:
        while md.step < settings.steps and md.replicas:
            chunk = min(settings.save_every, settings.steps - md.step)
            active_atoms = sum(len(systems[k]) for k in md.replicas)
            md.advance(chunk)
            counters.atom_steps += chunk * active_atoms
            counters.replica_steps += chunk * len(md.replicas)
            frame = md.frame()
            if potential.is_committee:
                add_force_spread(frame, potential, [systems[k].get_atomic_numbers() for k in frame.replicas])
            collapsed = _observe(frame, replica_watch, records)
            for observer in observers:
                observer.observe(frame)
            for writer in writers:
                writer.write(frame)
            md.drop(collapsed)
            counters.wall_seconds = wall_before + time.perf_counter() - started
            counters.potential_seconds = _potential_seconds(potential_before, potential_started, md.potential_seconds)
            finished = md.step >= settings.steps or not md.replicas
            due = saved_at is None or time.perf_counter() - saved_at >= checkpoint_seconds
            if directory is not None and (finished or due):
                for writer in writers:
                    writer.flush()
                run_state = _checkpoint(
                    md, engine, settings, potential, potential_path, digest, replica_watch, observers, records, counters
                ) | {"first_replica": first_replica}
                save_checkpoint(directory / "checkpoint.pt", run_state | _writer_state(writers))
                saved_at = time.perf_counter()
            _update_bar(bar, chunk, frame, counters, md.step)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        for writer in writers:
            writer.close()
        if bar is not None:
            bar.close()
    summary = _summary(potential_path, specs, systems, settings, engine, md, replica_watch, records, counters)
    summary["dtype"] = dtype_name(potential.dtype)
    summary["potential_sha256"] = digest
    summary["first_replica"] = first_replica
    summary["observers"] = {observer.name: observer.summary() for observer in observers}
    summary["interrupted"] = interrupted
    if directory is not None:
        write_json(directory / "summary.json", summary)
        _plots(directory, replica_watch, settings)
    if interrupted:
        raise MDInterrupted(summary)
    return summary


def atoms_per_call(systems: Sequence[Atoms], engine: str) -> int:
    """Atoms in one potential call of a run over `systems` (the thread policy's system size): the
    torch engine evaluates every replica in one batch, OpenMM and ASE one replica at a time."""
    sizes = [len(atoms) for atoms in systems]
    return sum(sizes) if engine == "torch" else max(sizes, default=0)


class MDInterrupted(KeyboardInterrupt):
    """Ctrl-C during `run_md`: everything up to the last saved frame is on disk; `summary` is the
    run so far."""

    def __init__(self, summary: dict[str, Any]) -> None:
        super().__init__("MD interrupted")
        self.summary = summary


def _observe(
    frame: Frame, observers: list[tuple[StabilityObserver, RDFObserver]], records: list[ReplicaRecord]
) -> list[int]:
    """Give each live replica's frame to its observers (h(r) only while it is stable); the replicas
    that collapsed at this frame."""
    collapsed = []
    for b, k in enumerate(frame.replicas):
        stability, rdf = observers[k]
        stability.observe(frame.step, frame.time_fs, frame.positions_a[b])
        if stability.collapsed:
            collapsed.append(k)
            continue
        rdf.observe(frame.step, frame.time_fs, frame.positions_a[b])
        record = records[k]
        record.times_fs.append(frame.time_fs)
        record.total_energy_ev.append(float(frame.potential_energy_ev[b] + frame.kinetic_energy_ev[b]))
        record.temperature_k.append(float(frame.temperature_k[b]))
    return collapsed


def _open_writers(directory: Path | None, systems: list[Atoms], checkpoint: dict[str, Any] | None) -> list[Any]:
    if directory is None:
        return []
    directory.mkdir(parents=True, exist_ok=True)
    numbers = [atoms.get_atomic_numbers().tolist() for atoms in systems]
    frames_kept = checkpoint["frames_written"] if checkpoint else None
    rows_kept = checkpoint["thermo_rows"] if checkpoint else None
    return [TrajectoryWriter(directory, numbers, frames_kept), ThermoWriter(directory / "thermo.csv", rows_kept)]


def _checkpoint(
    md: Engine,
    engine: str,
    settings: MDSettings,
    potential: Any,
    potential_path: str | Path,
    digest: str,
    observers: list[tuple[StabilityObserver, RDFObserver]],
    run_observers: Sequence[Observer],
    records: list[ReplicaRecord],
    counters: RunCounters,
) -> dict[str, Any]:
    """The run's state for `resume`, the output writers' aside (`_writer_state`)."""
    return {
        "version": CHECKPOINT_VERSION,
        "engine_name": engine,
        "settings": settings.to_dict(),
        "potential": str(potential_path),
        "potential_sha256": digest,
        "dtype": dtype_name(potential.dtype),
        "engine": md.state_dict(),
        "observers": [{"stability": s.state_dict(), "rdf": r.state_dict()} for s, r in observers],
        "run_observers": {observer.name: observer.state_dict() for observer in run_observers},
        "records": [record.__dict__ for record in records],
        "counters": counters.__dict__,
        "frames_written": [len(record.times_fs) + int(s.collapsed) for record, (s, _) in zip(records, observers)],
    }


def _writer_state(writers: list[Any]) -> dict[str, Any]:
    """How far the thermo file got (the trajectories' length follows from the records)."""
    _, thermo = writers
    return {"thermo_rows": thermo.rows}


def potential_sha256(potential_path: str | Path) -> str:
    """The SHA-256 of a potential file (a shipped potential's name resolved to its file)."""
    from mlff.export.load import resolve_potential
    from mlff.utils import sha256_of

    return sha256_of(resolve_potential(potential_path))


def can_resume(
    output_dir: str | Path,
    engine: str,
    settings: MDSettings,
    potential_path: str | Path | None = None,
    first_replica: int = 0,
) -> bool:
    """Whether `output_dir` holds a checkpoint that `run_md(..., resume=True)` can continue with
    this engine, these settings, replicas from `first_replica` and (when given) this potential file."""
    path = Path(output_dir) / "checkpoint.pt"
    if not path.is_file():
        return False
    digest = potential_sha256(potential_path) if potential_path is not None else None
    try:
        _check_resumable(load_checkpoint(path), engine, settings, digest, first_replica)
    except ValueError:
        return False
    return True


def _check_resumable(
    checkpoint: dict[str, Any],
    engine: str,
    settings: MDSettings,
    potential_sha256: str | None = None,
    first_replica: int = 0,
) -> None:
    """Refuse to continue a run with other physics: the checkpoint must be of this engine, settings
    (only `steps`, the run's length, may grow) and replicas and, when `potential_sha256` is given,
    of the same potential file (a checkpoint that does not record its file's hash counts as another file)."""
    if potential_sha256 is not None and checkpoint.get("potential_sha256") != potential_sha256:
        raise ValueError("the checkpoint is of another potential file (or records none): start a new run for this one")
    if checkpoint.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"MD checkpoint version {checkpoint.get('version')}; this mlff reads {CHECKPOINT_VERSION}")
    if checkpoint["engine_name"] != engine:
        raise ValueError(f"the checkpoint is of the {checkpoint['engine_name']!r} engine, not {engine!r}")
    if checkpoint.get("first_replica", 0) != first_replica:
        raise ValueError(
            f"the checkpoint's replicas start at {checkpoint.get('first_replica', 0)}, not {first_replica}: "
            "start a new run for these replicas"
        )
    saved = {key: value for key, value in checkpoint["settings"].items() if key != "steps"}
    current = {key: value for key, value in settings.to_dict().items() if key != "steps"}
    changed = sorted(key for key in current if saved.get(key) != current[key])
    if changed:
        raise ValueError(f"cannot resume with changed MD settings {changed}: start a new run instead")


def _progress_bar(enabled: bool, total: int, initial: int):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)


def _update_bar(bar: Any, chunk: int, frame: Frame, counters: RunCounters, step: int) -> None:
    if bar is None:
        return
    bar.update(chunk)
    temperature = float(np.nanmean(frame.temperature_k)) if len(frame.temperature_k) else float("nan")
    rate = step / counters.wall_seconds if counters.wall_seconds > 0 else 0.0
    bar.set_postfix_str(f"{rate:.0f} steps/s, T {temperature:.0f} K, {len(frame.replicas)} live")


def _potential_seconds(before: float | None, started: float | None, now: float | None) -> float | None:
    """Seconds in the potential over resumed processes, counted from the loop's start (None: not measured)."""
    if before is None or started is None or now is None:
        return None
    return before + now - started


def _summary(
    potential_path: str | Path,
    specs: list[str],
    systems: list[Atoms],
    settings: MDSettings,
    engine: str,
    md: Engine,
    observers: list[tuple[StabilityObserver, RDFObserver]],
    records: list[ReplicaRecord],
    counters: RunCounters,
) -> dict[str, Any]:
    stability = [s.summary() | r.summary() for s, r in observers]
    for entry, record, atoms in zip(stability, records, systems):
        entry["mean_temperature_k"] = float(np.mean(record.temperature_k)) if record.temperature_k else None
        entry["energy_drift_mev_per_ps_atom"] = energy_drift_mev_per_ps_atom(
            np.array(record.times_fs), np.array(record.total_energy_ev), len(atoms)
        )
    throughput = throughput_measures(md.step, counters.wall_seconds, settings.timestep_fs, 0)
    wall = counters.wall_seconds
    throughput["atom_steps_per_second"] = counters.atom_steps / wall if wall > 0 else 0.0
    throughput["ns_per_day_per_replica"] = throughput["ns_per_day"]
    throughput["ns_per_day"] = ns_per_day(counters.replica_steps / wall, settings.timestep_fs) if wall > 0 else 0.0
    seconds = counters.potential_seconds
    throughput["potential_time_fraction"] = seconds / wall if seconds is not None and wall > 0 else None
    throughput["replicas"] = len(systems)
    return {
        "potential": str(potential_path),
        "structure": specs or "the potential's start frames",
        "atoms": [len(atoms) for atoms in systems],
        "engine": engine,
        "settings": settings.to_dict(),
        "stability": _stability_summary(stability, settings),
        "throughput": throughput,
    }


def _stability_summary(per_replica: list[dict[str, Any]], settings: MDSettings) -> dict[str, Any]:
    """Over replicas: collapsed if any collapsed, stable time mean and min, the largest deviation, the
    mean h(r) MAE, the mean temperature and NVE drift, and each replica's own summary."""
    stable = [entry["stable_time_ps"] for entry in per_replica]
    hr = [entry["hr_mae"] for entry in per_replica if entry["hr_mae"] is not None]
    temperatures = [entry["mean_temperature_k"] for entry in per_replica if entry["mean_temperature_k"] is not None]
    return {
        "collapsed": any(entry["collapsed"] for entry in per_replica),
        "collapsed_replicas": [k for k, entry in enumerate(per_replica) if entry["collapsed"]],
        "replicas": len(per_replica),
        "length_ps": settings.steps * settings.timestep_fs / FS_PER_PS,
        "stable_time_ps": min(stable),
        "stable_time_ps_mean": float(np.mean(stable)),
        "largest_bond_deviation_a": max(entry["largest_bond_deviation_a"] for entry in per_replica),
        "bonds": per_replica[0]["bonds"],
        "hr_mae": float(np.mean(hr)) if hr else None,
        "mean_temperature_k": float(np.mean(temperatures)) if temperatures else None,
        "energy_drift_mev_per_ps_atom": float(np.mean([e["energy_drift_mev_per_ps_atom"] for e in per_replica])),
        "per_replica": per_replica,
    }


def _plots(directory: Path, observers: list[tuple[StabilityObserver, RDFObserver]], settings: MDSettings) -> None:
    series = {k: (s.times_fs, s.deviations_a) for k, (s, _) in enumerate(observers)}
    plot_bond_deviation(directory / "bond_deviation.png", series, settings.max_bond_deviation_a)
    rdf = observers[0][1]
    densities = {}
    if len({r.bins for _, r in observers}) == 1 and any(r.frames_seen for _, r in observers):
        pooled = sum(r.counts for _, r in observers)
        densities["MD, all replicas before collapse"] = hr_density(pooled, rdf.r_max_a)
    if rdf.reference_density is not None:
        densities["reference"] = rdf.reference_density
    plot_hr(directory / "hr.png", rdf.bin_centres_a, densities)


def merge_runs(
    part_dirs: Sequence[str | Path], output_dir: str | Path, reference_data: str | Path | None = None
) -> dict[str, Any]:
    """One run's summary.json, plots and summary from finished runs of consecutive replica ranges of
    the same protocol and potential (`run_md(first_replica=...)`, e.g. one process per CPU core).

    The replicas keep their order (part by part); stability is summarised over all of them as
    `run_md` does. Throughput: steps/s of the slowest part and ns/day summed over the parts (they
    ran side by side); each part's own under throughput["parts"].

    Raises:
        ValueError: a part is missing, unfinished or interrupted, or the parts differ in potential,
            engine or settings, or their replicas are not 0 .. R-1 without gaps or overlaps.
    """
    parts = []
    for directory in map(Path, part_dirs):
        path = directory / "summary.json"
        if not path.is_file():
            raise ValueError(f"{directory} holds no finished run (no summary.json)")
        summary = json.loads(path.read_text())
        if summary.get("interrupted", True):
            raise ValueError(f"the run in {directory} was interrupted: resume it before merging")
        parts.append((summary.get("first_replica", 0), directory, summary))
    if not parts:
        raise ValueError("no runs to merge")
    parts.sort(key=lambda part: part[0])
    first = parts[0][2]

    def shared(summary: dict[str, Any]) -> dict[str, Any]:
        settings = {key: value for key, value in summary["settings"].items() if key != "replicas"}
        return {
            "settings": settings,
            "engine": summary["engine"],
            "potential_sha256": summary["potential_sha256"],
            "structure": summary["structure"],
        }

    expected = 0
    for start, directory, summary in parts:
        if shared(summary) != shared(first):
            raise ValueError(f"the run in {directory} differs from {parts[0][1]} in potential, engine or settings")
        if start != expected:
            raise ValueError(f"the runs' replicas do not follow on: {directory} starts at {start}, expected {expected}")
        expected += summary["settings"]["replicas"]
    settings = MDSettings(**(first["settings"] | {"replicas": expected}))
    per_replica = [entry for _, _, summary in parts for entry in summary["stability"]["per_replica"]]
    throughputs = [summary["throughput"] for _, _, summary in parts]
    merged = {
        "potential": first["potential"],
        "structure": first["structure"],
        "atoms": [n for _, _, summary in parts for n in summary["atoms"]],
        "engine": first["engine"],
        "settings": settings.to_dict(),
        "stability": _stability_summary(per_replica, settings),
        "throughput": {
            "steps": min(t["steps"] for t in throughputs),
            "wall_seconds": max(t["wall_seconds"] for t in throughputs),
            "steps_per_second": min(t["steps_per_second"] for t in throughputs),
            "ns_per_day": sum(t["ns_per_day"] for t in throughputs),
            "replicas": expected,
            "parts": throughputs,
        },
        "dtype": first["dtype"],
        "potential_sha256": first["potential_sha256"],
        "first_replica": 0,
        "parts": [str(directory) for _, directory, _ in parts],
        "observers": {},
        "interrupted": False,
    }
    directory = Path(output_dir)
    write_json(directory / "summary.json", merged)
    _plots(directory, _merged_observers(parts, first["potential"], reference_data, settings), settings)
    return merged


def _merged_observers(
    parts: list[tuple[int, Path, dict[str, Any]]],
    potential_path: str,
    reference_data: str | Path | None,
    settings: MDSettings,
) -> list[tuple[StabilityObserver, RDFObserver]]:
    """Every replica's observers, rebuilt from the parts' checkpoints (for the merged plots)."""
    from mlff.export import read_metadata

    reference = (
        dataset_reference(reference_data) if reference_data else (read_metadata(potential_path).get("reference") or {})
    )
    specs = parts[0][2]["structure"]
    systems = load_structures(specs if isinstance(specs, list) else [], {"reference": reference}, settings.replicas)
    saved = [state for _, directory, _ in parts for state in load_checkpoint(directory / "checkpoint.pt")["observers"]]
    observers = [replica_observers(atoms, reference, settings.max_bond_deviation_a) for atoms in systems]
    for (stability, rdf), state in zip(observers, saved, strict=True):
        stability.load_state_dict(state["stability"])
        rdf.load_state_dict(state["rdf"])
    return observers
