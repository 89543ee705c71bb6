"""`mlff data generate` / `minimize`: the extxyz contract, failures, resume, the pyscf calculator.

GFN2-xTB (tblite), PBE (pyscf) and SMILES (rdkit) tests skip where the package is absent
(`pip install 'mlff[generate]'`). Sizes are tiny: two small molecules, a few MD frames,
sto-3g for pyscf.
"""

import io
import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule
from conftest import require_module

from mlff.cli import data as cli_data
from mlff.cli.main import main
from mlff.data import generate as generate_module
from mlff.data.generate import GenerateConfig, generate, summary_path, work_directory
from mlff.data.molecules import (
    MoleculeSpec,
    extxyz_safe,
    g2_molecules,
    read_smiles_file,
    smiles_molecules,
    structure_file_molecules,
)
from mlff.data.optional import MissingDependencyError, import_optional
from mlff.units import HARTREE_PER_BOHR_TO_EV_PER_ANGSTROM, HARTREE_TO_EV

FMAX = 1e-3
TEMPERATURES = (300.0, 600.0)
MD_FRAMES = 3
# A short MD protocol: 5 equilibration steps, a frame every 2 steps.
FAST_MD = ["--equilibration-steps", "5", "--sample-every", "2"]


def fast_config(**overrides) -> GenerateConfig:
    settings = dict(
        method="gfn2-xtb",
        conformers=1,
        temperatures_k=TEMPERATURES,
        md_frames=MD_FRAMES,
        equilibration_steps=5,
        sample_every=2,
        fmax_ev_per_a=FMAX,
    )
    return GenerateConfig(**{**settings, **overrides})


def write_xyz(directory: Path, name: str, atoms: Atoms) -> Path:
    path = directory / f"{name}.xyz"
    ase.io.write(path, atoms, format="xyz")
    return path


@pytest.fixture(scope="module")
def xtb_corpus(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """`mlff data generate` (gfn2-xtb, 2 workers) on water and ammonia from XYZ files: paths and printed output."""
    require_module("tblite")
    directory = tmp_path_factory.mktemp("xtb")
    files = [write_xyz(directory, name, molecule(name)) for name in ("H2O", "NH3")]
    output = directory / "corpus.extxyz"
    argv = ["data", "generate", "--method", "gfn2-xtb", "--xyz", *map(str, files), "--temperatures"]
    argv += [str(t) for t in TEMPERATURES] + ["--md-frames", str(MD_FRAMES), *FAST_MD, "--workers", "2"]
    argv += ["--no-progress", "-o", str(output)]
    return {"argv": argv, "output": output, "code": main(argv)}


def test_generated_corpus_round_trips_with_flags_and_counts(xtb_corpus: dict) -> None:
    assert xtb_corpus["code"] == 0
    frames = ase.io.read(xtb_corpus["output"], index=":")
    summary = json.loads(summary_path(xtb_corpus["output"]).read_text())
    assert summary["totals"] == {**summary["totals"], "molecules": 2, "ok": 2, "failed": 0, "frames": len(frames)}
    assert [m["name"] for m in summary["molecules"]] == ["H2O", "NH3"]
    for entry in summary["molecules"]:
        mine = [f for f in frames if f.info["molecule"] == entry["name"]]
        equilibrium = [f for f in mine if f.info["equilibrium"]]
        assert len(mine) == entry["total_frames"] == 1 + MD_FRAMES * len(TEMPERATURES)
        assert len(equilibrium) == entry["equilibrium_frames"] == 1
        assert entry["md_frames"] == {f"{t:g}": MD_FRAMES for t in TEMPERATURES}
        assert all(f.info["method"] == "gfn2-xtb" for f in mine)
        # Raw forces of a translation-invariant energy sum to zero (no MD constraint leaks into the labels).
        assert max(np.abs(f.get_forces().sum(axis=0)).max() for f in mine) < 1e-6
        assert all(f.info["source"].startswith("xyz:") and f.info["source"].endswith(".xyz#0") for f in mine)
        minimum = equilibrium[0]
        assert "temperature_k" not in minimum.info
        assert np.sqrt((minimum.get_forces() ** 2).sum(axis=1)).max() < FMAX
        md = [f for f in mine if not f.info["equilibrium"]]
        assert sorted(f.info["temperature_k"] for f in md) == sorted(np.repeat(TEMPERATURES, MD_FRAMES))
        # Off-equilibrium frames lie above the minimum and feel real forces.
        assert all(f.get_potential_energy() > minimum.get_potential_energy() for f in md)
        assert max(np.abs(f.get_forces()).max() for f in md) > 0.05


def test_generated_labels_are_tblite_values_in_ev(xtb_corpus: dict) -> None:
    from tblite.ase import TBLite

    frame = ase.io.read(xtb_corpus["output"], index=-1)
    atoms = Atoms(numbers=frame.numbers, positions=frame.positions)
    atoms.calc = TBLite(method="GFN2-xTB", verbosity=0, accuracy=generate_module.XTB_ACCURACY)
    assert atoms.get_potential_energy() == pytest.approx(frame.get_potential_energy(), abs=1e-6)
    np.testing.assert_allclose(atoms.get_forces(), frame.get_forces(), atol=1e-5)


def test_resume_skips_finished_molecules_and_redoes_unfinished(xtb_corpus: dict, tmp_path: Path) -> None:
    source_dir = xtb_corpus["output"].parent
    output = tmp_path / "corpus.extxyz"
    shutil.copytree(work_directory(xtb_corpus["output"]), work_directory(output))
    parts = work_directory(output)
    (water_marker,) = parts.glob("H2O-*.json")
    (ammonia_part,) = parts.glob("NH3-*.extxyz")
    water_part = water_marker.with_suffix(".extxyz")
    original_water = water_part.read_text()
    water_marker.unlink()  # as if the run had stopped after writing water's frames but before its marker
    ammonia_mtime = ammonia_part.stat().st_mtime_ns
    argv = list(xtb_corpus["argv"])
    argv[argv.index("-o") + 1] = str(output)
    assert main(argv) == 0
    summary = json.loads(summary_path(output).read_text())
    resumed = {m["name"]: m["resumed"] for m in summary["molecules"]}
    assert resumed == {"H2O": False, "NH3": True}
    assert ammonia_part.stat().st_mtime_ns == ammonia_mtime
    # Seeded per molecule: the redone molecule's frames are the same as the first time.
    assert water_part.read_text() == original_water
    assert output.read_text() == (source_dir / "corpus.extxyz").read_text()
    # Different label settings must not mix with the finished parts.
    argv[argv.index("--md-frames") + 1] = "4"
    assert main(argv) == 2


def test_failing_molecules_are_reported_and_skipped(tmp_path: Path) -> None:
    require_module("tblite")
    require_module("rdkit")
    radical = write_xyz(tmp_path, "methyl", molecule("CH3"))
    uranium = write_xyz(tmp_path, "uranium", Atoms("U2", positions=[[0, 0, 0], [0, 0, 2.5]]))
    specs = smiles_molecules(["C1CC", "O"]) + structure_file_molecules([radical, uranium])
    report = generate(specs, fast_config(workers=2, temperatures_k=(300.0,)), tmp_path / "c.extxyz", progress=False)
    status = {r.name: (r.status, r.error) for r in report.results}
    assert status["O"] == ("ok", "")
    assert status["C1CC"][0] == "failed" and "cannot parse SMILES" in status["C1CC"][1]
    assert status["methyl"][0] == "failed" and "closed-shell" in status["methyl"][1]
    assert status["uranium"][0] == "failed" and "86" in status["uranium"][1]
    frames = ase.io.read(tmp_path / "c.extxyz", index=":")
    assert {f.info["molecule"] for f in frames} == {"O"}
    assert {f.info["source"] for f in frames} == {"smiles:O"}
    summary = json.loads(summary_path(tmp_path / "c.extxyz").read_text())
    assert summary["totals"]["failed"] == 3
    assert "cannot parse" in next(m["error"] for m in summary["molecules"] if m["name"] == "C1CC")


@pytest.fixture
def pyscf_one_thread() -> Iterator[None]:
    """pyscf on one OpenMP thread: on a busy 2-core machine two threads are several times slower."""
    lib = require_module("pyscf.lib")
    previous = lib.num_threads()
    lib.num_threads(1)
    yield
    lib.num_threads(previous)


class ExitOnUnpickle:
    """Kills the process that unpickles it: a worker dying the way a crash in a native library would."""

    def __reduce__(self):
        return (os._exit, (3,))


def test_a_dead_worker_fails_only_its_molecule(tmp_path: Path) -> None:
    require_module("tblite")
    good = structure_file_molecules([write_xyz(tmp_path, "water", molecule("H2O"))])
    crash = structure_file_molecules([write_xyz(tmp_path, "ammonia", molecule("NH3"))])
    crash[0].info["poison"] = ExitOnUnpickle()
    config = fast_config(workers=2, temperatures_k=(300.0,), md_frames=1)
    report = generate(crash + good, config, tmp_path / "c.extxyz", progress=False)
    status = {r.name: (r.status, r.error) for r in report.results}
    assert status["water"] == ("ok", "")
    assert status["ammonia"][0] == "failed" and "worker process died" in status["ammonia"][1]
    assert {f.info["molecule"] for f in ase.io.read(tmp_path / "c.extxyz", index=":")} == {"water"}


@pytest.mark.parametrize("auxbasis", [None, "def2-universal-jfit"])
def test_pyscf_calculator_matches_pyscf_and_finite_differences(pyscf_one_thread: None, auxbasis: str | None) -> None:
    from pyscf import dft, gto

    from mlff.data.pyscf_calc import PySCFCalculator, PySCFSettings

    numbers = [8, 1, 1]
    positions = np.array([[0.0, 0.0, 0.1], [0.78, 0.0, -0.47], [-0.74, 0.05, -0.45]])
    settings = PySCFSettings(basis="sto-3g", auxbasis=auxbasis)
    atoms = Atoms(numbers=numbers, positions=positions)
    atoms.calc = PySCFCalculator(settings)
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()

    mol = gto.M(atom=list(zip(numbers, positions.tolist())), unit="Angstrom", basis="sto-3g", verbose=0)
    mf = dft.RKS(mol)
    mf.xc, mf.conv_tol = "pbe", 1e-10
    if auxbasis is not None:
        mf = mf.density_fit(auxbasis=auxbasis)
    direct_energy = mf.kernel()
    gradient = mf.nuc_grad_method()
    gradient.grid_response = True
    direct_forces = -gradient.kernel() * HARTREE_PER_BOHR_TO_EV_PER_ANGSTROM
    assert energy == pytest.approx(direct_energy * HARTREE_TO_EV, abs=1e-6)
    np.testing.assert_allclose(forces, direct_forces, atol=1e-5)

    step = 1e-3
    displaced = atoms.copy()
    displaced.calc = atoms.calc  # reusing the calculator reuses its density matrix as the SCF guess
    for atom, axis in ((0, 2), (1, 0), (2, 1)):
        shifted = []
        for sign in (1, -1):
            displaced.positions = positions
            displaced.positions[atom, axis] += sign * step
            shifted.append(displaced.get_potential_energy())
        assert -(shifted[0] - shifted[1]) / (2 * step) == pytest.approx(forces[atom, axis], abs=5e-4)


def test_pbe_labeller_reproduces_rmd17_labels(pyscf_one_thread: None) -> None:
    """rMD17's ORCA labels used RI-J: the default labeller matches them, the exact Coulomb does not."""
    from ase.units import kcal, mol

    from mlff.data.pyscf_calc import PySCFCalculator, PySCFSettings

    frames = np.load(Path(__file__).parent / "data" / "check_frames" / "ethanol.npz")
    atoms = Atoms(numbers=frames["z"], positions=frames["R"][0])
    reference_energy, reference_forces = frames["E"][0] * kcal / mol, frames["F"][0] * kcal / mol
    atoms.calc = generate_module.make_calculator("pbe/def2-svp")
    assert abs(atoms.get_potential_energy() - reference_energy) < 1.5e-3  # eV; measured 0.8 meV
    assert np.abs(atoms.get_forces() - reference_forces).mean() < 0.6e-3  # eV/A; measured 0.35 meV/A
    atoms.calc = PySCFCalculator(PySCFSettings(auxbasis=None))
    assert atoms.get_potential_energy() - reference_energy > 4e-3  # the 6-7 meV the exact Coulomb gives


def test_minimize_gives_a_minimum_in_dataset_atom_order(tmp_path: Path) -> None:
    require_module("pyscf")
    numbers = np.array([1, 8, 1])  # hydrogen first: the order must survive
    positions = np.array([[[0.8, 0.0, -0.5], [0.0, 0.0, 0.1], [-0.7, 0.05, -0.45]]] * 2)
    dataset = tmp_path / "rmd17_water.npz"
    np.savez(dataset, z=numbers, R=positions, E=np.zeros(2), F=np.zeros((2, 3, 3)))
    output = tmp_path / "minima.extxyz"
    argv = ["data", "minimize", str(dataset), "--frames", "1", "--basis", "sto-3g", "--no-progress"]
    assert main([*argv, "--fmax", "0.005", "-o", str(output)]) == 0
    (frame,) = ase.io.read(output, index=":")
    assert frame.info["equilibrium"] is True
    assert (frame.info["method"], frame.info["molecule"], frame.info["dataset_frame"]) == ("pbe/sto-3g", "water", 1)
    assert frame.info["source"] == f"dataset:{dataset}#1"
    assert list(frame.numbers) == [1, 8, 1]
    assert np.sqrt((frame.get_forces() ** 2).sum(axis=1)).max() < 0.005
    assert 0.95 < frame.get_distance(1, 0) < 1.1 and 90 < frame.get_angle(0, 1, 2) < 110


def test_same_minimum_ignores_permutation_and_mirror_images() -> None:
    from ase.calculators.singlepoint import SinglePointCalculator

    from mlff.data.generate import same_minimum

    def labelled(atoms: Atoms, energy: float) -> Atoms:
        atoms.calc = SinglePointCalculator(atoms, energy=energy)
        return atoms

    ethanol = molecule("CH3CH2OH")
    mirror = ethanol.copy()
    mirror.positions[:, 0] *= -1
    permuted = ethanol[[0, 1, 2, 3, 4, 5, 7, 6, 8]]  # two methyl hydrogens swapped
    twisted = ethanol.copy()
    twisted.set_dihedral(0, 1, 2, 3, 60.0)  # another conformer: the OH hydrogen rotated from trans to gauche
    assert same_minimum(labelled(ethanol, -1.0), labelled(mirror, -1.0))
    assert same_minimum(labelled(ethanol.copy(), -1.0), labelled(permuted, -1.0))
    assert not same_minimum(labelled(ethanol.copy(), -1.0), labelled(twisted, -1.0))
    assert not same_minimum(labelled(ethanol.copy(), -1.0), labelled(mirror.copy(), -0.9))


def test_g2_selection_is_closed_shell_hcno() -> None:
    specs = g2_molecules()
    names = {spec.name for spec in specs}
    assert len(specs) == 61
    assert {"H2O", "CH3CH2OH", "C6H6", "CH2_s1A1d"} <= names
    assert not names & {"O2", "CH2_s3B1d", "CH3", "NO", "OH", "PH3", "SiH4", "CH3Cl"}
    assert all(set(spec.numbers) <= {1, 6, 7, 8} and spec.numbers.sum() % 2 == 0 for spec in specs)
    assert len({spec.key for spec in specs}) == len(specs)


def test_names_and_sources_survive_extxyz() -> None:
    assert extxyz_safe("C/C=C\\C") == "C/C=C%5CC"
    assert extxyz_safe("F") == "mol_F"  # the SMILES of HF would read back as the boolean False
    assert extxyz_safe("1") == "mol_1"
    spec = smiles_molecules(["C/C=C\\C", "F"])
    atoms = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]])
    for s in spec:
        atoms.info.update(molecule=s.name, source=s.source)
        buffer = io.StringIO()
        ase.io.write(buffer, atoms, format="extxyz")
        back = ase.io.read(io.StringIO(buffer.getvalue()), format="extxyz")
        assert (back.info["molecule"], back.info["source"]) == (s.name, s.source)


def test_smiles_file_and_embedding(tmp_path: Path) -> None:
    path = tmp_path / "list.txt"
    path.write_text("# comment\nCCO ethanol\n\nc1ccccc1   # benzene, unnamed\nN#Cc1ccccc1 benzonitrile # C#N\n")
    assert read_smiles_file(path) == (["CCO", "c1ccccc1", "N#Cc1ccccc1"], ["ethanol", None, "benzonitrile"])
    require_module("rdkit")
    from mlff.data.molecules import embed_smiles

    numbers, geometries = embed_smiles("CCO", 3, seed=1)
    assert sorted(numbers.tolist()) == [1] * 6 + [6, 6, 8] and len(geometries) == 3
    with pytest.raises(ValueError, match="net charge"):
        embed_smiles("[NH4+]", 1, seed=1)


def test_config_and_cli_checks(tmp_path: Path) -> None:
    assert cli_data.METHODS == generate_module.METHODS
    with pytest.raises(ValueError, match="basis"):
        GenerateConfig(method="gfn2-xtb", basis="sto-3g")
    with pytest.raises(ValueError, match="unknown method"):
        GenerateConfig(method="b3lyp")
    assert GenerateConfig(method="pbe/def2-svp", basis="sto-3g").method_label == "pbe/sto-3g"
    assert main(["data", "generate", "-o", str(tmp_path / "x.extxyz")]) == 2  # no molecules
    with pytest.raises(ValueError, match="no molecules"):
        generate([], fast_config(), tmp_path / "x.extxyz")
    spec = MoleculeSpec(name="a", source="xyz:a#0")
    assert spec.seed(0) == MoleculeSpec(name="b", source="xyz:a#0").seed(0) != spec.seed(1)


def test_missing_package_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(MissingDependencyError, match=r"mlff\[generate\]"):
        import_optional("mlff_no_such_package.sub", "testing")
    monkeypatch.setitem(sys.modules, "tblite", None)  # as if not installed
    xyz = write_xyz(tmp_path, "water", molecule("H2O"))
    assert main(["data", "generate", "--xyz", str(xyz), "-o", str(tmp_path / "c.extxyz")]) == 2
    assert "the gfn2-xtb method needs the package 'tblite'" in capsys.readouterr().err
    assert not (tmp_path / "c.extxyz").exists()


def test_results_table_has_a_column_per_temperature_and_names_failures() -> None:
    done = generate_module.MoleculeResult(
        name="water",
        source="xyz:w#0",
        key="w",
        status="ok",
        atoms=3,
        equilibrium_frames=2,
        md_frames={"300": 5, "500": 4},
        seconds=1.25,
        resumed=True,
    )
    failed = generate_module.MoleculeResult(name="methyl", source="smiles:[CH3]", key="m", error="not closed-shell")
    table = generate_module.format_table([done, failed], [300.0, 500.0])
    header, first, second = (line.split() for line in table.splitlines())
    assert header == ["molecule", "atoms", "eq", "md@300K", "md@500K", "frames", "s", "status"]
    assert first == ["water", "3", "2", "5", "4", "11", "1.2", "ok", "(resumed)"]
    assert second[:7] == ["methyl", "0", "0", "0", "0", "0", "0.0"]
    assert " ".join(second[7:]) == "FAILED: not closed-shell"


def test_mlff_data_generate_gfn1_labels_a_periodic_box_periodically(tmp_path: Path) -> None:
    """`--method gfn1-xtb` on a 2-water box (4.5 A): GFN1 labels of the box with its images, method recorded."""
    require_module("tblite")
    box = molecule("H2O")
    box.positions += 1.0
    second = molecule("H2O")
    second.rotate(90, "x")
    second.positions += 3.2
    box += second
    box.cell, box.pbc = np.eye(3) * 4.5, True
    ase.io.write(tmp_path / "box.extxyz", box, format="extxyz")
    output = tmp_path / "gfn1.extxyz"
    argv = ["data", "generate", "--method", "gfn1-xtb", "--xyz", str(tmp_path / "box.extxyz"), "--temperatures"]
    argv += ["300", "--md-frames", "2", "--equilibration-steps", "0", "--sample-every", "1"]
    assert main([*argv, "--no-progress", "-o", str(output)]) == 0
    frames = ase.io.read(output, ":")
    assert len(frames) == 2 and all(f.info["method"] == "gfn1-xtb" and f.pbc.all() for f in frames)
    frame = frames[-1]
    periodic = Atoms(numbers=frame.numbers, positions=frame.positions, cell=frame.cell, pbc=True)
    periodic.calc = generate_module.make_calculator("gfn1-xtb")
    assert periodic.get_potential_energy() == pytest.approx(frame.get_potential_energy(), abs=1e-6)
    np.testing.assert_allclose(periodic.get_forces(), frame.get_forces(), atol=1e-5)
    # The images matter in this box: without them the labels would differ.
    isolated = Atoms(numbers=frame.numbers, positions=frame.positions)
    isolated.calc = generate_module.make_calculator("gfn1-xtb")
    assert np.abs(isolated.get_forces() - frame.get_forces()).max() > 1e-3
    with pytest.raises(ValueError, match="basis"):
        GenerateConfig(method="gfn1-xtb", basis="sto-3g")


class _KilledAfter(Exception):
    pass


def _emt_killed_after(calls: int):
    """An EMT calculator that raises after `calls` force evaluations (a kill in the middle of an MD run)."""
    from ase.calculators.emt import EMT

    class Killed(EMT):
        count = 0

        def calculate(self, *args, **kwargs):
            Killed.count += 1
            if Killed.count > calls:
                raise _KilledAfter
            super().calculate(*args, **kwargs)

    return Killed()


@pytest.mark.parametrize("periodic", [False, True])
def test_an_md_run_killed_midway_resumes_to_the_uninterrupted_frames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, periodic: bool
) -> None:
    from ase.calculators.emt import EMT

    monkeypatch.setattr(generate_module, "MD_CHECKPOINT_SECONDS", 0.0)  # a checkpoint after every chunk
    start = molecule("CH3CH2OH")
    if periodic:
        start.set_cell(np.eye(3) * 6.0)
        start.pbc = True
    config = fast_config(md_frames=6, equilibration_steps=5, sample_every=2)
    whole = generate_module.md_frames(start, EMT(), 600.0, config, np.random.default_rng(7))
    checkpoint = tmp_path / "run.md0.npz"
    with pytest.raises(_KilledAfter):
        generate_module.md_frames(start, _emt_killed_after(9), 600.0, config, np.random.default_rng(7), checkpoint)
    assert checkpoint.is_file()
    # The rerun's generator starts where the first run's did; the checkpoint carries it on.
    resumed = generate_module.md_frames(start, EMT(), 600.0, config, np.random.default_rng(7), checkpoint)
    assert len(resumed) == len(whole) == 6
    for a, b in zip(whole, resumed, strict=True):
        np.testing.assert_allclose(b.positions, a.positions, rtol=0, atol=1e-10)
        np.testing.assert_allclose(b.get_forces(), a.get_forces(), rtol=0, atol=1e-10)
        assert b.get_potential_energy() == pytest.approx(a.get_potential_energy(), abs=1e-10)
    with pytest.raises(ValueError, match="another run"):
        generate_module.md_frames(start, EMT(), 300.0, config, np.random.default_rng(7), checkpoint)
