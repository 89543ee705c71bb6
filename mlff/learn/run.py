"""`mlff learn`: iterations of train -> export -> MD -> select -> label until the MD holds.

Iteration i (folder OUTPUT_DIR/iter_{i:03d}/):
- `train`: a committee of K members under train/member_k/ (as `mlff train` with train.committee K
  writes it, committee.json included). Iteration 0 trains from scratch (or from training.init_from);
  iteration i > 0 fine-tunes member k from iteration i - 1's member_k/best.pt (init_from), for
  training.finetune_epochs (keeping training.finetune_keep's epoch: the last, by default), on the
  training data plus every earlier iteration's labelled frames
  (`data.extra_train_paths`: training frames only, so validation and test stay the original file's).
- `export`: committee.pt (`mlff.export.committee.export_committee`; its spread threshold fitted on
  the training frames of data.path; the config's `export` section adds the core repulsion prior a
  shipped potential carries, so that the loop's MD is the potential's).
- `md`: md/ — `run_md` with the torch engine (or torch-compiled), all replicas in one batch, `SpreadObserver` and
  `SelectionObserver` (md/candidates.extxyz), resumable from its checkpoint.
- `select`: selected.extxyz, the candidates by score cut to the labels left in budget.max_labels;
  skipped when every replica survived the whole run (the loop has converged).
- `label`: labelled.extxyz (`mlff.data.label.label_frames`, resumable frame by frame).
- `done`: iteration.json holds the iteration's record.

Each record's `cpu_seconds` holds the CPU time of each step (this process and its finished child
processes, the label workers); summary.json sums them into `cpu_hours`. A step interrupted and
resumed counts only the part run in the process that finished it.

OUTPUT_DIR/learn_state.json (replaced atomically after every step) records the config and, per
iteration, the step it has reached (the next one to run) and its results so far; `resume=True`
continues at that step (a finished member, MD run or label is not redone). The loop stops when
an iteration's replicas all survive the MD length ("stable"), when nothing was selected or
labelled, or when budget.max_iterations or budget.max_labels is spent; a resume with a larger
budget continues a run that stopped on its budget. OUTPUT_DIR/summary.json and learn.png
(stable time, largest spread and frames added per iteration) are rewritten after every iteration.
"""

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlff.learn.config import LearnConfig, learn_config_from_dict
from mlff.utils import atomic_path, write_json

STEPS = ("train", "export", "md", "select", "label", "done")
STATE_FILE = "learn_state.json"
# Config entries that may change on resume (budgets, parallelism); anything else is refused.
RESUMABLE_CHANGES = ("budget", "label.workers", "label.threads_per_worker", "md.device", "md.engine")


def cpu_seconds() -> float:
    """CPU seconds of this process and of its finished child processes (label workers)."""
    try:
        import resource
    except ImportError:  # not on Windows: the process alone
        return time.process_time()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def iteration_dir(output_dir: str | Path, index: int) -> Path:
    return Path(output_dir) / f"iter_{index:03d}"


def learn(
    config: LearnConfig,
    resume: bool = False,
    progress: bool = False,
    report: Callable[[str], None] | None = None,
    command: str | None = None,
) -> dict[str, Any]:
    """Run (or continue) the active-learning loop of `config`; returns the summary (also summary.json)."""
    say = report or (lambda line: None)
    output = Path(config.output_dir)
    state_path = output / STATE_FILE
    base = config.training_config()
    if resume:
        if not state_path.is_file():
            raise FileNotFoundError(f"--resume: no mlff learn run at {output} (no {STATE_FILE})")
        state = json.loads(state_path.read_text())
        _check_unchanged(state["config"], config.to_dict())
    else:
        if state_path.is_file():
            raise ValueError(f"{output} already holds an mlff learn run: pass --resume or choose another output_dir")
        state = {"format": "mlff-learn", "command": command, "iterations": [], "finished": None}
    state["config"] = config.to_dict()
    state["finished"] = None
    output.mkdir(parents=True, exist_ok=True)
    _save(state_path, state)
    while True:
        iterations = state["iterations"]
        if not iterations or iterations[-1]["step"] == "done":
            stop = stop_reason(state, config)
            if stop is not None:
                break
            iterations.append({"index": len(iterations), "step": "train"})
            _save(state_path, state)
        record = iterations[-1]
        while record["step"] != "done":
            step = record["step"]
            say(f"iteration {record['index']}: {step}")
            started = cpu_seconds()
            next_step = _STEP_FUNCTIONS[step](config, base, state, record, progress, say)
            spent = record.setdefault("cpu_seconds", {})
            spent[step] = spent.get(step, 0.0) + cpu_seconds() - started
            record["step"] = next_step
            _save(state_path, state)
            if next_step == "done":
                write_json(iteration_dir(output, record["index"]) / "iteration.json", record)
                _write_results(output, state, config)
    state["finished"] = stop
    _save(state_path, state)
    summary = _write_results(output, state, config)
    say(f"finished: {stop}")
    return summary


def _write_results(output: Path, state: dict[str, Any], config: LearnConfig) -> dict[str, Any]:
    """summary.json and learn.png as they stand (after every iteration, so a long run shows its progress)."""
    summary = learn_summary(state)
    write_json(output / "summary.json", summary)
    plot_learning(output / "learn.png", summary, config)
    return summary


def stop_reason(state: dict[str, Any], config: LearnConfig) -> str | None:
    """Why no further iteration starts (None: start one); every iteration so far is done."""
    iterations = state["iterations"]
    if iterations:
        last = iterations[-1]
        if last.get("stable"):
            return "stable: every replica survived the MD"
        if last.get("selected", 0) == 0:
            return "nothing selected to label"
        if last.get("labelled", 0) == 0:
            return "no frame could be labelled"
    if len(iterations) >= config.budget.max_iterations:
        return f"iteration budget spent ({config.budget.max_iterations})"
    if labels_so_far(state) >= config.budget.max_labels:
        return f"label budget spent ({config.budget.max_labels})"
    return None


def labels_so_far(state: dict[str, Any]) -> int:
    return sum(int(record.get("labelled", 0)) for record in state["iterations"])


def _train(config: LearnConfig, base: Any, state: dict[str, Any], record: dict[str, Any], progress: bool, say) -> str:
    from mlff.export.committee import COMMITTEE_FILE
    from mlff.training.committee import member_config
    from mlff.training.trainer import train

    index = record["index"]
    folder = iteration_dir(config.output_dir, index) / "train"
    extras = [
        str(iteration_dir(config.output_dir, r["index"]) / "labelled.extxyz")
        for r in state["iterations"][:index]
        if r.get("labelled", 0) > 0
    ]
    data = dataclasses.replace(base.data, extra_train_paths=[*base.data.extra_train_paths, *extras])
    epochs = (
        base.train.epochs if index == 0 or config.training.finetune_epochs is None else config.training.finetune_epochs
    )
    keep = base.train.keep if index == 0 else config.training.finetune_keep
    train_config = dataclasses.replace(
        base,
        data=data,
        train=dataclasses.replace(base.train, committee=config.training.committee, epochs=epochs, keep=keep),
        output_dir=str(folder),
    )
    members = []
    for k in range(config.training.committee):
        member = member_config(train_config, k)
        if index == 0:
            init_from = config.training.init_from or base.init_from
        else:
            init_from = str(iteration_dir(config.output_dir, index - 1) / "train" / f"member_{k}" / "best.pt")
        members.append(dataclasses.replace(member, init_from=init_from))
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {
        "format": "mlff-committee-run",
        "bootstrap": base.train.committee_bootstrap,
        "members": [{"index": k, "output_dir": f"member_{k}", "seed": m.train.seed} for k, m in enumerate(members)],
        "command": f"mlff learn (iteration {index})",
    }
    write_json(folder / COMMITTEE_FILE, manifest)
    for k, member in enumerate(members):
        member_dir = Path(member.output_dir)
        if (member_dir / "results.json").is_file():
            continue
        say(f"iteration {index}: member {k} ({'fine-tune from ' + member.init_from if member.init_from else 'fresh'})")
        train(member, resume=(member_dir / "last.pt").is_file(), progress=progress, command=manifest["command"])
    record["training_frames_added"] = extras
    return "export"


def _export(config: LearnConfig, base: Any, state: dict[str, Any], record: dict[str, Any], progress: bool, say) -> str:
    from mlff.export.committee import committee_checkpoints, export_committee
    from mlff.export.load import read_metadata

    folder = iteration_dir(config.output_dir, record["index"])
    path = export_committee(
        committee_checkpoints(folder / "train"),
        folder / "committee.pt",
        core_repulsion_ev_per_a3=config.export.core_repulsion,
        repulsion=config.export.repulsion,
    )
    metadata = read_metadata(path)
    record["spread_threshold_ev_per_a"] = metadata["committee"].get("spread_threshold_ev_per_a")
    record["test_metrics"] = metadata.get("test_metrics")
    return "md"


def md_settings(config: LearnConfig) -> Any:
    """The MDSettings of every iteration: the protocol with the config's overrides."""
    from mlff.dynamics.settings import load_protocol
    from mlff.resources import protocol_path

    section = config.md
    overrides = dict(section.settings)
    for name in ("temperature_k", "time", "replicas"):
        if getattr(section, name) is not None:
            overrides[name] = getattr(section, name)
    return load_protocol(protocol_path(section.protocol), **overrides)


def _md(config: LearnConfig, base: Any, state: dict[str, Any], record: dict[str, Any], progress: bool, say) -> str:
    from mlff.dynamics.observers import SpreadObserver
    from mlff.dynamics.runner import can_resume, run_md
    from mlff.dynamics.selection import SelectionObserver

    folder = iteration_dir(config.output_dir, record["index"])
    potential = folder / "committee.pt"
    settings = md_settings(config)
    options: dict[str, Any] = {
        "output": folder / "md" / "candidates.extxyz",
        "max_candidates": config.selection.max_frames,
        "bond_deviation_a": config.selection.bond_deviation_a,
        "collapse_deviation_a": settings.max_bond_deviation_a,
        "before_collapse": config.selection.before_collapse,
        "duplicate_distance_a": config.selection.duplicate_distance_a,
        "spread_ceiling_factor": config.selection.spread_ceiling_factor,
    }
    if config.selection.spread_threshold_ev_per_a is not None:
        options["spread_threshold_ev_per_a"] = config.selection.spread_threshold_ev_per_a
    selection = SelectionObserver.for_potential(potential, config.md.structures, settings.replicas, **options)
    summary = run_md(
        potential,
        structure=config.md.structures or None,
        settings=settings,
        output_dir=folder / "md",
        device=config.md.device,
        dtype=config.md.dtype,
        engine=config.md.engine,
        resume=can_resume(folder / "md", config.md.engine, settings, potential),
        progress=progress,
        observers=[SpreadObserver(), selection],
    )
    stability = summary["stability"]
    spread = summary["observers"]["force_spread"]
    record.update(
        stable=not stability["collapsed"],
        collapsed_replicas=stability["collapsed_replicas"],
        replicas=stability["replicas"],
        length_ps=stability["length_ps"],
        stable_time_ps=stability["stable_time_ps"],
        stable_time_ps_mean=stability["stable_time_ps_mean"],
        largest_spread_ev_per_a=spread["largest_ev_per_a"],
        candidates=summary["observers"]["selection"]["candidates"],
        candidates_by_reason=summary["observers"]["selection"]["by_reason"],
    )
    say(
        f"iteration {record['index']}: {len(stability['collapsed_replicas'])} of {stability['replicas']} replicas "
        f"collapsed; stable time {stability['stable_time_ps']:.3f} ps; {record['candidates']} candidates"
    )
    return "done" if record["stable"] else "select"


def _select(config: LearnConfig, base: Any, state: dict[str, Any], record: dict[str, Any], progress: bool, say) -> str:
    import ase.io

    folder = iteration_dir(config.output_dir, record["index"])
    candidates_path = folder / "md" / "candidates.extxyz"
    candidates = (
        ase.io.read(candidates_path, ":") if candidates_path.is_file() and candidates_path.stat().st_size else []
    )
    left = max(0, config.budget.max_labels - labels_so_far(state))
    chosen = sorted(candidates, key=lambda atoms: -float(atoms.info.get("score", 0.0)))[:left]
    with atomic_path(folder / "selected.extxyz") as temporary:
        ase.io.write(temporary, chosen, format="extxyz")
    record["selected"] = len(chosen)
    return "label" if chosen else "done"


def _label(config: LearnConfig, base: Any, state: dict[str, Any], record: dict[str, Any], progress: bool, say) -> str:
    import ase.io

    from mlff.data.label import label_frames

    folder = iteration_dir(config.output_dir, record["index"])
    section = config.label
    result = label_frames(
        folder / "selected.extxyz",
        folder / "labelled.extxyz",
        method=section.method,
        basis=section.basis,
        workers=section.workers,
        threads_per_worker=section.threads_per_worker,
    )
    labelled = folder / "labelled.extxyz"
    record["labelled"] = len(ase.io.read(labelled, ":")) if labelled.is_file() and labelled.stat().st_size else 0
    record["label_failed"] = {str(k): v for k, v in result.failed.items()}
    record.update(committee_on_labels(folder / "committee.pt", labelled) if record["labelled"] else {})
    error = record.get("labelled_force_mae_mev_per_a")
    note = "" if error is None else f"; the committee's force MAE on them {error:.1f} meV/A"
    say(f"iteration {record['index']}: {record['labelled']} frames labelled ({section.method}){note}")
    return "done"


def committee_on_labels(potential: str | Path, labelled: str | Path) -> dict[str, float]:
    """How wrong the committee that chose the frames was on them: its force MAE against the new
    labels (meV/A) beside its mean force spread there (meV/A), the two a committee's spread stands
    in for. Energies are left out: a labelling program's energy zero may differ from the data's."""
    import ase.io
    import numpy as np

    from mlff.export import load_potential

    model = load_potential(potential)
    errors, spreads = [], []
    for atoms in ase.io.read(labelled, ":"):
        cell, pbc = (atoms.get_cell().array, atoms.get_pbc()) if atoms.get_pbc().any() else (None, None)
        _, forces, spread = model.energy_forces_spread_of(atoms.get_atomic_numbers(), atoms.get_positions(), cell, pbc)
        errors.append(np.abs(forces - atoms.get_forces()).ravel())
        spreads.append(spread)
    return {
        "labelled_force_mae_mev_per_a": 1000.0 * float(np.concatenate(errors).mean()),
        "labelled_spread_mean_mev_per_a": 1000.0 * float(np.concatenate(spreads).mean()),
    }


_STEP_FUNCTIONS = {"train": _train, "export": _export, "md": _md, "select": _select, "label": _label}


def learn_summary(state: dict[str, Any]) -> dict[str, Any]:
    """The run's summary: why it stopped, the labels used and one row per iteration."""
    keys = (
        "index", "step", "stable", "replicas", "collapsed_replicas", "length_ps", "stable_time_ps",
        "stable_time_ps_mean", "largest_spread_ev_per_a", "spread_threshold_ev_per_a", "candidates",
        "selected", "labelled", "labelled_force_mae_mev_per_a", "labelled_spread_mean_mev_per_a", "test_metrics",
        "cpu_seconds",
    )  # fmt: skip
    recorded = [sum((record.get("cpu_seconds") or {}).values()) for record in state["iterations"]]
    return {
        "finished": state["finished"],
        "iterations_run": len(state["iterations"]),
        "frames_labelled": labels_so_far(state),
        "cpu_hours": sum(recorded) / 3600.0,
        "iterations": [{key: record.get(key) for key in keys} for record in state["iterations"]],
    }


def plot_learning(path: str | Path, summary: dict[str, Any], config: LearnConfig) -> Path:
    """Stable time (shortest and mean over replicas), largest committee spread and frames labelled
    per iteration, in three panels."""
    from matplotlib.figure import Figure

    rows = [row for row in summary["iterations"] if row.get("stable_time_ps") is not None]
    x = [row["index"] for row in rows]
    figure = Figure(figsize=(7, 8))
    top, middle, bottom = figure.subplots(3, 1, sharex=True)
    top.plot(x, [row["stable_time_ps"] for row in rows], "o-", label="shortest replica")
    top.plot(x, [row["stable_time_ps_mean"] for row in rows], "s--", label="mean over replicas")
    if rows:
        top.axhline(rows[0]["length_ps"], color="grey", linestyle=":", label="target")
    top.set_ylabel("stable time (ps)")
    top.legend()
    middle.plot(x, [row["largest_spread_ev_per_a"] or float("nan") for row in rows], "o-", label="largest in MD")
    middle.plot(x, [row["spread_threshold_ev_per_a"] or float("nan") for row in rows], "x:", label="threshold")
    middle.set_ylabel("force spread (eV/A)")
    middle.legend()
    bottom.bar(x, [row.get("labelled") or 0 for row in rows], width=0.5)
    bottom.set_xticks(x)
    bottom.set_ylabel("frames labelled")
    bottom.set_xlabel("iteration")
    figure.suptitle(f"mlff learn: {Path(config.output_dir).name}")
    figure.tight_layout()
    with atomic_path(path, suffix=".png") as temporary:
        figure.savefig(temporary, dpi=100)
    return Path(path)


def _save(path: Path, state: dict[str, Any]) -> None:
    write_json(path, state)


def _check_unchanged(saved: dict[str, Any], current: dict[str, Any]) -> None:
    """Refuse a resume whose config differs from the run's beyond budgets and parallelism."""
    # Read through the config classes so that a section added since the run started counts as its defaults.
    before, after = _flatten(learn_config_from_dict(saved).to_dict()), _flatten(current)
    changed = sorted(key for key in before.keys() | after.keys() if before.get(key) != after.get(key))
    changed = [key for key in changed if not any(key == c or key.startswith(c + ".") for c in RESUMABLE_CHANGES)]
    if changed:
        raise ValueError(f"cannot resume with a changed config {changed}: only {list(RESUMABLE_CHANGES)} may change")


def _flatten(raw: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1} (an empty mapping stays a value)."""
    if not isinstance(raw, dict) or not raw:
        return {prefix: raw}
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat
