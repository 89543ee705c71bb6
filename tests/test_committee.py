"""Committee: K members trained in one run, exported as one file (mean forward + force spread)."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from synthetic import TINY_TRAINING_OVERRIDES, write_md17_npz

from mlff.calculators.ase import MLFFCalculator
from mlff.checkpoint import load_checkpoint, model_from_checkpoint
from mlff.cli.main import main
from mlff.export import load_potential
from mlff.export.committee import export_committee
from mlff.training import load_config, train

COMMITTEE = [*TINY_TRAINING_OVERRIDES, "train.committee=2", "train.committee_bootstrap=true", "train.epochs=1"]

WITHOUT_MLFF = r"""
import json, sys
sys.modules["mlff"] = None
import torch
extra = {"mlff_metadata.json": ""}
module = torch.jit.load(sys.argv[1], map_location="cpu", _extra_files=extra)
positions = torch.tensor(json.loads(sys.argv[2]), dtype=torch.float64)
n = positions.shape[0]
args = (positions, torch.tensor(json.loads(sys.argv[3])), torch.zeros(n, dtype=torch.long),
        torch.zeros(1, 3, 3, dtype=torch.float64), torch.zeros(1, 3, dtype=torch.bool))
energy, forces = module(*args)
_, _, spread = module.energy_forces_spread(*args)
print(json.dumps({"members": json.loads(extra["mlff_metadata.json"])["committee"]["members"],
                  "energy": energy.tolist(), "forces": forces.tolist(), "spread": spread.tolist()}))
"""


@pytest.fixture(scope="module")
def committee_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("committee")
    data = write_md17_npz(root / "mol.npz", num_frames=40)
    config = load_config(None, [*COMMITTEE, f"data.path={data}", f"output_dir={root / 'run'}"])
    result = train(config, progress=False)
    return root, data, config, result


def test_committee_training_writes_members_and_resumes(committee_run):
    root, data, config, result = committee_run
    run = root / "run"
    manifest = json.loads((run / "committee.json").read_text())
    assert [m["seed"] for m in manifest["members"]] == [0, 1]
    assert (run / "member_0" / "best.pt").is_file() and (run / "member_1" / "best.pt").is_file()
    first, second = (load_checkpoint(run / f"member_{k}" / "last.pt") for k in range(2))
    assert first["config"]["train"]["seed"] == 0 and second["config"]["train"]["seed"] == 1
    with pytest.raises(ValueError, match="already holds a run"):
        train(config, progress=False)
    # Lose member 1's finish: a resume skips member 0 and continues member 1 for one more epoch.
    (run / "member_1" / "results.json").unlink()
    longer = load_config(None, [*COMMITTEE, f"data.path={data}", f"output_dir={run}", "train.epochs=2"])
    resumed = train(longer, resume=True, progress=False)
    assert load_checkpoint(run / "member_0" / "last.pt")["epoch"] == 1
    assert load_checkpoint(run / "member_1" / "last.pt")["epoch"] == 2
    assert resumed.epochs_run == 2


def test_committee_file_is_the_mean_of_its_members_and_their_spread(committee_run, tmp_path):
    root, data, _, _ = committee_run
    members = [root / "run" / f"member_{k}" / "best.pt" for k in range(2)]
    path = export_committee(members, tmp_path / "committee.pt")
    potential = load_potential(path)
    assert potential.is_committee and potential.metadata["committee"]["members"] == 2
    threshold = potential.metadata["committee"]["spread_threshold_ev_per_a"]
    assert threshold > 0
    models = [model_from_checkpoint(load_checkpoint(m)).double().eval() for m in members]
    frames = np.load(data)
    numbers = torch.as_tensor(frames["z"], dtype=torch.long)
    positions = torch.as_tensor(frames["R"][:3].reshape(-1, 3), dtype=torch.float64)
    n = numbers.numel()
    args = (
        positions,
        numbers.repeat(3),
        torch.arange(3).repeat_interleave(n),
        torch.zeros(3, 3, 3, dtype=torch.float64),
        torch.zeros(3, 3, dtype=torch.bool),
    )
    outputs = [model(*args) for model in models]
    energies = torch.stack([e.detach() for e, _ in outputs])
    forces = torch.stack([f.detach() for _, f in outputs])
    energy, mean_forces = potential(*args)
    torch.testing.assert_close(energy, energies.mean(0))
    torch.testing.assert_close(mean_forces, forces.mean(0))
    _, _, spread = potential.energy_forces_spread(*args)
    expected = torch.linalg.norm(forces.std(dim=0, unbiased=False), dim=-1)
    torch.testing.assert_close(spread, expected)
    assert spread.abs().max() > 0
    # The ASE calculator reports the spread of a committee file.
    from ase import Atoms

    atoms = Atoms(numbers=frames["z"], positions=frames["R"][0])
    atoms.calc = MLFFCalculator(path)
    atoms.get_forces()
    np.testing.assert_allclose(atoms.calc.results["force_spread"], expected[:n].numpy(), atol=1e-10)

    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            WITHOUT_MLFF,
            str(path),
            json.dumps(frames["R"][0].tolist()),
            json.dumps(frames["z"].tolist()),
        ],
        capture_output=True,
        text=True,
        cwd=path.anchor,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    plain = json.loads(completed.stdout.splitlines()[-1])
    assert plain["members"] == 2
    np.testing.assert_allclose(plain["forces"], forces.mean(0)[:n].numpy(), atol=1e-10)
    np.testing.assert_allclose(plain["spread"], expected[:n].numpy(), atol=1e-10)


def test_mlff_export_of_a_committee_run_folder(committee_run, tmp_path, capsys):
    root, _, _, _ = committee_run
    output = tmp_path / "c.pt"
    assert main(["export", str(root / "run"), "-o", str(output)]) == 0
    assert "committee of 2 members" in capsys.readouterr().out
    assert load_potential(output).metadata["committee"]["members"] == 2
    assert main(["export", "--committee", str(root / "run" / "member_0" / "best.pt"), "-o", str(tmp_path / "x.pt")])
    assert "at least 2 checkpoints" in capsys.readouterr().err


def test_md_observers_see_the_committee_spread(committee_run, tmp_path):
    from mlff.dynamics.observers import SpreadObserver
    from mlff.dynamics.runner import load_structures, run_md
    from mlff.dynamics.selection import SelectionObserver
    from mlff.dynamics.settings import MDSettings

    root, _, _, _ = committee_run
    path = export_committee([root / "run" / f"member_{k}" / "best.pt" for k in range(2)], tmp_path / "c.pt")
    metadata = load_potential(path).metadata
    settings = MDSettings(steps=20, save_every=5, replicas=2, temperature_k=300.0)
    systems = load_structures([], {"reference": metadata["reference"]}, settings.replicas)
    spread = SpreadObserver()
    selection = SelectionObserver.for_run(systems, metadata["reference"], metadata, spread_threshold_ev_per_a=1e-9)
    summary = run_md(path, settings=settings, observers=[spread, selection])
    seen = summary["observers"]["force_spread"]
    assert seen["committee"] and seen["frames"] == 4 and seen["largest_ev_per_a"] > 0
    assert selection.spread_threshold_ev_per_a == 1e-9
    assert summary["observers"]["selection"]["candidates"] >= 1
    # Defaults: the threshold fitted on the training frames at export.
    default = SelectionObserver.for_run(systems, metadata["reference"], metadata)
    assert default.spread_threshold_ev_per_a == metadata["committee"]["spread_threshold_ev_per_a"]


def test_mlff_md_select_writes_the_candidates_and_logs_the_spread(committee_run, tmp_path, capsys):
    import ase.io

    root, _, _, _ = committee_run
    path = export_committee([root / "run" / f"member_{k}" / "best.pt" for k in range(2)], tmp_path / "c.pt")
    out = tmp_path / "candidates.extxyz"
    arguments = ["md", str(path), "--steps", "20", "--save-every", "5", "--replicas", "2", "--no-progress"]
    assert main([*arguments, "--select", str(out), "--spread-threshold", "1e-9", "--max-candidates", "3"]) == 0
    printed = capsys.readouterr().out
    assert "committee force spread: largest" in printed and "selection: 3 candidate frames" in printed
    frames = ase.io.read(out, index=":")
    assert len(frames) == 3 and all(f.info["reason"] == "spread" for f in frames)
    assert all(f.info["force_spread_ev_per_a"] > 1e-9 for f in frames)


def test_the_compiled_engine_runs_a_committee_file(committee_run, tmp_path):
    """`eager_model_from_file` rebuilds a committee; the traced padded graph (the compiled engine's,
    uncompiled here) steps as the torch engine does on the TorchScript committee."""
    from mlff.dynamics.compiled import CompiledTorchEngine
    from mlff.dynamics.runner import load_structures
    from mlff.dynamics.settings import MDSettings
    from mlff.dynamics.torch_engine import TorchEngine
    from mlff.export.deploy import eager_model_from_file

    root, _, _, _ = committee_run
    path = export_committee([root / "run" / f"member_{k}" / "best.pt" for k in range(2)], tmp_path / "c.pt")
    potential = load_potential(path)
    rebuilt = eager_model_from_file(path)
    assert len(rebuilt.members) == 2
    settings = MDSettings(temperature_k=300.0, thermostat="langevin", friction_per_fs=0.01, seed=3, replicas=2)
    systems = load_structures([], {"reference": potential.metadata["reference"]}, settings.replicas)
    eager = TorchEngine(potential, systems, settings)
    traced = CompiledTorchEngine(potential, systems, settings, compile=False)
    eager.advance(10)
    traced.advance(10)
    scale = float(eager.state.forces.abs().max())
    assert scale > 0
    torch.testing.assert_close(traced.state.forces, eager.state.forces, rtol=0, atol=1e-5 * scale)
    torch.testing.assert_close(traced.state.positions, eager.state.positions, rtol=0, atol=1e-6)
