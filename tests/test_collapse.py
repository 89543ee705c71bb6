"""`mlff bench collapse`: the collapse observer, the planted collapse found with its bond and time,
the frames written around it, the DFT-vs-model verdict (with a stand-in labeller, no pyscf)."""

import json

import ase.io
import numpy as np
import pytest
from ase import Atoms

from mlff.bench.collapse import (
    VerdictThresholds,
    _event,
    analyse_collapses,
    recorded_collapse_times,
    stop_time,
    verdict,
    write_summary,
)
from mlff.cli.main import main
from mlff.dynamics import MDSettings, run_md
from mlff.dynamics.frame import Frame
from mlff.dynamics.observers import CollapseObserver
from mlff.export import load_potential

pytestmark = pytest.mark.usefixtures("single_thread")

# H2 at rest (1.2 A) on a spring at 30,000 K: it stretches past 1.2 + 0.5 A after 0.06 and 0.17 ps
# (seeds 0 and 1), a dozen saved frames in.
HOT = MDSettings(steps=1000, timestep_fs=0.5, temperature_k=30000.0, save_every=5, replicas=2, seed=0)
H2 = Atoms("H2", positions=[[0.0, 0.0, 0.0], [1.2, 0.0, 0.0]])


def _frame(time_fs: float, replicas: list[int], positions: list[np.ndarray]) -> Frame:
    count = len(replicas)
    return Frame(
        step=int(time_fs / 0.5),
        time_fs=time_fs,
        replicas=replicas,
        positions_a=positions,
        forces_ev_per_a=[np.full_like(p, 0.1 * time_fs) for p in positions],
        potential_energy_ev=np.full(count, -time_fs),
        kinetic_energy_ev=np.zeros(count),
        temperature_k=np.zeros(count),
    )


def test_the_observer_keeps_the_frames_before_the_first_stretched_bond():
    chain = np.array([[0.0, 0, 0], [1.0, 0, 0], [2.0, 0, 0]])
    observer = CollapseObserver(np.array([[0, 1], [1, 2]]), np.array([1.0, 1.0]), max_deviation_a=0.5, keep=2)
    for index in range(1, 9):
        stretched = chain.copy()
        stretched[2, 0] += 0.1 * index if index < 6 else 0.7  # bond 1-2: 0.1 ... 0.5 A, then 0.7 A at frame 6
        observer.observe(_frame(50.0 * index, [0, 1], [chain.copy(), stretched]))
    assert list(observer.collapses) == [1], "only the stretched replica collapsed"
    collapse = observer.collapses[1]
    assert collapse["time_fs"] == 300.0, "0.5 A exactly is not over the limit; 0.7 A at frame 6 is"
    assert [f["time_fs"] for f in collapse["frames"]] == [200.0, 250.0, 300.0], "2 stable frames + the collapse"
    assert collapse["frames"][-1]["positions_a"][2, 0] == pytest.approx(2.7)
    assert collapse["frames"][-1]["energy_ev"] == -300.0 and collapse["frames"][0]["forces_ev_per_a"][0, 0] == 20.0
    assert observer.series[1]["bond"][-1] == 1 and observer.series[1]["deviation_a"][-1] == pytest.approx(0.7)
    assert len(observer.series[1]["times_fs"]) == 6, "a collapsed replica is no longer observed"
    assert len(observer.series[0]["times_fs"]) == 8 and 0 not in observer.collapses
    restored = CollapseObserver(np.array([[0, 1], [1, 2]]), np.array([1.0, 1.0]))
    restored.load_state_dict(observer.state_dict())
    assert restored.collapses[1]["time_fs"] == 300.0 and restored.keep == 2


def test_the_observer_rejects_bad_bonds():
    with pytest.raises(ValueError, match="one reference length per bond"):
        CollapseObserver(np.array([[0, 1]]), np.array([1.0, 1.1]))


def test_a_planted_collapse_is_found_with_its_bond_time_and_frames(spring_potential_file, tmp_path):
    ase.io.write(tmp_path / "hot.xyz", H2)
    structure = [str(tmp_path / "hot.xyz")] * 2
    reference_run = run_md(spring_potential_file, structure, HOT, engine="torch")
    result = analyse_collapses(
        spring_potential_file, HOT, tmp_path / "out", frames_before=2, dft=None, structure=structure, report=None
    )
    expected = {
        k: r["collapse_time_ps"] for k, r in enumerate(reference_run["stability"]["per_replica"]) if r["collapsed"]
    }
    assert expected, "the planted run must collapse"
    found = {c["replica"]: c for c in result["collapses"]}
    assert {k: c["collapse_time_ps"] for k, c in found.items()} == pytest.approx(expected)
    potential = load_potential(spring_potential_file)
    for collapse in found.values():
        assert collapse["bond"] == [0, 1] and collapse["elements"] == ["H", "H"] and collapse["bond_label"] == "H0-H1"
        assert collapse["reference_length_a"] == pytest.approx(1.2)
        assert abs(collapse["length_collapse_a"] - 1.2) > 0.5 >= abs(collapse["length_last_stable_a"] - 1.2)
        assert collapse["verdict"] == "no-dft" and collapse["de_dft_ev"] is None
        frames = ase.io.read(tmp_path / "out" / "spring" / collapse["frames_file"], index=":")
        assert [f.info["stage"] for f in frames] == ["stable", "stable", "collapse"]
        assert frames[-1].info["time_ps"] == pytest.approx(collapse["collapse_time_ps"])
        assert frames[-1].get_distance(0, 1) == pytest.approx(collapse["length_collapse_a"])
        for atoms in frames:  # the written energy and forces are the model's at the written positions
            energy, forces = potential.energy_and_forces(atoms.get_atomic_numbers(), atoms.get_positions())
            assert atoms.get_potential_energy() == pytest.approx(energy, abs=1e-6)  # extxyz keeps 1e-8 A
            np.testing.assert_allclose(atoms.get_forces(), forces, atol=1e-6)
    json_path, md_path = write_summary(tmp_path / "out")
    assert json.loads(json_path.read_text())["molecules"][0]["molecule"] == "spring"
    table = md_path.read_text()
    assert "H0-H1" in table and all(f"| {c['collapse_time_ps']:.2f} " in table for c in found.values())
    assert (tmp_path / "out" / "spring" / "bond_deviation.png").stat().st_size > 0


def test_replaying_a_saved_run_finds_the_collapses_the_run_found(spring_potential_file, tmp_path):
    ase.io.write(tmp_path / "hot.xyz", H2)
    structure = [str(tmp_path / "hot.xyz")] * 2
    options = {"frames_before": 2, "dft": None, "structure": structure, "report": None}
    run = analyse_collapses(spring_potential_file, HOT, tmp_path / "run", md_dir=tmp_path / "md", **options)
    replayed = analyse_collapses(spring_potential_file, HOT, tmp_path / "replay", replay=tmp_path / "md", **options)
    assert run["collapses"], "the planted run must collapse"
    assert len(replayed["collapses"]) == len(run["collapses"])
    for ours, theirs in zip(replayed["collapses"], run["collapses"]):
        assert ours["replica"] == theirs["replica"] and ours["bond"] == theirs["bond"]
        assert ours["collapse_time_ps"] == pytest.approx(theirs["collapse_time_ps"])
        assert ours["length_collapse_a"] == pytest.approx(theirs["length_collapse_a"], abs=1e-5)  # HDF5: float32 nm
        written = [ase.io.read(tmp_path / d / "spring" / ours["frames_file"], ":") for d in ("replay", "run")]
        for a, b in zip(*written):
            np.testing.assert_allclose(a.get_positions(), b.get_positions(), atol=1e-5)
    with pytest.raises(ValueError, match=r"settings differ .*temperature_k"):
        other = MDSettings(**{**HOT.to_dict(), "temperature_k": 300.0})
        analyse_collapses(spring_potential_file, other, tmp_path / "x", replay=tmp_path / "md", **options)
    summary = json.loads((tmp_path / "md" / "summary.json").read_text())
    (tmp_path / "md" / "summary.json").write_text(json.dumps({**summary, "potential_sha256": "0" * 64}))
    with pytest.raises(ValueError, match="another potential file"):
        analyse_collapses(spring_potential_file, HOT, tmp_path / "x", replay=tmp_path / "md", **options)


def test_an_analysis_of_another_potential_clears_the_folder_first(spring_potential_file, tmp_path):
    ase.io.write(tmp_path / "hot.xyz", H2)
    options = {"frames_before": 2, "dft": None, "structure": [str(tmp_path / "hot.xyz")] * 2, "report": None}
    folder = tmp_path / "out" / "spring"
    analyse_collapses(spring_potential_file, HOT, tmp_path / "out", **options)
    # A file only an earlier analysis wrote (a replica that collapsed then) stays while the potential is the same ...
    (folder / "replica7_collapse.extxyz").write_text("")
    (folder / "replica7_dft.extxyz").write_text("")
    analyse_collapses(spring_potential_file, HOT, tmp_path / "out", **options)
    assert (folder / "replica7_collapse.extxyz").is_file() and (folder / "replica7_dft.extxyz").is_file()
    # ... and goes, with the rest of the earlier analysis, once the folder's record names another file.
    record = json.loads((folder / "collapse.json").read_text())
    (folder / "collapse.json").write_text(json.dumps({**record, "potential_sha256": "0" * 64}))
    result = analyse_collapses(spring_potential_file, HOT, tmp_path / "out", **options)
    assert not (folder / "replica7_collapse.extxyz").exists() and not (folder / "replica7_dft.extxyz").exists()
    written = {path.name for path in folder.glob("replica*.extxyz")}
    assert written == {c["frames_file"] for c in result["collapses"]}


@pytest.mark.parametrize(
    ("offset_ev", "collapse_offset_ev", "expected"),
    [(2.0, 2.0, "hole"), (0.0, 0.0, "chemistry"), (0.3, 0.3, "unclear"), (0.0, 5.0, "hole")],
)
def test_stand_in_dft_energies_give_the_verdict(
    spring_potential_file, tmp_path, offset_ev, collapse_offset_ev, expected
):
    """A labeller that returns the model's own energies, offset on the stable frames by `offset_ev`
    and on the collapse frame by `collapse_offset_ev` (a hole entered after the last stable frame)."""
    ase.io.write(tmp_path / "hot.xyz", H2)
    potential = load_potential(spring_potential_file)
    seen = []

    def stand_in(frames, cache):
        seen.append(cache.name)
        labels = []
        for atoms in frames:
            energy, forces = potential.energy_and_forces(atoms.get_atomic_numbers(), atoms.get_positions())
            shift = {"start": 0.0, "stable": offset_ev, "collapse": collapse_offset_ev}[atoms.info["stage"]]
            labels.append((energy + 1000.0 + shift, forces + 0.01))  # a constant offset cancels in dE
        return labels

    result = analyse_collapses(
        spring_potential_file,
        HOT,
        tmp_path / "out",
        frames_before=2,
        labeller=stand_in,
        structure=[str(tmp_path / "hot.xyz")],
        label_collapse_frame=True,
        report=None,
    )
    assert seen == [f"replica{c['replica']}_dft.extxyz" for c in result["collapses"]], "one cache per replica"
    assert result["collapses"], "the planted run must collapse"
    for collapse in result["collapses"]:
        assert collapse["verdict"] == expected
        assert collapse["de_dft_minus_model_ev"] == pytest.approx(offset_ev, abs=1e-9)
        assert collapse["force_mae_vs_dft_mev_per_a"] == pytest.approx(10.0)
        assert len(collapse["dft_frames"]) == 2
        assert collapse["collapse_frame"]["de_dft_minus_model_ev"] == pytest.approx(collapse_offset_ev)


def test_the_verdict_thresholds():
    floors = VerdictThresholds.for_model(0.016)  # salicylic's test energy MAE, 16 meV
    assert (floors.hole_ev, floors.agree_ev) == (0.5, 0.1)
    assert verdict([0.3, 0.9], [0.3, 0.3], floors) == "hole", "DFT 0.6 eV above the model on the last frame"
    assert verdict([0.3, 0.35], [0.3, 0.3], floors) == "chemistry"
    assert verdict([0.3, 0.1], [0.3, 0.4], floors) == "unclear", "DFT 0.3 eV below: no hole, no agreement"
    assert verdict([None, None], [0.3, 0.4], floors) == "no-dft"
    loose = VerdictThresholds.for_model(0.2)  # a poor model: 5 x 0.2 and 3 x 0.2 eV
    assert (loose.hole_ev, loose.agree_ev) == pytest.approx((1.0, 0.6))
    assert verdict([0.3, 0.9], [0.3, 0.3], loose) == "chemistry"
    assert verdict([None, 1.9], [0.3, 0.3], loose) == "hole", "an unlabelled frame is skipped"


def test_a_proton_between_two_oxygens_reads_as_a_hydrogen_transfer():
    numbers = np.array([8, 1, 8, 6])
    positions = np.array([[0.0, 0, 0], [1.6, 0, 0], [2.6, 0, 0], [-1.4, 0, 0]])  # H left O0, 1.0 A from O2
    text = _event(numbers, positions, 0, 1)
    assert text.startswith("H1 left O0 (1.60 A)") and "O2 at 1.00 A" in text and "hydrogen transfer" in text
    assert "hydrogen transfer" not in _event(numbers, positions, 0, 3)


def test_recorded_collapses_set_the_stop_time(tmp_path):
    per_replica = [{"collapse_time_ps": 4.55}, {"collapse_time_ps": None}, {"collapse_time_ps": 27.55}]
    (tmp_path / "summary.json").write_text(json.dumps({"stability": {"per_replica": per_replica}}))
    recorded = recorded_collapse_times(tmp_path / "summary.json")
    assert recorded == {0: 4.55, 2: 27.55}
    assert stop_time(recorded) == "28.55ps" and stop_time({}) is None


def test_the_command_writes_the_table(spring_potential_file, tmp_path, capsys):
    ase.io.write(tmp_path / "hot.xyz", H2)
    protocol = tmp_path / "hot.yaml"
    protocol.write_text(
        "time: 0.3ps\ntemperature_k: 30000\nthermostat: langevin\nsave_every: 5\nreplicas: 1\nseed: 0\n"
    )
    argv = ["bench", "collapse", str(spring_potential_file), "--protocol", str(protocol), "--dft", "none"]
    code = main([*argv, "--structure", str(tmp_path / "hot.xyz"), "--out", str(tmp_path / "out")])
    assert code == 0
    assert "H0-H1" in capsys.readouterr().out
    assert (tmp_path / "out" / "collapse.md").is_file() and (tmp_path / "out" / "spring" / "md.json").is_file()
    assert main([*argv, "--structure", str(tmp_path / "hot.xyz"), "--out", str(tmp_path / "out")]) == 0
    assert "reusing the observed MD" in capsys.readouterr().out, "a rerun does not redo the MD"


def test_the_pyscf_labeller_caches_each_label(tmp_path, monkeypatch):
    """The default labeller's path through `label_frames`, its calculator swapped for ASE's EMT
    (no pyscf): labels come back in the frames' order, and a second call computes nothing."""
    from ase.calculators.emt import EMT

    import mlff.data.label
    from mlff.bench.collapse import pyscf_labeller

    calls = []

    def counting_emt(method, basis=None):
        calls.append(method)
        return EMT()

    monkeypatch.setattr(mlff.data.label, "make_calculator", counting_emt)
    rng = np.random.default_rng(0)
    frames = [Atoms("CO", positions=[[0, 0, 0], [1.13 + 0.1 * rng.random(), 0, 0]]) for _ in range(3)]
    for index, atoms in enumerate(frames):
        atoms.info.update(stage="start" if index == 0 else "stable", time_ps=0.05 * index)
    labeller = pyscf_labeller("pbe/def2-svp", workers=1, report=None)
    first = labeller(frames, tmp_path / "replica0_dft.extxyz")
    for atoms, (energy, forces) in zip(frames, first):
        atoms.calc = EMT()
        assert energy == pytest.approx(atoms.get_potential_energy(), abs=1e-6)
        np.testing.assert_allclose(forces, atoms.get_forces(), atol=1e-5)
    assert len(ase.io.read(tmp_path / "replica0_dft.extxyz", index=":")) == 3
    calls.clear()
    again = labeller(frames, tmp_path / "replica0_dft.extxyz")
    assert [e for e, _ in again] == [e for e, _ in first] and not calls, "a rerun reuses the cached labels"
    extra = Atoms("CO", positions=[[0, 0, 0], [1.5, 0, 0]])
    cached = pyscf_labeller("pbe/def2-svp", report=None, compute=False)(
        [*frames, extra], tmp_path / "replica0_dft.extxyz"
    )
    assert [e for e, _ in cached[:3]] == [e for e, _ in again]
    assert cached[3] is None and not calls, "compute=False only reads the cache"


def test_bad_options_are_refused_before_any_md(spring_potential_file, tmp_path):
    with pytest.raises(ValueError, match="unknown DFT method 'b3lyp'"):
        analyse_collapses(spring_potential_file, HOT, tmp_path, dft="b3lyp", report=None)
    with pytest.raises(ValueError, match="dft_frames must be between 1 and frames_before"):
        analyse_collapses(spring_potential_file, HOT, tmp_path, frames_before=2, dft_frames=3, report=None)
    assert not (tmp_path / "spring" / "md.json").exists()


def test_the_compiled_engine_observes_the_same_md(potential_file, tmp_path, monkeypatch):
    """`--engine torch-compiled` (traced only here: a real compile takes minutes) finds what the torch
    engine finds: the same Langevin noise and forces, so the same observed frames."""
    from ase.build import molecule

    from mlff.dynamics.compiled import CompiledTorchEngine

    original = CompiledTorchEngine.__init__
    made = []

    def traced_only(self, *args, **kwargs):
        made.append(self)
        original(self, *args, **{**kwargs, "compile": False})

    monkeypatch.setattr(CompiledTorchEngine, "__init__", traced_only)
    ase.io.write(tmp_path / "methanol.xyz", molecule("CH3OH"))
    protocol = tmp_path / "hot.yaml"
    protocol.write_text("time: 0.1ps\ntemperature_k: 3000\nthermostat: langevin\nsave_every: 5\nreplicas: 2\n")
    argv = ["bench", "collapse", str(potential_file), "--protocol", str(protocol), "--dft", "none"]
    argv += ["--structure", str(tmp_path / "methanol.xyz")]
    observed = {}
    for engine in ("torch", "torch-compiled"):
        assert main([*argv, "--engine", engine, "--out", str(tmp_path / engine)]) == 0
        observed[engine] = json.loads((tmp_path / engine / potential_file.stem / "md.json").read_text())
        assert bool(made) == (engine == "torch-compiled")
    assert observed["torch"]["collapses"], "the hot run collapses (a test that can tell the engines apart)"
    for key in ("series", "collapses"):
        assert rounded(observed["torch-compiled"][key]) == rounded(observed["torch"][key]), key


def rounded(value, digits: int = 6):
    """`value` with every float rounded (nested lists and mappings)."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {key: rounded(item, digits) for key, item in value.items()}
    if isinstance(value, list):
        return [rounded(item, digits) for item in value]
    return value
