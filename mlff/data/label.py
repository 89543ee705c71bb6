"""Label given frames: single-point energies and forces with GFN2-xTB, GFN1-xTB or PBE/def2-SVP (`mlff data label`).

Each frame of FRAMES (any file ase.io reads: extxyz, xyz, ...; e.g. the candidates of
`mlff.dynamics.selection.SelectionObserver`) is computed once with the calculator of
`mlff.data.generate.make_calculator`, in `workers` spawned processes (each `threads_per_worker`
threads), and appended to OUTPUT as soon as it is done: one extxyz frame per write, flushed and
fsync'd, so a kill loses at most the frames in flight. Frames are written in the order they finish.

OUTPUT follows the `mlff data generate` extxyz contract (energy eV, forces eV/A, info `equilibrium`
False, `method`, `molecule` (the chemical formula), `source` "label:PATH#INDEX") plus `frame_index`
(the index in FRAMES), `positions_sha256` (of the frame's atomic numbers and float64 positions)
and the input frame's own scalar info entries (e.g. a selection's `reason`, `step`).

Resumable: a rerun reads OUTPUT and skips every frame whose (frame_index, positions_sha256) is
there; a last frame cut short by a kill is dropped (the file is rewritten without it, atomically).
A frame whose calculation fails is reported and left out, and retried by the next run. OUTPUT
must hold labels of the same method: another method's labels are refused.

With `scheduler` (a dask.distributed scheduler address, `mlff data label --scheduler ADDRESS`) the
frames are computed as tasks on that Dask cluster (`dask_single_point`); their energies and forces
return to this process, which appends them as above (the workers share no filesystem with it).
"""

import concurrent.futures
import hashlib
import io
import multiprocessing
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.calculators.singlepoint import SinglePointCalculator

from mlff.data.generate import (
    PYSCF_METHODS,
    _child_thread_environment,
    _set_worker_threads,
    make_calculator,
)
from mlff.methods import get_method

# The info keys this module writes; an input frame's own entries of these names are not copied.
_OWN_KEYS = ("equilibrium", "method", "molecule", "source", "frame_index", "positions_sha256")


@dataclass
class LabelReport:
    """What a `label_frames` call did: frames labelled now, skipped (labelled before), failed (index -> error)."""

    output: Path
    total: int
    labelled: int = 0
    skipped: int = 0
    failed: dict[int, str] = field(default_factory=dict)
    seconds: float = 0.0


def positions_hash(atomic_numbers: np.ndarray, positions: np.ndarray) -> str:
    """SHA-256 (hex) of a frame's atomic numbers (int64) and positions (float64, Angstrom)."""
    digest = hashlib.sha256(np.ascontiguousarray(atomic_numbers, dtype=np.int64).tobytes())
    digest.update(np.ascontiguousarray(positions, dtype=np.float64).tobytes())
    return digest.hexdigest()


def method_label(method: str, basis: str | None) -> str:
    """The method as written in `info["method"]`: the method's name (one of METHODS) or "pbe/<basis>"."""
    if basis and method in PYSCF_METHODS:
        return f"{PYSCF_METHODS[method][0]}/{basis}"
    return method


def read_labelled(output: Path) -> list[Atoms]:
    """The complete frames of a (possibly cut short) OUTPUT; rewrites it without a damaged tail."""
    import ase.io

    if not output.is_file() or output.stat().st_size == 0:
        return []
    text = output.read_text()
    lines = text.splitlines(keepends=True)
    frames: list[Atoms] = []
    line = good_end = 0
    while line < len(lines):
        try:
            count = int(lines[line].strip())
            chunk = lines[line : line + count + 2]
            if len(chunk) < count + 2 or not chunk[-1].endswith("\n"):
                break
            frame = ase.io.read(io.StringIO("".join(chunk)), format="extxyz")
        except Exception:
            break
        if "frame_index" not in frame.info or "positions_sha256" not in frame.info:
            raise ValueError(f"{output} holds frames not written by `mlff data label`: choose another output")
        frames.append(frame)
        line += count + 2
        good_end += sum(len(part) for part in chunk)
    if text[good_end:].strip():
        from mlff.utils import atomic_write_text

        atomic_write_text(output, text[:good_end])
    return frames


_CALCULATOR: Calculator | None = None


def _init_worker(method: str, basis: str | None, threads: int) -> None:
    global _CALCULATOR
    _set_worker_threads(threads, method)
    _CALCULATOR = make_calculator(method, basis)


def _single_point(
    index: int, numbers: np.ndarray, positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray
) -> tuple[int, Any, Any, str | None]:
    """Worker entry: (index, energy eV, forces [n, 3] eV/A, None) or (index, None, None, error).

    `cell` [3, 3] (Angstrom) and `pbc` [3] are the frame's: a periodic frame is labelled periodically.
    """
    assert _CALCULATOR is not None
    try:
        atoms = Atoms(numbers=numbers, positions=positions, cell=cell, pbc=pbc)
        atoms.calc = _CALCULATOR
        return index, float(atoms.get_potential_energy()), np.array(atoms.get_forces(apply_constraint=False)), None
    except Exception as error:
        return index, None, None, f"{type(error).__name__}: {error}"


def dask_single_point(
    method: str,
    basis: str | None,
    threads: int,
    index: int,
    numbers: np.ndarray,
    positions: np.ndarray,
    cell: np.ndarray,
    pbc: np.ndarray,
) -> tuple[int, Any, Any, str | None]:
    """Dask task entry: `_single_point` with the worker process's calculator made on first use."""
    global _CALCULATOR_SETTINGS
    if _CALCULATOR is None or _CALCULATOR_SETTINGS != (method, basis, threads):
        _init_worker(method, basis, threads)
        _CALCULATOR_SETTINGS = (method, basis, threads)
    return _single_point(index, numbers, positions, cell, pbc)


_CALCULATOR_SETTINGS: tuple[str, str | None, int] | None = None


def label_frames(
    frames_path: str | os.PathLike,
    output: str | os.PathLike,
    method: str = "gfn2-xtb",
    basis: str | None = None,
    workers: int = 1,
    threads_per_worker: int = 1,
    report: Callable[[str], None] | None = None,
    scheduler: str | None = None,
) -> LabelReport:
    """Label every frame of `frames_path` not yet in `output` (see the module docstring).

    Args:
        frames_path: the frames to label.
        output: the extxyz file to append to.
        method: one of mlff.methods.METHODS. basis: overrides the pyscf method's basis.
        workers: frames computed at once (1: in this process, no pool).
        threads_per_worker: OpenMP/BLAS threads of each computation.
        report: called with a line per finished frame (None: quiet).
        scheduler: a Dask scheduler address to compute the frames on (None: `workers` local processes).
    """
    import ase.io

    get_method(method)
    if workers < 1 or threads_per_worker < 1:
        raise ValueError(f"workers and threads_per_worker must be >= 1, got {workers} and {threads_per_worker}")
    started = time.perf_counter()
    label = method_label(method, basis)
    source = Path(frames_path)
    output = Path(output)
    inputs = ase.io.read(source, index=":")
    done = read_labelled(output)
    others = sorted({str(frame.info.get("method")) for frame in done} - {label})
    if others:
        raise ValueError(f"{output} holds labels of {', '.join(others)}; this run is {label}: choose another output")
    seen = {(int(frame.info["frame_index"]), str(frame.info["positions_sha256"])) for frame in done}
    result = LabelReport(output=output, total=len(inputs))
    todo = []
    for index, atoms in enumerate(inputs):
        key = (index, positions_hash(atoms.get_atomic_numbers(), atoms.get_positions()))
        if key in seen:
            result.skipped += 1
        else:
            todo.append(
                (index, atoms.get_atomic_numbers(), atoms.get_positions(), atoms.cell.array.copy(), atoms.pbc.copy())
            )
    output.parent.mkdir(parents=True, exist_ok=True)
    with open(output, "a") as sink:

        def finished(index: int, energy: Any, forces: Any, error: str | None) -> None:
            if error is not None:
                result.failed[index] = error
                if report:
                    report(f"frame {index}: failed: {error}")
                return
            text = _extxyz(_labelled(inputs[index], index, energy, forces, label, source))
            sink.write(text)
            sink.flush()
            os.fsync(sink.fileno())
            result.labelled += 1
            if report:
                report(f"frame {index}: {energy:.6f} eV ({result.labelled}/{len(todo)})")

        if todo and scheduler is not None:
            _run_dask(todo, method, basis, threads_per_worker, finished, result, scheduler)
        elif todo and workers == 1:
            _init_worker(method, basis, threads_per_worker)
            for item in todo:
                finished(*_single_point(*item))
        elif todo:
            _run_pool(todo, method, basis, workers, threads_per_worker, finished, result)
    result.seconds = round(time.perf_counter() - started, 3)
    return result


def _run_pool(
    todo: list[tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    method: str,
    basis: str | None,
    workers: int,
    threads: int,
    finished: Callable[..., None],
    result: LabelReport,
) -> None:
    """The frames in `workers` spawned processes, `finished` called as each completes."""
    from concurrent.futures.process import BrokenProcessPool

    context = multiprocessing.get_context("spawn")
    with _child_thread_environment(threads):
        executor = concurrent.futures.ProcessPoolExecutor(
            max_workers=min(workers, len(todo)),
            mp_context=context,
            initializer=_init_worker,
            initargs=(method, basis, threads),
        )
        try:
            futures = {executor.submit(_single_point, *item): item[0] for item in todo}
            for future in concurrent.futures.as_completed(futures):
                try:
                    finished(*future.result())
                except BrokenProcessPool:
                    result.failed[futures[future]] = "worker process died (crash in a native library?)"
        except BaseException:
            executor.shutdown(wait=False, cancel_futures=True)
            raise
        executor.shutdown(wait=True)


def _run_dask(
    todo: list[tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    method: str,
    basis: str | None,
    threads: int,
    finished: Callable[..., None],
    result: LabelReport,
    scheduler: str,
) -> None:
    """The frames as tasks on a Dask cluster, `finished` called here as each returns."""
    from distributed import as_completed

    from mlff.data.generate import dask_client

    with dask_client(scheduler) as client:
        futures = {
            client.submit(dask_single_point, method, basis, threads, *item, pure=False): item[0] for item in todo
        }
        for future in as_completed(futures):
            try:
                outcome = future.result()
            except Exception as error:
                result.failed[futures[future]] = f"Dask task failed: {type(error).__name__}: {error}"
                continue
            finished(*outcome)


def _labelled(atoms: Atoms, index: int, energy: float, forces: np.ndarray, label: str, source: Path) -> Atoms:
    """The labelled frame: numbers, positions, energy, forces and info as the module docstring says."""
    numbers, positions = atoms.get_atomic_numbers(), atoms.get_positions()
    frame = Atoms(numbers=numbers, positions=positions, cell=atoms.cell, pbc=atoms.pbc)
    frame.calc = SinglePointCalculator(frame, energy=energy, forces=forces)
    for key, value in atoms.info.items():
        if key not in _OWN_KEYS and isinstance(value, (str, int, float, bool, np.integer, np.floating)):
            frame.info[key] = value
    frame.info.update(
        equilibrium=False,
        method=label,
        molecule=atoms.get_chemical_formula(),
        source=f"label:{source}#{index}",
        frame_index=index,
        positions_sha256=positions_hash(numbers, positions),
    )
    return frame


def _extxyz(frame: Atoms) -> str:
    """One frame as extxyz text."""
    import ase.io

    buffer = io.StringIO()
    ase.io.write(buffer, frame, format="extxyz")
    return buffer.getvalue()


def format_report(result: LabelReport) -> str:
    """One line: labelled now, skipped, failed, seconds."""
    line = (
        f"{result.labelled} frame(s) labelled, {result.skipped} already in {result.output}, "
        f"{len(result.failed)} failed, of {result.total} ({result.seconds:.1f} s)"
    )
    if result.failed:
        line += "\n" + "\n".join(f"  frame {index}: {error}" for index, error in sorted(result.failed.items()))
    return line
