"""Potential files: TorchScript equals the eager model, metadata, dtypes, bad files."""

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import TINY_SPECIES, build_tiny_model, tiny_config

from mlff._version import __version__
from mlff.export import (
    POTENTIAL_FORMAT,
    POTENTIAL_FORMAT_VERSION,
    PotentialError,
    export_model,
    load_potential,
    read_metadata,
)
from mlff.export.load import is_potential_file

pytestmark = pytest.mark.usefixtures("single_thread")


def v1_inputs(*molecules, dtype=torch.float64):
    """The v1 forward's arguments for a batch of (numbers, positions) molecules."""
    numbers = np.concatenate([z for z, _ in molecules])
    positions = np.concatenate([r for _, r in molecules])
    batch = np.repeat(np.arange(len(molecules)), [len(z) for z, _ in molecules])
    return (
        torch.tensor(positions, dtype=dtype),
        torch.tensor(numbers, dtype=torch.long),
        torch.tensor(batch, dtype=torch.long),
        torch.zeros(len(molecules), 3, 3, dtype=dtype),
        torch.zeros(len(molecules), 3, dtype=torch.bool),
    )


def eager(model, inputs):
    energy, forces = model(*inputs)
    return energy.detach(), forces.detach()


def save_plain_torchscript(path, extra_files=None):
    """A TorchScript file that is not an mlff potential (optionally with extra files)."""
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 1)), str(path), _extra_files=extra_files or {})
    return path


@pytest.mark.parametrize("which", ["one", "two"])
def test_exported_potential_equals_eager_model(tiny_model, potential_file, methanol, water, which):
    molecules = (methanol,) if which == "one" else (methanol, water)
    inputs = v1_inputs(*molecules)
    expected_energy, expected_forces = eager(tiny_model, inputs)
    energy, forces = load_potential(potential_file)(*inputs)
    assert energy.dtype == torch.float64 and energy.shape == (len(molecules),)
    assert forces.dtype == torch.float64 and forces.shape == inputs[0].shape
    torch.testing.assert_close(energy, expected_energy, rtol=1e-6, atol=0.0)
    torch.testing.assert_close(forces, expected_forces, rtol=1e-6, atol=1e-12)
    assert float(forces.abs().max()) > 1e-6


def test_file_runs_with_plain_torch_jit_load(tmp_path, tiny_model, potential_file, methanol, water):
    inputs = v1_inputs(methanol, water)
    torch.save(inputs, tmp_path / "inputs.pt")
    script = """
import json, sys
import torch
torch.set_num_threads(1)
extra = {"mlff_metadata.json": ""}
module = torch.jit.load(sys.argv[1], _extra_files=extra)
energy, forces = module(*torch.load(sys.argv[2]))
torch.save((energy.detach(), forces.detach()), sys.argv[3])
checks = {"mlff_after_jit_load": "mlff" in sys.modules, "species": json.loads(extra["mlff_metadata.json"])["species"]}
from mlff.export import load_potential
load_potential(sys.argv[1])
checks["model_code_for_loading"] = sorted(
    name for name in sys.modules if name.startswith(("mlff.models", "mlff.training", "mlff.checkpoint"))
)
print(json.dumps(checks))
"""
    completed = subprocess.run(
        [sys.executable, "-c", script, str(potential_file), str(tmp_path / "inputs.pt"), str(tmp_path / "out.pt")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    checks = json.loads(completed.stdout.strip().splitlines()[-1])
    assert checks == {"mlff_after_jit_load": False, "species": TINY_SPECIES, "model_code_for_loading": []}
    energy, forces = torch.load(tmp_path / "out.pt")
    expected_energy, expected_forces = eager(tiny_model, inputs)
    torch.testing.assert_close(energy, expected_energy, rtol=1e-6, atol=0.0)
    torch.testing.assert_close(forces, expected_forces, rtol=1e-6, atol=1e-12)


def test_import_mlff_imports_no_torch():
    script = "import sys, mlff; assert mlff.__version__; print('torch' in sys.modules)"
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "False"


def test_metadata_round_trip(tmp_path, tiny_model):
    extra = {
        "training_data": {"source": "ethanol.npz", "frames": 1000},
        "test_metrics": {"energy_mae_mev": 1.25, "force_mae_mev_per_a": np.float64(10.5)},
        "reference": {"positions": np.zeros((2, 3)), "numbers": np.array([1, 8])},
    }
    path = export_model(tiny_model, tmp_path / "p.pt", extra, config=tiny_config())
    metadata = read_metadata(path)
    assert metadata["format"] == POTENTIAL_FORMAT and metadata["format_version"] == POTENTIAL_FORMAT_VERSION
    assert metadata["mlff_version"] == __version__
    assert metadata["species"] == TINY_SPECIES and metadata["cutoff"] == 5.0 and metadata["dtype"] == "float64"
    assert metadata["units"] == {"energy": "eV", "length": "Angstrom", "forces": "eV/Angstrom"}
    assert metadata["model"]["backbone"] == "egnn" and metadata["model"]["encoding"] == "spline"
    assert metadata["model"]["config"] == dataclasses.asdict(tiny_config())
    assert metadata["model"]["parameters"] == sum(p.numel() for p in tiny_model.parameters())
    assert metadata["training_data"] == extra["training_data"]
    assert metadata["test_metrics"] == {"energy_mae_mev": 1.25, "force_mae_mev_per_a": 10.5}
    assert metadata["reference"] == {"positions": [[0.0] * 3] * 2, "numbers": [1, 8]}
    potential = load_potential(path)
    assert potential.metadata == metadata
    assert potential.species == TINY_SPECIES and potential.cutoff == 5.0
    assert potential.dtype == torch.float64 and potential.device == torch.device("cpu")


def test_export_rejects_reserved_and_unserialisable_metadata(tmp_path, tiny_model):
    with pytest.raises(ValueError, match="species"):
        export_model(tiny_model, tmp_path / "p.pt", {"species": [1]})
    with pytest.raises(ValueError, match="object"):
        export_model(tiny_model, tmp_path / "p.pt", {"note": object()})
    assert not list(tmp_path.iterdir())


def test_export_leaves_the_model_alone(tmp_path):
    model = build_tiny_model().train()
    export_model(model, tmp_path / "p.pt", dtype="float32")
    assert model.training
    assert all(p.dtype == torch.float64 for p in model.parameters())


def test_float32_file_and_dtype_conversion(tmp_path, tiny_model, potential_file, methanol):
    inputs = v1_inputs(methanol)
    expected_energy, expected_forces = eager(tiny_model, inputs)
    path32 = export_model(tiny_model, tmp_path / "p32.pt", dtype="float32")
    potential32 = load_potential(path32)
    assert read_metadata(path32)["dtype"] == "float32" and potential32.dtype == torch.float32
    energy, forces = potential32(*inputs)
    assert energy.dtype == torch.float64 and forces.dtype == torch.float32
    # Reference energies stay exact int64 nano-eV: only the ~0.5 eV network part is float32.
    torch.testing.assert_close(energy, expected_energy, rtol=0.0, atol=1e-5)
    torch.testing.assert_close(forces.double(), expected_forces, rtol=1e-4, atol=1e-8)

    converted = load_potential(potential_file, dtype="float32")
    assert converted.dtype == torch.float32
    energy, forces = converted(*inputs)
    assert forces.dtype == torch.float32
    torch.testing.assert_close(energy, expected_energy, rtol=0.0, atol=1e-5)
    converted.to(dtype=torch.float64)
    energy, forces = converted(*inputs)
    assert converted.dtype == torch.float64 and forces.dtype == torch.float64
    torch.testing.assert_close(energy, expected_energy, rtol=1e-6, atol=0.0)
    torch.testing.assert_close(forces, expected_forces, rtol=1e-6, atol=1e-12)


def test_energy_and_forces_of_one_structure(tiny_model, potential_file, methanol):
    expected_energy, expected_forces = eager(tiny_model, v1_inputs(methanol))
    energy, forces = load_potential(potential_file).energy_and_forces(*methanol)
    assert isinstance(energy, float) and forces.dtype == np.float64 and forces.shape == (6, 3)
    assert energy == pytest.approx(float(expected_energy[0]), rel=1e-12)
    np.testing.assert_allclose(forces, expected_forces.numpy(), rtol=1e-6, atol=1e-12)


def test_bad_input_gives_the_model_message(potential_file, methanol):
    potential = load_potential(potential_file)
    numbers, positions = methanol
    with pytest.raises(ValueError, match=r"atomic number 9 is not among the potential's species \[1, 6, 8\]"):
        potential.energy_and_forces(np.array([9, 8, 1, 1, 1, 1]), positions)
    with pytest.raises(ValueError, match="positions \\[n, 3\\]"):
        potential.energy_and_forces(numbers, positions[:3])


def test_missing_file(tmp_path):
    with pytest.raises(PotentialError, match="no potential file .*absent.pt.* shipped: aspirin"):
        load_potential(tmp_path / "absent.pt")
    with pytest.raises(FileNotFoundError, match="absent.pt"):
        read_metadata(tmp_path / "absent.pt")


def test_truncated_file(tmp_path, potential_file):
    data = potential_file.read_bytes()
    (tmp_path / "half.pt").write_bytes(data[: len(data) // 2])
    for read in (load_potential, read_metadata):
        with pytest.raises(PotentialError, match="truncated or corrupt"):
            read(tmp_path / "half.pt")


def test_torchscript_without_metadata(tmp_path):
    path = save_plain_torchscript(tmp_path / "plain.pt")
    with pytest.raises(PotentialError, match="not an mlff potential"):
        load_potential(path)


def test_torch_save_file_is_not_a_potential(tmp_path):
    torch.save({"format": "mlff-checkpoint"}, tmp_path / "checkpoint.pt")
    with pytest.raises(PotentialError, match="not a TorchScript file.*mlff export"):
        load_potential(tmp_path / "checkpoint.pt")


def test_potential_files_are_told_from_checkpoints_by_content(tmp_path, potential_file):
    checkpoint = tmp_path / "potential-looking-name.pt"
    torch.save({"format": "mlff-checkpoint"}, checkpoint)
    (tmp_path / "notes.pt").write_text("not a model")
    assert is_potential_file(potential_file) and is_potential_file(save_plain_torchscript(tmp_path / "plain.pt"))
    assert not is_potential_file(checkpoint)
    assert not is_potential_file(tmp_path / "notes.pt") and not is_potential_file(tmp_path / "absent.pt")


def test_unknown_format_version(tmp_path):
    metadata = {"format": POTENTIAL_FORMAT, "format_version": 3, "species": [1], "cutoff": 5.0, "dtype": "float64"}
    path = save_plain_torchscript(tmp_path / "future.pt", {"mlff_metadata.json": json.dumps(metadata)})
    with pytest.raises(PotentialError, match="format version 3 .*reads format versions 1, 2"):
        load_potential(path)


def test_unknown_format(tmp_path):
    path = save_plain_torchscript(tmp_path / "other.pt", {"mlff_metadata.json": json.dumps({"format": "other"})})
    with pytest.raises(PotentialError, match="not an mlff potential .*'other'"):
        read_metadata(path)
