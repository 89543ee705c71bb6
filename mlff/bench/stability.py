"""The MD17 stability benchmark: the MDsim protocol on each potential, one table.

For each potential, all seeds run as one batch of the torch engine (`mlff.dynamics.run_md`; or of
torch-compiled, the same MD with the potential call compiled), and
the table gives the force MAE of the potential's card, the stable time of each seed (mean and
min), the h(r) MAE against the dataset and the throughput. Each molecule's run keeps its own
directory with trajectories, plots and a checkpoint, so an interrupted benchmark continues
where it stopped when run again. A molecule's seeds can also run as N processes (`part=(i, N)`,
one contiguous range of seeds each, e.g. one per CPU core: a replica's trajectory does not depend
on its batch); the part that finishes last merges them into the molecule's row.
"""

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mlff import utils
from mlff.dynamics.runner import can_resume, merge_runs, potential_sha256, run_md
from mlff.dynamics.settings import MDSettings
from mlff.units import FS_PER_PS

QUICK_TIME = "1ps"


@dataclass
class StabilityTarget:
    """One potential to benchmark: its name (the molecule), file, and optionally a dataset whose
    reference statistics (start frames, bonds, h(r)) replace the potential's own."""

    name: str
    potential: Path
    data: Path | None = None


def shipped_targets(directory: str | Path, molecules: list[str] | None = None) -> list[StabilityTarget]:
    """The potentials in `directory` (one per molecule, named by the file's stem), optionally only `molecules`."""
    paths = {path.stem: path for path in sorted(Path(directory).glob("*.pt"))}
    if molecules:
        missing = sorted(set(molecules) - set(paths))
        if missing:
            raise ValueError(f"no shipped potential for {missing} in {directory}; there are {sorted(paths)}")
        paths = {name: paths[name] for name in molecules}
    if not paths:
        raise ValueError(f"no potential files (*.pt) in {directory}")
    return [StabilityTarget(name, path) for name, path in paths.items()]


def run_target(
    target: StabilityTarget,
    settings: MDSettings,
    output_dir: Path,
    device: str = "cpu",
    dtype: str | None = None,
    engine: str = "torch",
    part: tuple[int, int] | None = None,
) -> dict[str, Any] | None:
    """The protocol on one potential (resuming its run if an earlier one stopped part-way); its table row.

    `engine`: "torch" or "torch-compiled" (the same integrator and observers, the potential call
    compiled); a run resumes only under the engine that started it. `part` (i, N): run only the
    i-th (1-based) of N contiguous ranges of the seeds, in `<molecule>/part<i>of<N>`; the row when
    every part has finished (the parts merged into `<molecule>/`), else None.
    """
    run_dir = output_dir / target.name
    # A run is reused only for the same file: a retrained potential under the same name runs afresh.
    digest = potential_sha256(target.potential)
    summary = _finished_summary(run_dir, settings, digest)
    if summary is None and part is None:
        summary = run_md(
            target.potential,
            None,
            settings,
            run_dir,
            device,
            dtype,
            engine=engine,
            reference_data=target.data,
            resume=can_resume(run_dir, engine, settings, target.potential),
        )
    elif summary is None:
        index, count = part
        ranges = seed_ranges(settings.replicas, count)
        if not 1 <= index <= count:
            raise ValueError(f"part {index} of {count}: the part must be between 1 and {count}")
        part_dirs = [run_dir / f"part{i}of{count}" for i in range(1, count + 1)]
        first, replicas = ranges[index - 1]
        part_settings = replace(settings, replicas=replicas)
        part_dir = part_dirs[index - 1]
        if _finished_summary(part_dir, part_settings, digest, first) is None:
            run_md(
                target.potential,
                None,
                part_settings,
                part_dir,
                device,
                dtype,
                engine=engine,
                reference_data=target.data,
                resume=can_resume(part_dir, engine, part_settings, target.potential, first),
                first_replica=first,
            )
        finished = [
            _finished_summary(directory, replace(settings, replicas=n), digest, start)
            for directory, (start, n) in zip(part_dirs, ranges)
        ]
        if any(done is None for done in finished):
            return None
        summary = merge_runs(part_dirs, run_dir, target.data)
    return stability_row(target, summary)


def seed_ranges(replicas: int, parts: int) -> list[tuple[int, int]]:
    """(first seed, seeds) of each of `parts` contiguous ranges of `replicas` seeds, the first ones
    one larger where they do not divide evenly: seed_ranges(5, 2) == [(0, 3), (3, 2)]."""
    if not 1 <= parts <= replicas:
        raise ValueError(f"cannot split {replicas} seeds into {parts} parts: give 1 to {replicas} parts")
    sizes = [replicas // parts + (1 if i < replicas % parts else 0) for i in range(parts)]
    return [(sum(sizes[:i]), size) for i, size in enumerate(sizes)]


def _finished_summary(
    run_dir: Path, settings: MDSettings, digest: str, first_replica: int = 0
) -> dict[str, Any] | None:
    """The summary of a finished run in `run_dir` of these settings, potential file and replicas, else None."""
    path = run_dir / "summary.json"
    summary = json.loads(path.read_text()) if path.is_file() else {}
    finished = (
        bool(summary)
        and not summary.get("interrupted", True)
        and summary["settings"] == settings.to_dict()
        and summary.get("potential_sha256") == digest
        and summary.get("first_replica", 0) == first_replica
    )
    return summary if finished else None


def stability_row(target: StabilityTarget, summary: dict[str, Any]) -> dict[str, Any]:
    """One row of the table from a run's summary and the potential's metadata."""
    from mlff.export import read_metadata

    metrics = read_metadata(target.potential).get("test_metrics") or {}
    stability, speed = summary["stability"], summary["throughput"]
    per_seed = [entry["stable_time_ps"] for entry in stability["per_replica"]]
    return {
        "molecule": target.name,
        "potential": str(target.potential),
        "force_mae_mev_per_a": metrics.get("force_mae_mev_per_a"),
        "length_ps": stability["length_ps"],
        "seeds": stability["replicas"],
        "stable_time_ps": per_seed,
        "stable_time_ps_mean": stability["stable_time_ps_mean"],
        "stable_time_ps_min": stability["stable_time_ps"],
        "collapsed_seeds": len(stability["collapsed_replicas"]),
        "hr_mae": stability["hr_mae"],
        "mean_temperature_k": stability["mean_temperature_k"],
        "engine": summary.get("engine", "torch"),
        "steps_per_second": speed["steps_per_second"],
        "ns_per_day": speed["ns_per_day"],
        "interrupted": summary.get("interrupted", False),
    } | ({"processes": len(summary["parts"])} if summary.get("parts") else {})


def record_in_card(target: StabilityTarget, row: dict[str, Any], protocol: str) -> Path:
    """Write `row` (with the protocol) as the stability section of the model card beside the potential."""
    from mlff.export.card import write_model_card

    card_path = target.potential.with_suffix(".yaml")
    if not card_path.is_file():
        raise FileNotFoundError(f"{target.potential} has no model card {card_path} to record its stability in")
    if row["interrupted"]:
        raise ValueError(f"the stability run of {target.name} was interrupted; its card keeps what it had")
    section = {
        "protocol": protocol,
        **{key: value for key, value in row.items() if key not in ("molecule", "potential")},
    }
    return write_model_card(target.potential, card_path, stability=section)


def merged_rows(
    path: Path, rows: list[dict[str, Any]], settings: dict[str, Any], protocol: str
) -> list[dict[str, Any]]:
    """The rows `path` holds for the same protocol and settings, each molecule of `rows` replacing
    its old row in place, then the molecules new to the file."""
    if not path.is_file():
        return rows
    try:
        earlier = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return rows
    if earlier.get("protocol") != protocol or earlier.get("settings") != json.loads(json.dumps(settings)):
        return rows
    new = {row["molecule"]: row for row in rows}
    merged = [new.pop(row.get("molecule"), row) for row in earlier.get("rows", [])]
    return merged + list(new.values())


def format_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table ("-" where the card has no force MAE or no replica has an h(r))."""
    headers = [
        "molecule",
        "force MAE (meV/A)",
        "stable ps, mean (min) of seeds",
        "collapsed",
        "h(r) MAE",
        "steps/s",
        "ns/day (all seeds)",
    ]
    cells = [
        [
            row["molecule"],
            row["force_mae_mev_per_a"],
            f"{row['stable_time_ps_mean']:.1f} ({row['stable_time_ps_min']:.1f}) of {row['length_ps']:g}",
            f"{row['collapsed_seeds']}/{row['seeds']}",
            row["hr_mae"],
            row["steps_per_second"],
            row["ns_per_day"],
        ]
        for row in rows
    ]
    return utils.format_table(cells, headers, floatfmt=("", ".1f", "", "", ".3f", ".1f", ".2f"), missingval="-")


def write_report(output_dir: Path, rows: list[dict[str, Any]], settings: MDSettings, protocol: str) -> Path:
    """`stability.json` and `report.md` (the table, the protocol, each molecule's plots).

    Rows of other molecules already in `stability.json` under the same protocol and settings are
    kept (a run over some molecules updates theirs); under another protocol the file is replaced.
    """
    rows = merged_rows(output_dir / "stability.json", rows, settings.to_dict(), protocol)
    utils.write_json(
        output_dir / "stability.json", {"protocol": protocol, "settings": settings.to_dict(), "rows": rows}
    )
    length_ps = settings.steps * settings.timestep_fs / FS_PER_PS
    engines = " or ".join(sorted({row.get("engine", "torch") for row in rows}))
    split = [f"{row['molecule']}'s in {row['processes']}" for row in rows if row.get("processes", 1) > 1]
    batches = f" ({', '.join(split)} processes side by side)" if split else ""
    lines = [
        "# MD17 stability benchmark",
        "",
        f"Protocol `{protocol}`: {length_ps:g} ps of {settings.thermostat} MD at "
        f"{settings.temperature_k:g} K, {settings.timestep_fs} fs steps, {settings.replicas} seeds per molecule in one "
        f"batch of the {engines} engine{batches}; a seed has collapsed when a bond deviates more than "
        f"{settings.max_bond_deviation_a} A from its reference length (MDsim). "
        "h(r) MAE: mean |h - h_dataset| x 10 A over 500 bins on (0, 10] A.",
        "",
        format_table(rows),
        "",
    ]
    for row in rows:
        name = row["molecule"]
        lines += [f"## {name}", "", f"![bond deviation]({name}/bond_deviation.png) ![h(r)]({name}/hr.png)", ""]
    return utils.atomic_write_text(output_dir / "report.md", "\n".join(lines))
