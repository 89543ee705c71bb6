"""MD settings and protocols: one dataclass, read from the YAML files in `md/`.

A protocol names the physics of a run (temperature, step, length, thermostat, how many
replicas, how often a frame is saved); each engine maps it onto its own integrator.
"""

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mlff.units import FS_PER_NS, FS_PER_PS, ns_per_day

THERMOSTATS = ("nve", "langevin", "nose-hoover")

_LENGTH = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(fs|ps|ns)\s*$")
_FS_PER_UNIT = {"fs": 1.0, "ps": FS_PER_PS, "ns": FS_PER_NS}


@dataclass
class MDSettings:
    """One MD run of R replicas.

    Attributes:
        steps: integration steps.
        timestep_fs: time step, fs.
        temperature_k: initial (Maxwell-Boltzmann) and thermostat temperature, K.
        thermostat: "nve", "langevin" or "nose-hoover" (one thermostat, chain length 1).
        friction_per_fs: Langevin friction, 1/fs.
        ttime: Nose-Hoover time constant in time steps (MDsim): the torch engine's thermostat
            mass is Q = 3 n k_B T (ttime timestep)^2; ASE's NoseHooverChainNVT gets
            tdamp = ttime * timestep (the same Q); OpenMM's NoseHooverIntegrator gets the
            collision frequency 1 / (ttime * timestep) (Q = N_dof k_B T (ttime timestep)^2).
        seed: replica k draws its initial velocities and its noise from seed + k.
        save_every: steps between saved frames (observed, logged, written, checkpointed).
        replicas: independent replicas (MDsim: 5 seeds).
        max_bond_deviation_a: a replica has collapsed at the first saved frame where a bond
            deviates more than this from its reference length, Angstrom (MDsim: 0.5).
    """

    steps: int = 1000
    timestep_fs: float = 0.5
    temperature_k: float = 300.0
    thermostat: str = "langevin"
    friction_per_fs: float = 0.01
    ttime: float = 20.0
    seed: int = 0
    save_every: int = 10
    replicas: int = 1
    max_bond_deviation_a: float = 0.5

    def __post_init__(self) -> None:
        if self.thermostat not in THERMOSTATS:
            raise ValueError(f"thermostat must be one of {THERMOSTATS}, got {self.thermostat!r}")
        if self.steps < 1 or self.save_every < 1 or self.replicas < 1:
            raise ValueError(
                f"steps, save_every and replicas must be >= 1, got {self.steps}, {self.save_every}, {self.replicas}"
            )
        if self.timestep_fs <= 0 or self.ttime <= 0 or self.temperature_k < 0 or self.friction_per_fs < 0:
            raise ValueError("timestep_fs and ttime must be > 0, temperature_k and friction_per_fs >= 0")

    @property
    def frame_interval_ps(self) -> float:
        """Simulated time between saved frames, ps."""
        return self.save_every * self.timestep_fs / FS_PER_PS

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def steps_for(length: str, timestep_fs: float) -> int:
    """Integration steps for a simulated length such as "300ps", "50 ps", "1ns" or "500fs"."""
    match = _LENGTH.match(length)
    if not match:
        raise ValueError(f"length {length!r}: expected a number and a unit fs, ps or ns (e.g. 300ps)")
    femtoseconds = float(match.group(1)) * _FS_PER_UNIT[match.group(2)]
    steps = round(femtoseconds / timestep_fs)
    if steps < 1:
        raise ValueError(f"length {length!r} is shorter than one {timestep_fs} fs step")
    return steps


def load_protocol(path: str | Path, **overrides: Any) -> MDSettings:
    """MD settings from a protocol YAML (keys: the MDSettings fields, or `time` such as
    "300ps" in place of `steps`), with overrides applied (an overriding `time` wins too)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MD protocol not found: {path}")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: an MD protocol must be a YAML mapping")
    known = set(MDSettings.__dataclass_fields__) | {"time"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"{path}: unknown protocol key(s) {unknown}; known: {sorted(known)}")
    merged = {**raw, **overrides}
    if "time" in overrides and "steps" not in overrides:
        merged.pop("steps", None)
    return settings_from(merged)


def settings_from(values: dict[str, Any]) -> MDSettings:
    """MDSettings from a dict of its fields, where `time` ("300ps") may stand for `steps`."""
    values = dict(values)
    length = values.pop("time", None)
    if length is not None:
        if "steps" in values:
            raise ValueError("give the run's length as steps or as time, not both")
        values["steps"] = steps_for(str(length), float(values.get("timestep_fs", MDSettings.timestep_fs)))
    try:
        return MDSettings(**values)
    except TypeError as error:
        raise ValueError(f"bad MD settings: {error}") from None


def throughput_measures(steps: int, seconds: float, timestep_fs: float, num_atoms: int) -> dict[str, float]:
    """Steps, wall seconds, steps/s, ns/day (simulated time at `timestep_fs` fs) and atom-steps/s.

    `num_atoms` counts every atom advanced per step (summed over replicas).
    """
    steps_per_second = steps / seconds if seconds > 0 else float("inf")
    return {
        "steps": steps,
        "wall_seconds": seconds,
        "steps_per_second": steps_per_second,
        "ns_per_day": ns_per_day(steps_per_second, timestep_fs),
        "atom_steps_per_second": steps_per_second * num_atoms,
    }
