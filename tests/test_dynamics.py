"""The MD runner: observers, the three engines side by side, outputs, resume, protocols, `mlff md`."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.io import write
from synthetic import write_md17_npz

from mlff.cli.main import main
from mlff.data.reference import distance_counts, hr_density, hr_mae
from mlff.dynamics import (
    MDSettings,
    RDFObserver,
    StabilityObserver,
    build_engine,
    load_protocol,
    load_structure,
    run_md,
)
from mlff.dynamics.output import load_checkpoint, save_checkpoint
from mlff.dynamics.runner import can_resume
from mlff.dynamics.thermo import energy_drift_mev_per_ps_atom
from mlff.export import load_potential
from mlff.units import NM_TO_ANGSTROM

pytestmark = pytest.mark.usefixtures("single_thread")

ROOT = Path(__file__).resolve().parents[1]
TETRAHEDRON = 1.2 / np.sqrt(8.0) * np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=float)


@pytest.fixture
def h4_file(tmp_path):
    path = tmp_path / "h4.xyz"
    write(path, Atoms("H4", positions=TETRAHEDRON))
    return path


def test_the_collapse_detector_flags_the_first_stretched_frame():
    bonds = np.array([[0, 1], [1, 2]])
    reference = np.array([1.0, 1.0])
    trajectory = np.array([[[0.0, 0, 0], [1.0, 0, 0], [2.0, 0, 0]]] * 8)
    trajectory[5:, 2, 0] = 2.6  # bond 1-2 stretched by 0.6 A from the sixth frame on
    stretched = StabilityObserver(bonds, reference, max_deviation_a=0.5)
    unperturbed = StabilityObserver(bonds, reference, max_deviation_a=0.5)
    for frame, positions in enumerate(trajectory, start=1):
        stretched.observe(100 * frame, 50.0 * frame, positions)
        unperturbed.observe(100 * frame, 50.0 * frame, trajectory[0])
    assert stretched.collapsed and stretched.collapsed_at_fs == 300.0
    # MDsim: stable time = (collapse frame - 1) * 0.05 ps, the collapse frame being the sixth.
    assert stretched.summary()["stable_time_ps"] == pytest.approx((6 - 1) * 0.05)
    assert stretched.frames_seen == 6, "a collapsed replica is no longer observed"
    assert not unperturbed.collapsed and unperturbed.summary()["stable_time_ps"] == pytest.approx(8 * 0.05)
    assert unperturbed.summary()["largest_bond_deviation_a"] == 0.0


def test_non_finite_positions_are_a_collapse():
    observer = StabilityObserver(np.array([[0, 1]]), np.array([1.0]))
    observer.observe(1, 10.0, np.array([[0.0, 0, 0], [1.0, 0, 0]]))
    observer.observe(2, 20.0, np.array([[0.0, 0, 0], [np.nan, 0, 0]]))
    assert observer.collapsed and observer.summary()["stable_time_ps"] == pytest.approx(0.01)


def test_hr_of_a_hand_made_trajectory_equals_a_hand_computation():
    # Two frames of a 3-atom chain; bins of 0.02 A: distances 1.013, 1.014 (bin 50), 2.027 (bin 101),
    # then 1.515 (bin 75), 2.516 (bin 125), 4.031 (bin 201).
    frames = np.array([[[0.0, 0, 0], [1.013, 0, 0], [2.027, 0, 0]], [[0.0, 0, 0], [1.515, 0, 0], [4.031, 0, 0]]])
    observer = RDFObserver()
    for positions in frames:
        observer.observe(0, 0.0, positions)
    width = 10.0 / 500
    expected = np.zeros(500)
    for bin_index, pairs in {50: 2, 101: 1, 75: 1, 125: 1, 201: 1}.items():
        expected[bin_index] = pairs / (6 * width)
    np.testing.assert_allclose(observer.density, expected)
    assert observer.summary()["hr_mae"] is None, "no reference h(r) given"
    # Against frame 1 alone (2/3 in bin 50, 1/3 in bin 101): |h - h_ref| integrates to
    # |2/6 - 2/3| + |1/6 - 1/3| + 3/6 = 1, which is MDsim's mean difference times 10 A.
    reference = hr_density(distance_counts(frames[:1]))
    assert hr_mae(observer.density, reference) == pytest.approx(1.0)
    assert RDFObserver(reference_density=reference, counts=observer.counts, frames_seen=2).summary()[
        "hr_mae"
    ] == pytest.approx(1.0)


@pytest.fixture
def methanol_atoms(methanol):
    return Atoms(numbers=methanol[0], positions=methanol[1])


def _step_zero_forces(engine) -> np.ndarray:
    if engine.name == "torch":
        return engine.state.forces.numpy().reshape(len(engine.replicas), -1, 3)
    if engine.name == "ase":
        return np.stack([atoms.get_forces(apply_constraint=False) for atoms in engine.atoms])
    state_forces = [c.getState(getForces=True).getForces(asNumpy=True)._value for c in engine.contexts]
    from mlff.units import EV_PER_ANGSTROM_TO_KJ_PER_MOL_PER_NM

    return np.stack(state_forces) / EV_PER_ANGSTROM_TO_KJ_PER_MOL_PER_NM


def test_the_three_engines_agree_at_step_zero(potential_file, methanol_atoms):
    potential = load_potential(potential_file)
    settings = MDSettings(temperature_k=300.0, replicas=2)
    engines = {
        name: build_engine(name, potential, [methanol_atoms] * 2, settings) for name in ("torch", "ase", "openmm")
    }
    frames = {name: engine.frame() for name, engine in engines.items()}
    forces = {name: _step_zero_forces(engine) for name, engine in engines.items()}
    for name in ("ase", "openmm"):
        np.testing.assert_allclose(forces[name], forces["torch"], rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(frames[name].potential_energy_ev, frames["torch"].potential_energy_ev, atol=1e-6)
        # The same seeded Maxwell-Boltzmann draw starts every engine.
        np.testing.assert_allclose(frames[name].temperature_k, frames["torch"].temperature_k, rtol=1e-5)
    assert frames["torch"].temperature_k[0] != pytest.approx(frames["torch"].temperature_k[1])


def test_the_three_engines_give_the_same_mean_temperature(spring_potential_file):
    """Langevin at 300 K, 4 replicas x 600 steps of 0.5 fs after 50 fs: each engine's mean
    temperature is 300 K within 4 standard errors; the error of a mean over n_eff independent
    samples is T sqrt(2 / dof) / sqrt(n_eff), with n_eff = replicas * time * friction (kinetic
    energy decorrelates within about 1 / (2 friction))."""
    friction, replicas, temperature = 0.2, 4, 300.0
    settings = MDSettings(
        timestep_fs=0.5,
        temperature_k=temperature,
        thermostat="langevin",
        friction_per_fs=friction,
        replicas=replicas,
        seed=11,
    )
    potential = load_potential(spring_potential_file)
    means = {}
    for name in ("torch", "ase", "openmm"):
        engine = build_engine(name, potential, [Atoms("H4", positions=TETRAHEDRON)] * replicas, settings)
        engine.advance(100)
        samples = []
        for _ in range(60):
            engine.advance(10)
            samples.append(engine.frame().temperature_k)
        means[name] = float(np.mean(samples))
    n_eff = replicas * 600 * 0.5 * friction
    error = temperature * np.sqrt(2.0 / 9.0) / np.sqrt(n_eff)
    for name, mean in means.items():
        assert abs(mean - temperature) < 4 * error, (name, means)


def test_a_run_writes_its_trajectory_thermo_summary_and_plots(spring_potential_file, h4_file, tmp_path):
    import mdtraj

    settings = MDSettings(steps=400, timestep_fs=0.25, temperature_k=300.0, thermostat="nve", save_every=20, replicas=2)
    summary = run_md(spring_potential_file, str(h4_file), settings, tmp_path / "md", engine="torch")
    stability, speed = summary["stability"], summary["throughput"]
    assert stability["collapsed"] is False and stability["bonds"] == 6 and stability["replicas"] == 2
    assert speed["steps"] == 400 and speed["steps_per_second"] > 0 and 0.0 < speed["potential_time_fraction"] <= 1
    assert speed["atom_steps_per_second"] == pytest.approx(speed["steps_per_second"] * 8)
    assert speed["ns_per_day"] == pytest.approx(2 * speed["ns_per_day_per_replica"])
    assert abs(stability["energy_drift_mev_per_ps_atom"]) < 1.0
    trajectory = mdtraj.load(str(tmp_path / "md" / "replica_1.h5"))
    assert trajectory.n_frames == 20 and trajectory.n_atoms == 4
    np.testing.assert_allclose(trajectory.time, np.arange(1, 21) * 20 * 0.25 / 1000.0, rtol=1e-6)
    thermo = np.loadtxt(tmp_path / "md" / "thermo.csv", delimiter=",", skiprows=1)
    assert thermo.shape == (40, 7)
    first = thermo[thermo[:, 2] == 0]
    assert np.ptp(first[:, 5]) < 2e-3, "total energy conserved in NVE"
    np.testing.assert_allclose(trajectory.xyz[-1] * NM_TO_ANGSTROM, _last_positions(tmp_path / "md"), atol=1e-4)
    assert json.loads((tmp_path / "md" / "summary.json").read_text())["stability"]["replicas"] == 2
    for png in ("bond_deviation.png", "hr.png"):
        assert (tmp_path / "md" / png).read_bytes()[:4] == b"\x89PNG"


def _last_positions(directory: Path) -> np.ndarray:
    import torch

    return torch.load(directory / "checkpoint.pt", weights_only=False)["engine"]["positions"].numpy()[4:8]


def test_a_collapsing_replica_stops_while_the_batch_goes_on(spring_potential_file, tmp_path):
    stretched = Atoms("H2", positions=[[0.0, 0.0, 0.0], [0.9, 0.0, 0.0]])
    write(tmp_path / "hot.xyz", stretched)
    write(tmp_path / "cold.xyz", Atoms("H2", positions=[[0.0, 0.0, 0.0], [1.2, 0.0, 0.0]]))
    settings = MDSettings(steps=400, timestep_fs=0.5, temperature_k=50000.0, save_every=5, replicas=2)
    summary = run_md(spring_potential_file, [str(tmp_path / "hot.xyz")] * 2, settings, engine="torch")
    assert summary["stability"]["collapsed_replicas"] == [0, 1]
    assert summary["throughput"]["steps"] < 400, "the run stops once every replica has collapsed"
    per_replica = summary["stability"]["per_replica"]
    assert all(r["stable_time_ps"] == pytest.approx(r["collapse_time_ps"] - 0.0025) for r in per_replica)


def test_run_md_sizes_threads_unless_the_user_chose(spring_potential_file, h4_file, monkeypatch):
    """From Python as from the CLI: one thread for a small system; the user's count is left alone."""
    import torch

    import mlff.threads
    from mlff.dynamics.runner import atoms_per_call

    for name in mlff.threads.THREAD_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(mlff.threads, "_user_threads", None)
    monkeypatch.setattr(mlff.threads, "_torch_default_threads", None)
    systems = [Atoms("H4"), Atoms("H2")]
    assert atoms_per_call(systems, "torch") == 6 and atoms_per_call(systems, "openmm") == 4
    settings = MDSettings(steps=4, timestep_fs=0.5, save_every=2, replicas=2)
    torch.set_num_threads(2)
    run_md(spring_potential_file, str(h4_file), settings, engine="torch")
    assert torch.get_num_threads() == 1, "8 atoms per call: one thread"
    mlff.threads.set_user_threads(2)
    run_md(spring_potential_file, str(h4_file), settings, engine="torch")
    assert torch.get_num_threads() == 2, "the user's choice stays"


@pytest.mark.parametrize("engine", ["torch", "ase", "openmm"])
def test_a_resumed_run_continues_exactly(spring_potential_file, h4_file, tmp_path, engine):
    thermostat = "nose-hoover" if engine == "ase" else "langevin"
    settings = MDSettings(
        steps=60, timestep_fs=0.5, thermostat=thermostat, friction_per_fs=0.05, save_every=10, replicas=2, seed=5
    )
    whole = run_md(spring_potential_file, str(h4_file), settings, tmp_path / "whole", engine=engine)
    half = MDSettings(**{**settings.to_dict(), "steps": 30})
    run_md(spring_potential_file, str(h4_file), half, tmp_path / "parts", engine=engine)
    resumed = run_md(spring_potential_file, str(h4_file), settings, tmp_path / "parts", engine=engine, resume=True)
    assert resumed["throughput"]["steps"] == 60
    for k in range(2):
        np.testing.assert_allclose(_frames(tmp_path / "parts", k), _frames(tmp_path / "whole", k), atol=1e-5)
    a = np.loadtxt(tmp_path / "whole" / "thermo.csv", delimiter=",", skiprows=1)
    b = np.loadtxt(tmp_path / "parts" / "thermo.csv", delimiter=",", skiprows=1)
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)
    assert (
        resumed["stability"]["per_replica"][0]["frames_observed"]
        == whole["stability"]["per_replica"][0]["frames_observed"]
    )


def _frames(directory: Path, replica: int) -> np.ndarray:
    import mdtraj

    return mdtraj.load(str(directory / f"replica_{replica}.h5")).xyz


def test_resume_refuses_other_settings(spring_potential_file, h4_file, tmp_path):
    settings = MDSettings(steps=20, save_every=10)
    run_md(spring_potential_file, str(h4_file), settings, tmp_path / "md", engine="torch")
    with pytest.raises(ValueError, match="temperature_k"):
        run_md(
            spring_potential_file,
            str(h4_file),
            MDSettings(steps=40, save_every=10, temperature_k=500.0),
            tmp_path / "md",
            engine="torch",
            resume=True,
        )
    with pytest.raises(ValueError, match="'torch' engine"):
        run_md(spring_potential_file, str(h4_file), settings, tmp_path / "md", engine="ase", resume=True)
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        run_md(spring_potential_file, str(h4_file), settings, tmp_path / "new", engine="torch", resume=True)
    # Another file under the same name (a retrained potential): not resumed, not reused.
    other = tmp_path / "other.pt"
    other.write_bytes(spring_potential_file.read_bytes() + b"\0")
    assert can_resume(tmp_path / "md", "torch", settings, spring_potential_file)
    assert not can_resume(tmp_path / "md", "torch", settings, other)
    checkpoint = load_checkpoint(tmp_path / "md" / "checkpoint.pt")
    checkpoint["potential_sha256"] = "0" * 64
    save_checkpoint(tmp_path / "md" / "checkpoint.pt", checkpoint)
    with pytest.raises(ValueError, match="another potential file"):
        run_md(spring_potential_file, str(h4_file), settings, tmp_path / "md", engine="torch", resume=True)


# `mlff md` in a child process whose run holds still after a given number of saved frames, inside an
# observer (run_md(observers=...)), having said so through a file: the parent's SIGINT then lands
# mid-run whatever the machine's load, never after the run has ended.
PAUSING_MD = r"""
import signal, sys, time
from pathlib import Path
import mlff.dynamics
from mlff.cli.main import main

# Ctrl-C as a terminal delivers it: a suite started in the background by a non-interactive shell
# inherits SIGINT ignored (and Python keeps it so), which would leave this process paused forever.
signal.signal(signal.SIGINT, signal.default_int_handler)

ready, pause_after = Path(sys.argv[1]), int(sys.argv[2])

class PauseAfter:
    name = "pause"

    def __init__(self):
        self.frames = 0

    def observe(self, frame):
        self.frames += 1
        if self.frames == pause_after:
            ready.write_text(str(self.frames))
            while True:
                time.sleep(0.01)

    def summary(self):
        return {"frames": self.frames}

    def state_dict(self):
        return {"frames": self.frames}

    def load_state_dict(self, saved):
        self.frames = saved["frames"]

original_run_md = mlff.dynamics.run_md

def run_md_with_pause(*args, observers=(), **kwargs):
    return original_run_md(*args, observers=[*observers, PauseAfter()], **kwargs)

mlff.dynamics.run_md = run_md_with_pause
sys.exit(main(sys.argv[3:]))
"""


def test_checkpoints_come_at_the_first_frame_then_by_wall_time_and_at_the_end(
    spring_potential_file, h4_file, tmp_path, monkeypatch
):
    import mlff.dynamics.runner as runner

    saved = []
    monkeypatch.setattr(runner, "save_checkpoint", lambda path, state: saved.append(state["engine"]["step"]))
    settings = MDSettings(steps=200, save_every=10, thermostat="langevin")
    run_md(spring_potential_file, str(h4_file), settings, tmp_path / "slow", checkpoint_seconds=1e9)
    assert saved == [10, 200]
    saved.clear()
    run_md(spring_potential_file, str(h4_file), settings, tmp_path / "every", checkpoint_seconds=0.0)
    assert saved == list(range(10, 201, 10))


def test_ctrl_c_then_resume_loses_no_frames(spring_potential_file, h4_file, tmp_path):
    md_args = [
        "--threads",
        "1",
        "md",
        str(spring_potential_file),
        "--structure",
        str(h4_file),
        "--engine",
        "torch",
        "--steps",
        "1000",
        "--save-every",
        "10",
        "--thermostat",
        "langevin",
        "--no-progress",
        "-o",
        str(tmp_path / "md"),
    ]
    ready = tmp_path / "paused"
    process = subprocess.Popen(
        [sys.executable, "-c", PAUSING_MD, str(ready), "30", *md_args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        while not ready.exists():
            assert process.poll() is None, f"the run ended before pausing: {process.communicate()}"
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=120)
    finally:
        process.kill()  # no paused process outlives a failed test
    assert process.returncode == 130, err
    assert "interrupted at step 300" in out, "the signal landed in the 30th saved frame"
    # The 30th frame was not yet written when the signal came: 29 frames are kept (the checkpoint,
    # of the first frame here, is older: the resume recomputes from it).
    assert (tmp_path / "md" / "thermo.csv").read_text().count("\n") - 1 == 29
    code = main(md_args[2:] + ["--resume"])
    assert code == 0
    settings = MDSettings(steps=1000, save_every=10, thermostat="langevin")
    run_md(spring_potential_file, str(h4_file), settings, tmp_path / "whole", engine="torch")
    resumed, whole = _frames(tmp_path / "md", 0), _frames(tmp_path / "whole", 0)
    assert resumed.shape == whole.shape == (100, 4, 3)
    np.testing.assert_allclose(resumed, whole, atol=1e-6)


def test_protocol_files(tmp_path):
    stability = load_protocol(ROOT / "md" / "md17-stability.yaml")
    assert (stability.steps, stability.timestep_fs, stability.temperature_k) == (600_000, 0.5, 500.0)
    assert (stability.thermostat, stability.ttime, stability.save_every, stability.replicas) == (
        "nose-hoover",
        20,
        100,
        5,
    )
    assert stability.frame_interval_ps == pytest.approx(0.05)
    cpu = load_protocol(ROOT / "md" / "md17-stability-cpu.yaml")
    assert cpu.steps == 100_000 and {**cpu.to_dict(), "steps": 0} == {**stability.to_dict(), "steps": 0}
    assert load_protocol(ROOT / "md" / "md17-stability.yaml", time="1ps").steps == 2000
    # The Langevin comparison protocol is the CPU one with only its thermostat changed.
    langevin = load_protocol(ROOT / "md" / "md17-stability-langevin.yaml")
    assert (langevin.thermostat, langevin.friction_per_fs) == ("langevin", 0.01)
    assert {**langevin.to_dict(), "thermostat": "nose-hoover"} == cpu.to_dict()
    assert load_protocol(ROOT / "md" / "quick-500k.yaml", steps=10).steps == 10
    (tmp_path / "bad.yaml").write_text("steps: 10\ntemperature: 300\n")
    with pytest.raises(ValueError, match="temperature"):
        load_protocol(tmp_path / "bad.yaml")
    (tmp_path / "both.yaml").write_text("steps: 10\ntime: 1ps\n")
    with pytest.raises(ValueError, match="steps or as time"):
        load_protocol(tmp_path / "both.yaml")
    (tmp_path / "length.yaml").write_text("time: 3 weeks\n")
    with pytest.raises(ValueError, match="fs, ps or ns"):
        load_protocol(tmp_path / "length.yaml")


def test_energy_drift_is_a_fitted_slope():
    times = np.arange(0.0, 1000.0, 10.0)
    energies = -5.0 + 2e-6 * times
    assert energy_drift_mev_per_ps_atom(times, energies, num_atoms=4) == pytest.approx(2e-6 * 1e6 / 4)


def test_structure_from_dataset_index(tmp_path):
    path = write_md17_npz(tmp_path / "mol.npz", num_frames=5)
    atoms = load_structure(f"{path}:3", {})
    np.testing.assert_allclose(atoms.get_positions(), np.load(path)["R"][3])
    with pytest.raises(ValueError, match="5 frames"):
        load_structure(f"{path}:7", {})
    with pytest.raises(ValueError, match="no start structure"):
        load_structure(None, {})


def test_reference_data_supplies_bonds_hr_and_start_frames(potential_file, tmp_path):
    data = write_md17_npz(tmp_path / "mol.npz", num_frames=120)
    settings = MDSettings(steps=20, save_every=10, replicas=2, temperature_k=100.0)
    summary = run_md(potential_file, None, settings, engine="torch", reference_data=data)
    assert summary["stability"]["hr_mae"] is not None and summary["stability"]["bonds"] > 0
    assert summary["atoms"] == [5, 5]


def test_md_command_prints_stability_and_speed(spring_potential_file, h4_file, capsys):
    code = main(
        [
            "md",
            str(spring_potential_file),
            "--structure",
            str(h4_file),
            "--steps",
            "40",
            "--save-every",
            "10",
            "--engine",
            "torch",
            "--replicas",
            "2",
            "--no-progress",
        ]
    )
    output = capsys.readouterr().out
    assert code == 0
    assert "torch engine, 2 replica(s)" in output and "stability: stable" in output
    assert "steps/s" in output and "ns/day" in output


def test_md_command_takes_time_and_rejects_bad_engines(spring_potential_file, h4_file, capsys):
    code = main(
        [
            "md",
            str(spring_potential_file),
            "--structure",
            str(h4_file),
            "--time",
            "10fs",
            "--save-every",
            "5",
            "--engine",
            "openmm",
            "--no-progress",
        ]
    )
    assert code == 0 and "20 steps" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["md", str(spring_potential_file), "--engine", "gromacs"])
    assert main(["md", str(spring_potential_file), "--structure", str(h4_file), "--time", "3 weeks"]) == 2


def test_export_adds_reference_statistics_to_a_potential(potential_file, tmp_path):
    data = write_md17_npz(tmp_path / "mol.npz", num_frames=120)
    out = tmp_path / "with_reference.pt"
    assert main(["export", str(potential_file), "--reference-data", str(data), "-o", str(out), "--no-card"]) == 0
    reference = load_potential(out).metadata["reference"]
    assert len(reference["hr"]["density"]) == 500 and reference["start_positions"]
    np.testing.assert_allclose(np.sum(reference["hr"]["density"]) * 10.0 / 500, 1.0)
    assert os.path.getsize(out) > 0
    assert main(["export", str(potential_file), "-o", str(out)]) == 2


@pytest.fixture(scope="module")
def spring_float32_file(tmp_path_factory):
    """conftest's spring potential of H atoms, written in float32."""
    from conftest import SpringBackbone

    from mlff.encodings import build_encoding
    from mlff.export.deploy import export_model
    from mlff.models import EnergyModel

    model = EnergyModel(SpringBackbone(1, build_encoding("gaussian", 4, 5.0)), [1], [-13.6], 1.0)
    return export_model(model, tmp_path_factory.mktemp("spring32") / "spring32.pt", dtype="float32")


@pytest.mark.parametrize(("asked", "expected"), [(None, "float32"), ("float64", "float64")])
def test_run_md_keeps_the_files_dtype_unless_told(spring_float32_file, h4_file, asked, expected, tmp_path):
    settings = MDSettings(steps=20, timestep_fs=0.5, thermostat="nve", save_every=10)
    summary = run_md(spring_float32_file, str(h4_file), settings, tmp_path / "md", dtype=asked)
    assert summary["dtype"] == expected
    # A resumed run keeps the dtype it started in.
    longer = MDSettings(**{**settings.to_dict(), "steps": 40})
    assert run_md(spring_float32_file, str(h4_file), longer, tmp_path / "md", resume=True)["dtype"] == expected


class RecordingObserver:
    """Keeps every frame it is shown (an `Observer`)."""

    name = "recorder"

    def __init__(self):
        self.frames = []

    def observe(self, frame):
        self.frames.append(frame)

    def summary(self):
        return {"frames": len(self.frames)}

    def state_dict(self):
        return {"frames": len(self.frames)}

    def load_state_dict(self, saved):
        self.restored = saved["frames"]


@pytest.mark.parametrize("engine", ["torch", "ase"])
def test_observers_see_positions_forces_and_energies_of_each_saved_state(
    spring_potential_file, h4_file, tmp_path, engine
):
    import torch

    from mlff.dynamics import ForceObserver

    settings = MDSettings(steps=40, timestep_fs=0.5, thermostat="langevin", save_every=10, replicas=2)
    recorder, forces = RecordingObserver(), ForceObserver()
    summary = run_md(
        spring_potential_file, str(h4_file), settings, tmp_path / "md", engine=engine, observers=[recorder, forces]
    )
    assert len(recorder.frames) == 4 and summary["observers"]["recorder"] == {"frames": 4}
    potential = load_potential(spring_potential_file)
    frame = recorder.frames[-1]
    assert frame.replicas == [0, 1]
    for b in range(2):
        positions = torch.as_tensor(frame.positions_a[b])
        numbers, batch = torch.ones(4, dtype=torch.long), torch.zeros(4, dtype=torch.long)
        cell, pbc = torch.zeros(1, 3, 3, dtype=torch.float64), torch.zeros(1, 3, dtype=torch.bool)
        energy, expected = potential(positions, numbers, batch, cell, pbc)
        np.testing.assert_allclose(frame.forces_ev_per_a[b], expected.numpy(), rtol=1e-6, atol=1e-9)
        assert frame.potential_energy_ev[b] == pytest.approx(float(energy[0]), rel=1e-9)
    largest = summary["observers"]["forces"]["largest_force_ev_per_a"]
    assert set(largest) == {"0", "1"} and all(value > 0 for value in largest.values())
    longer = MDSettings(**{**settings.to_dict(), "steps": 60})
    again = RecordingObserver()
    run_md(spring_potential_file, str(h4_file), longer, tmp_path / "md", engine=engine, resume=True, observers=[again])
    assert again.restored == 4 and len(again.frames) == 2


def test_observers_need_distinct_names(spring_potential_file, h4_file):
    with pytest.raises(ValueError, match="distinct names"):
        run_md(spring_potential_file, str(h4_file), MDSettings(steps=10), observers=[RecordingObserver()] * 2)


def test_a_nose_hoover_replica_is_unchanged_when_a_batch_mate_collapses_and_leaves(
    spring_potential_file, h4_file, tmp_path
):
    # Replica 0: two hydrogens 0.5 A apart on 1.2 A springs fly apart and collapse within a few fs;
    # replica 1, the H4 tetrahedron, goes on alone in the batch. Each has its own Nose-Hoover
    # thermostat: the survivor's trajectory must be that of the same replica run by itself.
    write(tmp_path / "squeezed.xyz", Atoms("H2", positions=[[0.0, 0.0, 0.0], [0.5, 0.0, 0.0]]))
    settings = MDSettings(
        steps=160, timestep_fs=0.5, temperature_k=300.0, thermostat="nose-hoover", save_every=2, replicas=2, seed=11
    )
    together = RecordingObserver()
    summary = run_md(
        spring_potential_file, [str(tmp_path / "squeezed.xyz"), str(h4_file)], settings, observers=[together]
    )
    assert summary["stability"]["collapsed_replicas"] == [0]
    replicas_seen = [frame.replicas for frame in together.frames]
    assert [0, 1] in replicas_seen and replicas_seen[-1] == [1], "the survivor ran in the batch, then alone in it"
    assert replicas_seen.count([1]) > replicas_seen.count([0, 1]), "most of the run after the collapse"
    # Replica k is seeded seed + k: alone, the survivor is replica 0 of a run seeded 12.
    alone_settings = MDSettings(**{**settings.to_dict(), "replicas": 1, "seed": 12})
    alone = RecordingObserver()
    run_md(spring_potential_file, str(h4_file), alone_settings, observers=[alone])
    assert len(alone.frames) == len(together.frames) == settings.steps // settings.save_every
    for batched, single in zip(together.frames, alone.frames):
        b = batched.replicas.index(1)
        assert batched.step == single.step
        np.testing.assert_array_equal(batched.positions_a[b], single.positions_a[0])
        np.testing.assert_array_equal(batched.forces_ev_per_a[b], single.forces_ev_per_a[0])
        assert batched.potential_energy_ev[b] == single.potential_energy_ev[0]
        assert batched.kinetic_energy_ev[b] == single.kinetic_energy_ev[0]
    temperatures = [frame.temperature_k[-1] for frame in together.frames]
    assert np.ptp(temperatures) > 10.0, "the survivor moves: the comparison is not of a molecule at rest"
