"""Compiled potentials: a `torch.export` + AOTInductor package beside the TorchScript file.

`export_aoti` traces the energy model of isolated molecules with its forces inside the graph
(`EnergyModel.energy_forces_molecules`: the autograd backward is traced by `make_fx` first,
because `torch.export` of a graph calling `torch.autograd.grad` leaves fake tensors among its
constants in torch 2.12), exports it with a dynamic number of atoms and of structures, and
compiles it with AOTInductor for one device. The package is a zip like the TorchScript file; it
carries the same metadata at `<archive>/extra/mlff_metadata.json`, plus `container: "aoti"`,
the device kind and the torch version it was built for (AOTInductor code runs only on those).

The forward is the file contract v2 restricted to molecules: pbc must be all false (metadata
`periodic: false`, `stress: false`); periodic structures keep the TorchScript file.

`AOTIModule` is the runtime side (needs torch only): the loaded package called like the
TorchScript module, with the input checks in Python (`mlff.export.inputs`).
"""

import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from mlff.export.inputs import check_inputs
from mlff.export.load import DTYPES, METADATA_FILE, PotentialError
from mlff.utils import atomic_write, to_json

AOTI_CONTAINER = "aoti"
# A file of this name inside the archive marks an AOTInductor package.
AOTI_MARKER = "/data/aotinductor/"
_METADATA_ENTRY = "extra/" + METADATA_FILE
_ARCHIVE_ROOT = "mlff_potential"
_FILE_MODE = 0o644


def is_aoti_archive(names: list[str]) -> bool:
    """Whether the zip entries `names` are an AOTInductor package's."""
    return any(AOTI_MARKER in name for name in names)


def metadata_entry(names: list[str]) -> str | None:
    """The archive entry holding the mlff metadata of a package, or None."""
    return next((name for name in names if name.endswith("/" + _METADATA_ENTRY)), None)


def _example_molecules(
    species: list[int], dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two molecules of 7 atoms (3 B, 4 A apart) to trace with: sizes no one traces the specialisation to."""
    generator = torch.Generator().manual_seed(0)
    atoms = 7
    numbers = torch.tensor([species[k % len(species)] for k in range(2 * atoms)], dtype=torch.long)
    positions = torch.rand(2 * atoms, 3, generator=generator, dtype=torch.float64) * 3.0
    positions[atoms:] += 4.0
    batch = torch.repeat_interleave(torch.arange(2), atoms)
    cell = torch.zeros(2, 3, 3, dtype=dtype)
    return positions.to(dtype).to(device), numbers.to(device), batch.to(device), cell.to(device)


class _MoleculeForward(torch.nn.Module):
    """The traced function: the five forward arguments -> (energy [B], forces [N, 3])."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        positions: torch.Tensor,
        atomic_numbers: torch.Tensor,
        batch: torch.Tensor,
        cell: torch.Tensor,
        pbc: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.energy_forces_molecules(positions, atomic_numbers, batch, cell)


def export_program(model: torch.nn.Module, dtype: torch.dtype, device: torch.device) -> torch.export.ExportedProgram:
    """The model's molecule forward as an ExportedProgram, dynamic in atoms N and structures B."""
    from torch.fx.experimental.proxy_tensor import make_fx

    positions, numbers, batch, cell = _example_molecules(model.species, dtype, device)
    pbc = torch.zeros(cell.size(0), 3, dtype=torch.bool, device=device)
    arguments = (positions, numbers, batch, cell, pbc)
    # make_fx records the backward of autograd.grad as plain aten ops; torch.export then sees no autograd.
    graph = make_fx(_MoleculeForward(model), tracing_mode="symbolic", _allow_non_fake_inputs=True)(*arguments)
    atoms = torch.export.Dim("atoms", min=2, max=1_000_000)
    structures = torch.export.Dim("structures", min=1, max=1_000_000)
    shapes = ({0: atoms}, {0: atoms}, {0: atoms}, {0: structures}, {0: structures})
    return torch.export.export(graph, arguments, dynamic_shapes=shapes, strict=False)


def export_aoti(
    model: Any,
    path: str | os.PathLike,
    metadata: dict[str, Any],
    dtype: torch.dtype,
    device: str | torch.device = "cpu",
) -> Path:
    """Write `model` (an eval-mode EnergyModel in `dtype`) as an AOTInductor package for `device`.

    Args:
        model: the energy model (a copy is moved to `device`; its parameters stop requiring grad).
        path: the .pt2 file to write (atomically).
        metadata: the potential's metadata (`mlff.export.deploy`), to which the container, the
            device kind and the torch version are added; `periodic` and `stress` become false.
        dtype: the network dtype.
        device: "cpu" or "cuda" (the package runs on that device kind only).

    Raises:
        ValueError: a device that is not available here.
    """
    target = torch.device(device)
    if target.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda needs a GPU here: an AOTInductor package is compiled for the device it runs on")
    if target.type not in ("cpu", "cuda"):
        raise ValueError(f"AOTInductor packages are built for cpu or cuda, not {target.type!r}")
    model = model.to(device=target)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    program = export_program(model, dtype, target)
    full_metadata = {
        **metadata,
        "periodic": False,
        "stress": False,
        "container": AOTI_CONTAINER,
        "aoti": {"device": target.type, "torch_version": torch.__version__},
    }
    text = to_json(full_metadata, indent=1)
    with tempfile.TemporaryDirectory() as folder:
        package = Path(folder) / f"{_ARCHIVE_ROOT}.pt2"
        torch._inductor.aoti_compile_and_package(program, package_path=str(package))
        with zipfile.ZipFile(package) as archive:
            root = archive.namelist()[0].split("/")[0]
        # The metadata goes in the package's own extra/ folder; the AOTInductor loader ignores it.
        with zipfile.ZipFile(package, "a") as archive:
            archive.writestr(f"{root}/{_METADATA_ENTRY}", text)
        data = package.read_bytes()
    return atomic_write(path, lambda stream: stream.write(data), mode=_FILE_MODE)


class AOTIModule:
    """A loaded AOTInductor package with the TorchScript module's calling conventions.

    `forward`/`__call__` check their inputs (as the TorchScript forward does), `check_inputs` and
    `energy_forces_unchecked` split the two, as in `mlff.models.energy.EnergyModel`.
    """

    def __init__(self, path: Path, metadata: dict[str, Any], device: torch.device) -> None:
        built = metadata.get("aoti", {})
        built_device, built_torch = built.get("device"), built.get("torch_version")
        if built_device != device.type:
            raise PotentialError(
                f"{path} is an AOTInductor package compiled for {built_device!r}; it cannot run on "
                f"{device.type!r}: export it again with `mlff export --format aoti --device {device.type}`"
            )
        if built_torch != torch.__version__:
            raise PotentialError(
                f"{path} is an AOTInductor package built with torch {built_torch}; this is torch "
                f"{torch.__version__}, which cannot run its compiled code: export it again here"
            )
        try:
            index = device.index if device.index is not None else -1
            self.runner = torch._inductor.aoti_load_package(str(path), device_index=index)
        except Exception as error:  # the loader raises RuntimeError or zip/pickle errors alike
            raise PotentialError(f"{path} is not a loadable AOTInductor package (corrupt?): {error}") from None
        self.species = [int(z) for z in metadata["species"]]
        table = torch.full((119,), -1, dtype=torch.long)
        for index, z in enumerate(self.species):
            table[z] = index
        self.species_table = table.to(device)
        self.dtype = DTYPES[metadata["dtype"]]

    def check_inputs(
        self,
        positions: torch.Tensor,
        atomic_numbers: torch.Tensor,
        batch: torch.Tensor,
        cell: torch.Tensor,
        pbc: torch.Tensor,
    ) -> None:
        """Raise ValueError unless the arguments fit the contract, with isolated molecules only."""
        check_inputs(self.species_table, self.species, positions, atomic_numbers, batch, cell, pbc)
        if bool(pbc.any()):
            raise ValueError("this AOTInductor package handles isolated molecules only (pbc all false)")
        if positions.size(0) < 2:
            raise ValueError("an AOTInductor package needs at least 2 atoms per call")

    def energy_forces_unchecked(
        self,
        positions: torch.Tensor,
        atomic_numbers: torch.Tensor,
        batch: torch.Tensor,
        cell: torch.Tensor,
        pbc: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Energy [B] float64 eV and forces [N, 3] eV/A, no checks."""
        # The compiled code takes exactly the traced dtypes.
        energy, forces = self.runner(
            positions.to(self.dtype), atomic_numbers.long(), batch.long(), cell.to(self.dtype), pbc.bool()
        )
        return energy, forces

    def __call__(
        self,
        positions: torch.Tensor,
        atomic_numbers: torch.Tensor,
        batch: torch.Tensor,
        cell: torch.Tensor,
        pbc: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_inputs(positions, atomic_numbers, batch, cell, pbc)
        return self.energy_forces_unchecked(positions, atomic_numbers, batch, cell, pbc)

    def eval(self) -> "AOTIModule":
        return self

    def parameters(self) -> list[torch.Tensor]:
        """None to freeze: the weights are constants of the compiled code."""
        return []

    def to(self, *args: Any, **kwargs: Any) -> "AOTIModule":
        raise ValueError("an AOTInductor package runs on its device and dtype only: export it again for another")
