"""Labelled-data generator: optimised conformers and Langevin MD frames of molecules, with energies and forces.

For each molecule (`mlff.data.molecules`: G2, structure files, SMILES, dataset frames):

1. equilibrium frames: each starting geometry (the input geometry, or RDKit ETKDG
   conformers of a SMILES) optimised on the method's surface with ase.optimize.BFGS (FIRE
   if BFGS stalls) to a largest atomic force below `fmax_ev_per_a`; a conformer that does
   not converge, or reaches a minimum already found, is dropped and counted;
2. off-equilibrium frames: for each temperature, ASE Langevin MD from one of the minima
   (conformers in turn), `equilibration_steps` discarded, then `md_frames` frames taken
   every `sample_every` steps.

A periodic structure (an extxyz with a cell and pbc: a box of liquid, a crystal) takes neither
step 1 nor MD constraints: it is not optimised (its input geometry starts every MD run and no
equilibrium frame is written), its MD has no centre-of-mass or rotation constraint (only the
initial velocities' net momentum is removed), and its frames keep the cell and pbc. The method
evaluates it periodically (tblite's xTB methods take the cell and pbc of the Atoms).

Methods (`mlff.methods.METHOD_TABLE`): "gfn2-xtb" and "gfn1-xtb" (tblite's ASE calculator;
GFN1's D3 dispersion makes a periodic box several times cheaper than GFN2's D4) and
"pbe/def2-svp" (`PySCFCalculator`, rMD17's level; `basis` overrides the basis, e.g. "sto-3g"
in tests, and the method label then reads "pbe/sto-3g").

Output contract (read by mlff's dataset readers): an extxyz file written by ase.io.write,
one frame per labelled structure, in eV and Angstrom:

    energy                  total energy, eV (ASE SinglePointCalculator)
    forces                  [n, 3] eV/Angstrom (per-atom column)
    info["equilibrium"]     bool: True for an optimised minimum, False for an MD frame
    info["method"]          str: "gfn2-xtb", "gfn1-xtb", "pbe/def2-svp" (or "pbe/<basis>")
    info["molecule"]        str: molecule name (G2 name, file stem, SMILES name or SMILES)
    info["source"]          str: "g2:NAME", "xyz:PATH#K", "smiles:SMILES", "dataset:PATH#FRAME"
    info["temperature_k"]   float: Langevin temperature, MD frames only
    info["conformer"]       int: the minimum the frame is (equilibrium) or its MD run started from
    info["fmax_ev_per_a"]   float: largest atomic force norm, equilibrium frames only
    info["dataset_frame"]   int: frame index in the dataset, `mlff data minimize` frames only
    cell, pbc               the frame's cell (Lattice) and periodic axes, periodic inputs only

Strings are kept extxyz-safe (backslashes of SMILES become "%5C"; see
`molecules.extxyz_safe`). Atom order is that of the input (never reordered).

Files: OUTPUT (the corpus), OUTPUT's stem + ".summary.json" (per-molecule counts, times and
errors) and the work directory OUTPUT's stem + ".parts/" holding config.json and one
<key>.extxyz + <key>.json per finished molecule, each written atomically. A rerun with the
same settings skips finished molecules (failed ones are retried) and rebuilds the corpus,
also atomically, from the parts in input order; molecules can be added to a rerun. A molecule
still running keeps each MD run's state in <key>.md<run>.npz (every minute: `md_frames`), so a
rerun continues a long MD (a periodic box's, hours) where it stopped; they go when it finishes.
Molecules run in worker processes (spawned, `workers` at a time); a molecule that raises,
or whose worker dies, is reported in the summary with its error and left out.

With `scheduler` (a dask.distributed scheduler address, `mlff data generate --scheduler ADDRESS`)
the molecules run as tasks on that Dask cluster instead (`compute_molecule`): each returns its
frames as extxyz text to this process, which writes the parts, the corpus and the summary, so
the workers need no shared filesystem (only mlff and the method's package installed).

An OUTPUT ending in .h5 / .hdf5 is written as a packed corpus (`mlff.data.packed`) from the parts.
"""

import concurrent.futures
import dataclasses
import json
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.calculators.singlepoint import SinglePointCalculator

from mlff import utils
from mlff.data.molecules import MoleculeSpec, embed_smiles, is_closed_shell
from mlff.data.optional import import_optional, require
from mlff.methods import METHOD_TABLE, get_method
from mlff.methods import METHODS as METHODS  # re-exported: label, learn and bench read it from here
from mlff.utils import atomic_write, atomic_write_text, write_json

# Views of the one method table (mlff.methods): the package each method's calculator needs (the
# `generate` extra holds them all), and the pyscf methods' (functional, basis).
METHOD_PACKAGES: dict[str, str] = {name: method.package for name, method in METHOD_TABLE.items()}
PYSCF_METHODS: dict[str, tuple[str, str]] = {
    name: (method.theory, method.basis)
    for name, method in METHOD_TABLE.items()
    if method.package == "pyscf" and method.basis is not None
}
# Settings that do not change the labels: a rerun may change them and still resume.
_RUN_ONLY_FIELDS: frozenset[str] = frozenset({"workers", "threads_per_worker"})
# tblite's SCF thresholds scale with `accuracy`: at its default 1.0, forces depend on the SCF guess by ~2e-4 eV/A
# (a warm-started MD step vs a fresh call); 0.01 brings that below 1e-6 eV/A for ~20% more time per call.
XTB_ACCURACY: float = 0.01
_THREAD_VARIABLES: tuple[str, ...] = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass
class GenerateConfig:
    """What to compute for every molecule.

    Attributes:
        method: one of METHODS.
        basis: basis set overriding the pyscf method's own (None keeps it); not for the xTB methods.
        conformers: ETKDG conformers embedded per SMILES (geometry inputs use their one geometry).
        temperatures_k: Langevin temperatures, K; one MD run each.
        md_frames: frames kept per temperature.
        timestep_fs: MD time step, fs.
        friction_per_fs: Langevin friction, 1/fs.
        equilibration_steps: MD steps discarded at the start of each run.
        sample_every: MD steps between kept frames.
        fmax_ev_per_a: optimisation threshold on the largest atomic force norm, eV/Angstrom.
        max_opt_steps: BFGS steps, then as many FIRE steps, before a conformer counts as unconverged.
        seed: base random seed (each molecule derives its own from it and its source).
        workers: molecules computed at once, each in its own process.
        threads_per_worker: OpenMP/BLAS threads of each worker process.
    """

    method: str = "gfn2-xtb"
    basis: str | None = None
    conformers: int = 3
    temperatures_k: tuple[float, ...] = (300.0, 500.0, 800.0)
    md_frames: int = 20
    timestep_fs: float = 0.5
    friction_per_fs: float = 0.02
    equilibration_steps: int = 200
    sample_every: int = 20
    fmax_ev_per_a: float = 1e-3
    max_opt_steps: int = 1000
    seed: int = 0
    workers: int = 1
    threads_per_worker: int = 1

    def __post_init__(self) -> None:
        self.temperatures_k = tuple(float(t) for t in self.temperatures_k)
        get_method(self.method)
        if self.basis is not None and self.method not in PYSCF_METHODS:
            raise ValueError(f"--basis applies to the pyscf methods ({', '.join(PYSCF_METHODS)}), not {self.method}")
        positive = {
            "conformers": self.conformers,
            "timestep_fs": self.timestep_fs,
            "sample_every": self.sample_every,
            "fmax_ev_per_a": self.fmax_ev_per_a,
            "max_opt_steps": self.max_opt_steps,
            "workers": self.workers,
            "threads_per_worker": self.threads_per_worker,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        for name, value in {"md_frames": self.md_frames, "equilibration_steps": self.equilibration_steps}.items():
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if self.friction_per_fs < 0:
            raise ValueError(f"friction_per_fs must be >= 0, got {self.friction_per_fs}")
        if any(t <= 0 for t in self.temperatures_k):
            raise ValueError(f"temperatures must be positive (K), got {list(self.temperatures_k)}")

    @property
    def method_label(self) -> str:
        """The `method` written to every frame: the method, with the basis override if any."""
        if self.basis is None:
            return self.method
        return f"{PYSCF_METHODS[self.method][0]}/{self.basis}"

    def label_settings(self) -> dict[str, Any]:
        """The settings that determine the labels (JSON-able), recorded in the work directory."""
        settings = {k: v for k, v in dataclasses.asdict(self).items() if k not in _RUN_ONLY_FIELDS}
        return json.loads(json.dumps(settings))


@dataclass
class MoleculeResult:
    """What happened to one molecule (a row of the summary).

    Attributes:
        unconverged_conformers: starting geometries whose optimisation did not reach fmax (dropped).
        duplicate_conformers: optimised conformers that reached a minimum already found (dropped).
        md_frames: frames kept per temperature, keyed by the temperature in K as a string.
        seconds: wall time of the molecule's computation (that of the original run if resumed).
        resumed: True if taken from a finished part file of an earlier run.
    """

    name: str
    source: str
    key: str
    status: str = "failed"
    atoms: int = 0
    formula: str = ""
    equilibrium_frames: int = 0
    unconverged_conformers: int = 0
    duplicate_conformers: int = 0
    md_frames: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    error: str = ""
    resumed: bool = False

    @property
    def total_frames(self) -> int:
        return self.equilibrium_frames + sum(self.md_frames.values())

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "total_frames": self.total_frames}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MoleculeResult":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class GenerateReport:
    """The corpus written, its summary file and the per-molecule results in input order."""

    output: Path
    summary_path: Path
    results: list[MoleculeResult]

    @property
    def failed(self) -> list[MoleculeResult]:
        return [r for r in self.results if r.status != "ok"]


def make_calculator(method: str, basis: str | None = None) -> Calculator:
    """A fresh ASE calculator for `method` (eV, eV/Angstrom); imports tblite or pyscf here."""
    spec = get_method(method)
    if spec.package == "tblite":
        tblite_ase = import_optional("tblite.ase", f"the {method} method")
        return tblite_ase.TBLite(method=spec.theory, accuracy=XTB_ACCURACY, verbosity=0)
    if spec.package == "pyscf":
        from mlff.data.pyscf_calc import PySCFCalculator, PySCFSettings

        return PySCFCalculator(PySCFSettings(xc=spec.theory, basis=basis or spec.basis))
    raise ValueError(f"method {method!r}: no calculator for package {spec.package!r}")


def max_force(forces: np.ndarray) -> float:
    """Largest atomic force norm of forces [n, 3] (ASE's fmax), same unit as the forces."""
    return float(np.sqrt((np.asarray(forces) ** 2).sum(axis=1)).max())


def optimise(atoms: Atoms, fmax_ev_per_a: float, max_steps: int) -> bool:
    """Relax `atoms` (with its calculator) in place: BFGS, then FIRE if BFGS did not converge."""
    from ase.optimize import BFGS, FIRE

    if BFGS(atoms, logfile=None).run(fmax=fmax_ev_per_a, steps=max_steps):
        return True
    # BFGS can stall on a flat or noisy surface where FIRE's damped dynamics still get down.
    FIRE(atoms, logfile=None).run(fmax=fmax_ev_per_a, steps=max_steps)
    return max_force(atoms.get_forces()) < fmax_ev_per_a


def same_minimum(a: Atoms, b: Atoms, distance_tolerance_a: float = 0.05, energy_tolerance_ev: float = 1e-3) -> bool:
    """Whether two optimised geometries of one molecule are the same minimum: energies within
    `energy_tolerance_ev` and sorted interatomic distances within `distance_tolerance_a` Angstrom.

    Sorted distances ignore atom labels and handedness: a rotated methyl group (its hydrogens
    permuted) or a mirror image is the same minimum, with the same energies.
    """
    if abs(a.get_potential_energy() - b.get_potential_energy()) > energy_tolerance_ev:
        return False
    upper = np.triu_indices(len(a), k=1)
    distances_a = np.sort(a.get_all_distances()[upper])
    distances_b = np.sort(b.get_all_distances()[upper])
    return bool(np.abs(distances_a - distances_b).max(initial=0.0) < distance_tolerance_a)


def labelled_frame(atoms: Atoms, info: dict[str, Any]) -> Atoms:
    """A bare copy of `atoms` (numbers, positions, cell, pbc) carrying its energy and forces and `info`."""
    frame = Atoms(numbers=atoms.get_atomic_numbers(), positions=atoms.get_positions(), cell=atoms.cell, pbc=atoms.pbc)
    # Raw forces: a constraint (FixCom in MD) would otherwise adjust the labels.
    forces = atoms.get_forces(apply_constraint=False)
    frame.calc = SinglePointCalculator(frame, energy=atoms.get_potential_energy(), forces=forces)
    frame.info.update(info)
    return frame


# An MD run with a checkpoint saves its state at most this often (wall seconds), and when it ends.
MD_CHECKPOINT_SECONDS: float = 60.0


def md_chunks(config: GenerateConfig) -> list[tuple[int, bool]]:
    """The MD run as (steps, sample a frame after them) chunks: equilibration in pieces of `sample_every`."""
    equilibration = [
        (min(config.sample_every, config.equilibration_steps - start), False)
        for start in range(0, config.equilibration_steps, config.sample_every)
    ]
    return equilibration + [(config.sample_every, True)] * config.md_frames


def save_md_checkpoint(
    path: Path, atoms: Atoms, frames: list[Atoms], chunks_done: int, temperature_k: float, rng: np.random.Generator
) -> None:
    """The state of an MD run (positions, momenta, random generator, frames so far), written atomically."""
    arrays = {
        "positions": atoms.get_positions(),
        "momenta": atoms.get_momenta(),
        "frame_positions": np.array([frame.positions for frame in frames]).reshape(len(frames), len(atoms), 3),
        "frame_forces": np.array([frame.get_forces() for frame in frames]).reshape(len(frames), len(atoms), 3),
        "frame_energies": np.array([frame.get_potential_energy() for frame in frames], dtype=np.float64),
        "state": np.array(json.dumps({"chunks_done": chunks_done, "temperature_k": temperature_k})),
        "rng": np.array(json.dumps(rng.bit_generator.state)),
    }
    with utils.atomic_path(path, suffix=".npz") as temporary:
        np.savez(temporary, **arrays)


def load_md_checkpoint(
    path: Path, atoms: Atoms, temperature_k: float, rng: np.random.Generator
) -> tuple[list[Atoms], int] | None:
    """Restore an MD run into `atoms` and `rng` from `path`: its frames and the chunks done (None: no checkpoint).

    Raises ValueError for a checkpoint of another run (other atoms or temperature) or an unreadable one.
    """
    if not path.is_file():
        return None
    try:
        with np.load(path) as saved:
            arrays = {key: saved[key] for key in saved.files}
        state = json.loads(str(arrays["state"]))
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(f"MD checkpoint {path} cannot be read ({error}); remove it to redo this MD run") from None
    if arrays["positions"].shape != (len(atoms), 3) or state["temperature_k"] != temperature_k:
        raise ValueError(f"MD checkpoint {path} is of another run (atoms or temperature); remove it to redo the run")
    atoms.set_positions(arrays["positions"], apply_constraint=False)
    atoms.set_momenta(arrays["momenta"], apply_constraint=False)
    rng.bit_generator.state = json.loads(str(arrays["rng"]))
    frames = []
    for positions, forces, energy in zip(
        arrays["frame_positions"], arrays["frame_forces"], arrays["frame_energies"], strict=True
    ):
        frame = Atoms(numbers=atoms.get_atomic_numbers(), positions=positions, cell=atoms.cell, pbc=atoms.pbc)
        frame.calc = SinglePointCalculator(frame, energy=float(energy), forces=forces)
        frames.append(frame)
    return frames, int(state["chunks_done"])


def md_frames(
    start: Atoms,
    calculator: Calculator,
    temperature_k: float,
    config: GenerateConfig,
    rng: np.random.Generator,
    checkpoint: Path | None = None,
) -> list[Atoms]:
    """`config.md_frames` Langevin frames at `temperature_k` from `start` (not modified), without labels' info.

    A molecule keeps its centre of mass (FixCom) and starts without rotation; a periodic `start`
    (any pbc) runs unconstrained in its cell, since neither constraint means anything for a box.
    With `checkpoint` (a file in a local work directory) the run saves its state there every
    MD_CHECKPOINT_SECONDS and at its end, and continues from it when it exists: a run of a box
    that takes hours survives being killed, and the frames equal an uninterrupted run's (the same
    random numbers; a calculator's SCF starts afresh, within its convergence threshold).
    """
    from ase import units
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, ZeroRotation

    atoms = Atoms(numbers=start.get_atomic_numbers(), positions=start.get_positions(), cell=start.cell, pbc=start.pbc)
    atoms.calc = calculator
    periodic = bool(atoms.pbc.any())
    if not periodic:
        # ASE's recommended replacement of Langevin's deprecated fixcm: the centre of mass stays put.
        atoms.set_constraint(FixCom())
    restored = load_md_checkpoint(checkpoint, atoms, temperature_k, rng) if checkpoint is not None else None
    frames, chunks_done = restored if restored is not None else ([], 0)
    if restored is None:
        MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_k, rng=rng)
        Stationary(atoms)
        if not periodic:
            # A linear molecule has a zero moment of inertia; ASE selects it away after dividing.
            with np.errstate(divide="ignore", invalid="ignore"):
                ZeroRotation(atoms)
    dynamics = Langevin(
        atoms,
        timestep=config.timestep_fs * units.fs,
        temperature_K=temperature_k,
        friction=config.friction_per_fs / units.fs,
        fixcm=False,
        rng=rng,
        logfile=None,
    )
    chunks = md_chunks(config)
    saved_at = time.monotonic()
    for index in range(chunks_done, len(chunks)):
        steps, sample = chunks[index]
        dynamics.run(steps)
        if sample:
            frames.append(labelled_frame(atoms, {}))
        if checkpoint is not None and (index + 1 == len(chunks) or time.monotonic() - saved_at > MD_CHECKPOINT_SECONDS):
            save_md_checkpoint(checkpoint, atoms, frames, index + 1, temperature_k, rng)
            saved_at = time.monotonic()
    return frames


def starting_geometries(spec: MoleculeSpec, config: GenerateConfig) -> tuple[np.ndarray, list[np.ndarray]]:
    """Atomic numbers [n] and starting geometries ([n, 3] Angstrom each) of a molecule."""
    if spec.smiles is not None:
        return embed_smiles(spec.smiles, config.conformers, spec.seed(config.seed))
    if spec.numbers is None or not spec.geometries:
        raise ValueError(f"molecule {spec.name} ({spec.source}) has neither a geometry nor a SMILES")
    return np.asarray(spec.numbers, dtype=np.int64), [np.asarray(g, dtype=np.float64) for g in spec.geometries]


def md_checkpoint_path(work_dir: Path, key: str, run: int) -> Path:
    """The checkpoint file of MD run `run` of the molecule `key` in a work directory."""
    return work_dir / f"{key}.md{run}.npz"


def label_molecule(
    spec: MoleculeSpec, config: GenerateConfig, calculator: Calculator, work_dir: Path | None = None
) -> tuple[list[Atoms], MoleculeResult]:
    """All frames of one molecule (equilibrium first, then MD by temperature) and their counts.

    With `work_dir` each MD run checkpoints there (`md_frames`) and resumes from it.

    Raises ValueError (open shell, bad SMILES) or RuntimeError (no conformer converged);
    calculator errors propagate.
    """
    numbers, geometries = starting_geometries(spec, config)
    if not is_closed_shell(numbers, spec.charge):
        raise ValueError(f"{int(numbers.sum()) - spec.charge} electrons: only closed-shell molecules are labelled")
    base_info: dict[str, Any] = {
        "method": config.method_label,
        "molecule": spec.name,
        "source": spec.source,
        **spec.info,
    }
    result = MoleculeResult(name=spec.name, source=spec.source, key=spec.key, atoms=len(numbers))
    frames: list[Atoms] = []
    minima: list[tuple[int, Atoms]] = []
    for conformer, positions in enumerate(geometries):
        atoms = Atoms(numbers=numbers, positions=positions, cell=spec.cell, pbc=spec.pbc)
        result.formula = atoms.get_chemical_formula()
        atoms.calc = calculator
        if spec.periodic:
            # A box of liquid has no minimum worth sampling: its MD starts from the input geometry.
            minima.append((conformer, atoms))
            continue
        if not optimise(atoms, config.fmax_ev_per_a, config.max_opt_steps):
            result.unconverged_conformers += 1
            continue
        if any(same_minimum(atoms, other) for _, other in minima):
            result.duplicate_conformers += 1
            continue
        minima.append((conformer, atoms))
        info = {"equilibrium": True, "conformer": conformer, "fmax_ev_per_a": max_force(atoms.get_forces())}
        frames.append(labelled_frame(atoms, {**base_info, **info}))
    if not minima:
        raise RuntimeError(
            f"no conformer converged to fmax {config.fmax_ev_per_a} eV/A in {config.max_opt_steps} BFGS + FIRE steps"
        )
    result.equilibrium_frames = len(frames)
    rng = np.random.default_rng(spec.seed(config.seed))
    for run, temperature in enumerate(config.temperatures_k):
        conformer, start = minima[run % len(minima)]
        checkpoint = md_checkpoint_path(work_dir, spec.key, run) if work_dir is not None else None
        sampled = md_frames(start, calculator, temperature, config, rng, checkpoint)
        for frame in sampled:
            frame.info.update({**base_info, "equilibrium": False, "temperature_k": temperature, "conformer": conformer})
        frames.extend(sampled)
        key = f"{temperature:g}"
        result.md_frames[key] = result.md_frames.get(key, 0) + len(sampled)
    result.status = "ok"
    return frames, result


def _set_worker_threads(threads: int, method: str) -> None:
    """Thread counts inside a worker: env for OpenMP libraries loaded later (tblite), pyscf's own setting."""
    for name in _THREAD_VARIABLES:
        os.environ[name] = str(threads)
    if method in PYSCF_METHODS:
        import_optional("pyscf.lib", "the pyscf methods").num_threads(threads)


def compute_molecule(
    spec: MoleculeSpec, config: GenerateConfig, work_dir: Path | None = None
) -> tuple[MoleculeResult, str | None]:
    """Task entry (a Dask worker or a pool process): label one molecule where it runs.

    Returns its result and its frames as extxyz text (None when it failed: any exception becomes
    a failed result). Only the MD checkpoints are written, and only with `work_dir` (the local
    pool's work directory; a Dask task gets None, so the caller may be on another machine).
    """
    import io

    import ase.io

    start = time.perf_counter()
    try:
        _set_worker_threads(config.threads_per_worker, config.method)
        frames, result = label_molecule(spec, config, make_calculator(config.method, config.basis), work_dir)
        result.seconds = round(time.perf_counter() - start, 3)
        buffer = io.StringIO()
        ase.io.write(buffer, list(frames), format="extxyz")
        return result, buffer.getvalue()
    except Exception as error:
        return _failed(spec, f"{type(error).__name__}: {error}", time.perf_counter() - start), None


def _failed(spec: MoleculeSpec, error: str, seconds: float = 0.0) -> MoleculeResult:
    return MoleculeResult(name=spec.name, source=spec.source, key=spec.key, error=error, seconds=round(seconds, 3))


def save_molecule(parts_dir: Path, key: str, result: MoleculeResult, text: str) -> None:
    """A finished molecule's part files: its frames, then the json "finished" marker (each atomically)."""
    atomic_write_text(parts_dir / f"{key}.extxyz", text)
    # The json is the "finished" marker: written last, so a part without it is redone.
    write_json(parts_dir / f"{key}.json", result.to_dict())
    for checkpoint in parts_dir.glob(f"{key}.md*.npz"):
        checkpoint.unlink()


def run_molecule(spec: MoleculeSpec, config: GenerateConfig, parts_dir: Path) -> MoleculeResult:
    """Worker entry: label one molecule (its MD checkpointed in `parts_dir`), write its part files.

    Any exception becomes a failed result.
    """
    result, text = compute_molecule(spec, config, parts_dir)
    if text is None:
        return result
    try:
        save_molecule(parts_dir, spec.key, result, text)
    except Exception as error:
        return _failed(spec, f"{type(error).__name__}: {error}", result.seconds)
    return result


def dask_client(scheduler: str):
    """A dask.distributed Client of the scheduler at `scheduler` (an address such as tcp://host:8786).

    Raises:
        MissingDependencyError: dask.distributed is not installed (the `scale` extra).
    """
    from mlff.data.optional import MissingDependencyError

    try:
        from distributed import Client
    except ImportError as error:
        raise MissingDependencyError(
            f"--scheduler needs the package 'distributed' ({error}); install it with: pip install 'mlff[scale]'"
        ) from error
    try:
        return Client(scheduler, timeout="60s")
    except (OSError, TimeoutError) as error:
        raise ValueError(f"--scheduler {scheduler}: no Dask scheduler answers there ({error})") from None


def _run_dask(
    specs: Sequence[MoleculeSpec],
    config: GenerateConfig,
    parts_dir: Path,
    done: Callable[[MoleculeResult], None],
    scheduler: str,
) -> None:
    """Run `specs` as tasks on a Dask cluster; this process writes each molecule's parts as it returns.

    A task whose worker dies is retried by Dask (its `allowed-failures`), then reported as failed.
    """
    from distributed import as_completed

    with dask_client(scheduler) as client:
        futures = {client.submit(compute_molecule, spec, config, pure=False): spec for spec in specs}
        for future in as_completed(futures):
            spec = futures[future]
            try:
                result, text = future.result()
            except Exception as error:
                result, text = _failed(spec, f"Dask task failed: {type(error).__name__}: {error}"), None
            if text is not None:
                save_molecule(parts_dir, spec.key, result, text)
            done(result)


@contextmanager
def _child_thread_environment(threads: int) -> Iterator[None]:
    """Thread variables set while worker processes are spawned (they inherit the environment).

    numpy's OpenBLAS reads OPENBLAS_NUM_THREADS when it loads, which in a spawned worker is
    before any of our code runs; the parent's own libraries are already loaded, so this
    changes nothing for it, and the previous values are restored afterwards.
    """
    saved = {name: os.environ.get(name) for name in _THREAD_VARIABLES}
    os.environ.update({name: str(threads) for name in _THREAD_VARIABLES})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _run_pool(
    specs: Sequence[MoleculeSpec],
    config: GenerateConfig,
    parts_dir: Path,
    workers: int,
    done: Callable[[MoleculeResult], None],
) -> list[MoleculeSpec]:
    """Run `specs` in a pool of `workers` spawned processes, calling done(result) for each; the specs lost
    to a dead worker process (BrokenProcessPool), in input order."""
    lost: list[MoleculeSpec] = []
    context = multiprocessing.get_context("spawn")
    with _child_thread_environment(config.threads_per_worker):
        executor = concurrent.futures.ProcessPoolExecutor(max_workers=min(workers, len(specs)), mp_context=context)
        try:
            futures = {executor.submit(run_molecule, spec, config, parts_dir): spec for spec in specs}
            for future in concurrent.futures.as_completed(futures):
                try:
                    done(future.result())
                except BrokenProcessPool:
                    lost.append(futures[future])
        except BaseException:
            # Ctrl-C: do not wait for running molecules; finished ones are in the work directory.
            executor.shutdown(wait=False, cancel_futures=True)
            raise
        executor.shutdown(wait=True)
    order = {spec.key: k for k, spec in enumerate(specs)}
    return sorted(lost, key=lambda spec: order[spec.key])


def _run_all(
    specs: Sequence[MoleculeSpec],
    config: GenerateConfig,
    parts_dir: Path,
    done: Callable[[MoleculeResult], None],
    scheduler: str | None = None,
) -> None:
    """Run every spec; a worker death is retried, then pinned on its molecule by running it alone.

    With `scheduler`, on that Dask cluster instead of a local process pool.
    """
    if scheduler is not None:
        _run_dask(specs, config, parts_dir, done, scheduler)
        return
    todo = list(specs)
    # A dead worker takes the molecules beside it down too: they get a second parallel pass ...
    for _ in range(2):
        if not todo:
            return
        todo = _run_pool(todo, config, parts_dir, config.workers, done)
    # ... and what dies twice runs alone, so a crash is charged to the molecule that caused it.
    for spec in todo:
        if _run_pool([spec], config, parts_dir, 1, done):
            done(
                MoleculeResult(
                    name=spec.name,
                    source=spec.source,
                    key=spec.key,
                    error="worker process died (crash in a native library?) while labelling this molecule",
                )
            )


def work_directory(output: Path) -> Path:
    """The work directory of `output`: its stem + ".parts" beside it."""
    return output.parent / f"{output.stem}.parts"


def summary_path(output: Path) -> Path:
    """The summary JSON of `output`: its stem + ".summary.json" beside it."""
    return output.parent / f"{output.stem}.summary.json"


def _prepare_work_directory(parts_dir: Path, config: GenerateConfig) -> None:
    """Create the work directory, or check that an existing one was made with the same label settings."""
    parts_dir.mkdir(parents=True, exist_ok=True)
    config_path = parts_dir / "config.json"
    settings = config.label_settings()
    if config_path.is_file():
        recorded = json.loads(config_path.read_text())
        changed = sorted(k for k in set(settings) | set(recorded) if settings.get(k) != recorded.get(k))
        if changed:
            details = ", ".join(f"{k}: {recorded.get(k)!r} -> {settings.get(k)!r}" for k in changed)
            raise ValueError(
                f"work directory {parts_dir} holds molecules made with other settings ({details}); "
                "remove it to start afresh or write to another output"
            )
        return
    write_json(config_path, settings)


def _finished(spec: MoleculeSpec, parts_dir: Path) -> MoleculeResult | None:
    """The result of an earlier run if both of the molecule's part files exist and it succeeded."""
    marker = parts_dir / f"{spec.key}.json"
    if not marker.is_file() or not (parts_dir / f"{spec.key}.extxyz").is_file():
        return None
    try:
        result = MoleculeResult.from_dict(json.loads(marker.read_text()))
    except (ValueError, TypeError):
        return None
    if result.status != "ok" or result.source != spec.source:
        return None
    result.resumed = True
    return result


def _concatenate(output: Path, parts: Sequence[Path]) -> None:
    """The part files one after another in `output`, written all or nothing."""

    def write(target: IO[bytes]) -> None:
        for part in parts:
            with part.open("rb") as source:
                shutil.copyfileobj(source, target)

    atomic_write(output, write)


def _unique(specs: Sequence[MoleculeSpec], report: Callable[[str], None]) -> list[MoleculeSpec]:
    seen: set[str] = set()
    unique = []
    for spec in specs:
        if spec.source in seen:
            report(f"skipping a repeat of {spec.source}")
            continue
        seen.add(spec.source)
        unique.append(spec)
    return unique


def generate(
    specs: Sequence[MoleculeSpec],
    config: GenerateConfig,
    output: str | Path,
    progress: bool = True,
    report: Callable[[str], None] = print,
    scheduler: str | None = None,
) -> GenerateReport:
    """Label `specs` with `config`, resuming from the work directory, and write the corpus and summary.

    Args:
        scheduler: a Dask scheduler address to run the molecules on (None: the local process pool).

    Returns the report; failed molecules are in it (and in the summary) with their errors.
    """
    from tqdm import tqdm

    output = Path(output)
    specs = _unique(specs, report)
    if not specs:
        raise ValueError("no molecules to label")
    require(METHOD_PACKAGES[config.method], f"the {config.method} method")
    if any(spec.smiles is not None for spec in specs):
        require("rdkit", "building molecules from SMILES")
    output.parent.mkdir(parents=True, exist_ok=True)
    parts_dir = work_directory(output)
    _prepare_work_directory(parts_dir, config)
    results: dict[str, MoleculeResult] = {}
    for spec in specs:
        finished = _finished(spec, parts_dir)
        if finished is not None:
            results[spec.key] = finished
    todo = [spec for spec in specs if spec.key not in results]
    if results:
        report(f"resuming: {len(results)} of {len(specs)} molecules already finished in {parts_dir}")
    with tqdm(total=len(specs), initial=len(results), desc="molecules", unit="mol", disable=not progress) as bar:

        def done(result: MoleculeResult) -> None:
            results[result.key] = result
            bar.set_postfix_str(f"{result.name} {result.status}", refresh=False)
            bar.update(1)

        if todo:
            _run_all(todo, config, parts_dir, done, scheduler)
    ordered = [results[spec.key] for spec in specs]
    parts = [parts_dir / f"{r.key}.extxyz" for r in ordered if r.status == "ok"]
    if output.suffix.lower() in (".h5", ".hdf5") and parts:
        from mlff.data.packed import pack

        pack(parts, output)
    else:
        _concatenate(output, parts)
    summary = summary_path(output)
    write_json(summary, summary_document(output, config, ordered))
    return GenerateReport(output=output, summary_path=summary, results=ordered)


def summary_document(output: Path, config: GenerateConfig, results: Sequence[MoleculeResult]) -> dict[str, Any]:
    """The summary JSON: settings, totals and one entry per molecule."""
    ok = [r for r in results if r.status == "ok"]
    return {
        "output": str(output),
        "method": config.method_label,
        "settings": config.label_settings(),
        "totals": {
            "molecules": len(results),
            "ok": len(ok),
            "failed": len(results) - len(ok),
            "frames": sum(r.total_frames for r in ok),
            "equilibrium_frames": sum(r.equilibrium_frames for r in ok),
            "md_frames": sum(sum(r.md_frames.values()) for r in ok),
            "seconds": round(sum(r.seconds for r in results), 3),
        },
        "molecules": [r.to_dict() for r in results],
    }


def format_table(results: Sequence[MoleculeResult], temperatures_k: Sequence[float]) -> str:
    """A plain-text table of per-molecule counts: equilibrium frames, MD frames per temperature, time (s), status."""
    temperature_keys = [f"{t:g}" for t in temperatures_k]
    header = ["molecule", "atoms", "eq", *[f"md@{t}K" for t in temperature_keys], "frames", "s", "status"]
    rows = []
    for r in results:
        status = "ok (resumed)" if r.resumed else r.status
        if r.status != "ok":
            status = f"FAILED: {r.error}"
        counts = [r.md_frames.get(t, 0) for t in temperature_keys]
        rows.append([r.name, r.atoms, r.equilibrium_frames, *counts, r.total_frames, r.seconds, status])
    return utils.format_table(rows, header, fmt="plain", floatfmt=".1f")
