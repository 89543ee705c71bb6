"""Retrain, export and benchmark the shipped MD17 potentials from potentials/configs/, resumably.

    python scripts/retrain_potentials.py pretrain --xtb-dir DIR      # the xTB-MD17 pretraining the configs start from
    python scripts/retrain_potentials.py train --md17-dir DIR --slot 0 --slots 2 &   # two slots, one thread each
    python scripts/retrain_potentials.py train --md17-dir DIR --slot 1 --slots 2 &
    python scripts/retrain_potentials.py learn --md17-dir DIR --only toluene   # mlff learn at PBE from a trained run
    python scripts/retrain_potentials.py final --only toluene    # stage 3 config after a stable learn run
    python scripts/retrain_potentials.py extend --only toluene --epochs 120   # the shipped file trained on
    python scripts/retrain_potentials.py ship --md17-dir DIR [--only naphthalene toluene]
    python scripts/retrain_potentials.py status

Each step is the `mlff` command a user would type (printed before it runs), so the cards record
them: `mlff --threads 1 train potentials/configs/<m>.yaml data.path=DIR/rmd17_<m>.npz [--resume]`
(a finished run, one with results.json, is skipped; a started one resumes from its last.pt);
`ship` exports each finished run's best.pt over potentials/<m>.pt (core repulsion, reference
statistics and check frames from the rMD17 file) and runs the 50 ps stability protocol into
potentials/stability-cpu with --update-cards. The new file stays only if it is better than the
committed one (`replaces`: no more collapsed seeds, and fewer of them or a lower test force MAE);
otherwise it is staged in potentials/stages/<m>/ (file, card, config, stability row and plots; its
MD trajectories in runs/stages/<m>/, for `mlff bench collapse --recorded ... --replay`), or in
stages/<run folder name>/ where a stage of <m> is committed already (never overwritten), and the
shipped file, card, config and stability rows are put back as the last commit holds them (`--accept`
keeps the new file anyway, for a judgement the gate cannot make, e.g. longer runs held). Kill and rerun at any time.

`learn` runs `mlff learn examples/learn/pbe_ethanol.yaml` for another molecule (its settings are
not ethanol's own: the training config, start and data are overrides): a committee of two
fine-tuned from runs/potentials/<m>/best.pt (or, where that run folder is gone, from the shipped
potentials/<m>.pt when its card records this config's training), PBE/def2-SVP labels, until 5 of 5
replicas hold 50 ps, into runs/learn/pbe_<m>.

`final` turns a finished (stable) learn run into the molecule's last stage, as for ethanol: the
trained config becomes potentials/configs/<m>_base.yaml, the labelled frames are copied to
examples/learn/results/pbe_<m>_labels/, and potentials/configs/<m>.yaml becomes a fine-tune
(`--epochs`, default 200, lr 5e-4 cosine, compiled) of member 0 of the loop's last committee on the
rMD17 frames plus those labels (their energies too where the loop trained them); then `train --only
<m>` and `ship --only <m>`. `final --again --epochs N` rewrites that last stage of a molecule that
has one (a longer fine-tune of the same member into its own run folder; stage 1 stays).

`learn --round N` (N > 1) runs another loop from the shipped file into runs/learn/pbe_<m>_r<N>,
and `final --round N` makes its last stage. `extend` adds a stage where the loop's run folder is
gone: the shipped file fine-tuned for `--epochs` more epochs on the shipped last stage's frames (lr
5e-4, or `--lr`, cosine from the top, compiled; `--batch-size`; `--extra-labels FILE...`: labelled
frames it also trains on, e.g. frames from before the collapses of a long MD run labelled with
`mlff data label`; the run folder names the start's commit, the epochs and a hash of these files);
then `train` and `ship` as after `final`; a one-stage file (aspirin's:
trained from scratch until its time cap) becomes stage 1 of two. A later round and `extend` both
keep the shipped file they start from in potentials/starts/<m>_<commit>.pt with its card (git
stores the same bytes once), so that the stage can be rerun once another file is shipped in its
place.

A config is the run of the shipped file's card. Most start from the xTB pretraining (`pretrain`);
one whose MD needed `mlff learn` starts from the loop's last committee and its header names the
earlier stages (potentials/configs/ethanol.yaml: ethanol_base.yaml, then
examples/learn/pbe_ethanol.yaml, then itself).
"""

import argparse
import contextlib
import hashlib
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from mlff.learn.config import learn_config_from_dict

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "potentials" / "configs"
MOLECULES = ("aspirin", "benzene", "ethanol", "malonaldehyde", "naphthalene", "salicylic", "toluene", "uracil")
PRETRAIN = CONFIGS / "pretrain_xtb.yaml"
CORE_REPULSION = "50"


def run(command: list[str]) -> None:
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=ROOT)


def output_dir(config: Path) -> Path:
    return ROOT / yaml.safe_load(config.read_text())["output_dir"]


def dataset(md17_dir: str, molecule: str) -> str:
    return str(Path(md17_dir).expanduser() / f"rmd17_{molecule}.npz")


def train_command(config: Path, overrides: list[str]) -> list[str]:
    command = ["mlff", "--threads", "1", "train", str(config.relative_to(ROOT)), *overrides]
    return [*command, "--resume"] if (output_dir(config) / "last.pt").is_file() else command


def pretrain(args: argparse.Namespace) -> None:
    if (output_dir(PRETRAIN) / "results.json").is_file():
        print(f"{PRETRAIN.name}: finished")
        return
    xtb = Path(args.xtb_dir).expanduser()
    files = ", ".join(str(xtb / f"xtb_{molecule}.npz") for molecule in MOLECULES)
    run(train_command(PRETRAIN, [f"data.path=[{files}]"]))


def train(args: argparse.Namespace) -> None:
    for index, molecule in enumerate(args.only or MOLECULES):
        if index % args.slots != args.slot:
            continue
        config = CONFIGS / f"{molecule}.yaml"
        if (output_dir(config) / "results.json").is_file():
            print(f"{molecule}: finished")
            continue
        init_from = yaml.safe_load(config.read_text()).get("init_from")
        if init_from and not (ROOT / init_from).is_file():
            sys.exit(f"{molecule}: its init_from {init_from} does not exist: run the stage its config's header names")
        run(train_command(config, [f"data.path={dataset(args.md17_dir, molecule)}"]))


def round_suffix(round_: int) -> str:
    """The folder suffix of a learn round: "" for the first, "_r2" for the second, ..."""
    return "" if round_ == 1 else f"_r{round_}"


def learn_dir(molecule: str, round_: int = 1) -> Path:
    """The run folder of the molecule's PBE learn loop (stage 2; a later round's own folder)."""
    return ROOT / "runs" / "learn" / f"pbe_{molecule}{round_suffix(round_)}"


def labels_dir(molecule: str, round_: int = 1) -> Path:
    """Where `final` keeps a learn round's labelled frames in git (run folders do not outlive their machine)."""
    return ROOT / "examples" / "learn" / "results" / f"pbe_{molecule}{round_suffix(round_)}_labels"


# A later round searches harder than the first, whose 5 replicas of 50 ps may all hold while the
# single shipped model still loses a seed (uracil): twice the replicas for twice the time.
ROUND_REPLICAS = 10
ROUND_MD = [f"md.replicas={ROUND_REPLICAS}", "md.time=100ps"]
# Each iteration's fine-tune in ethanol's loop run for another molecule: a few epochs at a tenth of the
# recipe's rate, keeping the last epoch (docs/learn.md, toluene).
LOOP_FINETUNE = ["train.max_cpu_minutes=0", "train.epochs=6", "train.lr=1.0e-3", "train.keep=last"]


def ethanol_loop_command(out: Path, training_config: Path, start: str) -> list[str]:
    """`mlff learn` with ethanol's loop config, another molecule's training config and start, into `out`."""
    command = ["mlff", "--threads", "1", "learn", "examples/learn/pbe_ethanol.yaml", f"output_dir={out}"]
    command += [f"training.config={training_config.relative_to(ROOT)}", f"training.init_from={start}"]
    return [*command, "md.engine=torch-compiled"]  # the same MD at 1.8x the steps/s


def keep_start(molecule: str) -> tuple[Path, str] | None:
    """Copy the shipped potentials/<m>.pt and its card, as the last commit holds them, to
    potentials/starts/<m>_<commit>.pt (and .yaml), where a later stage's `init_from` can read it once
    another file is shipped in its place (not installed; git stores the same bytes once).

    Returns the copy and the commit that shipped it; None where the working file is not the committed one.
    """
    shipped = f"potentials/{molecule}.pt"
    log = ["git", "log", "-1", "--format=%h", "--", shipped]
    commit = subprocess.run(log, cwd=ROOT, capture_output=True, text=True).stdout.strip()
    content = committed(shipped)
    if not commit or content is None or (ROOT / shipped).read_bytes() != content:
        return None
    start = ROOT / "potentials" / "starts" / f"{molecule}_{commit}.pt"
    start.parent.mkdir(parents=True, exist_ok=True)
    start.write_bytes(content)
    card = committed(f"potentials/{molecule}.yaml")
    if card is not None:
        start.with_suffix(".yaml").write_bytes(card)
    return start, commit


UNCOMMITTED = "{m}: potentials/{m}.pt differs from the last commit's (commit or restore it); skipped"


def start_commit(start: str) -> str | None:
    """The commit in a kept start's name (potentials/starts/<m>_<commit>.pt); None for another path."""
    match = re.fullmatch(r"potentials/starts/\w+?_([0-9a-f]+)\.pt", start)
    return match.group(1) if match else None


def round_overrides(molecule: str, md17_dir: str, out: Path, start: str) -> tuple[list[str], list[str]]:
    """The learn command (into `out`) and training overrides of a later round: the shipped file as the
    start (`start`: its kept copy, `keep_start`), stage 1's config, and the labels the shipped stage
    trained on (so that none is forgotten)."""
    stage_3 = yaml.safe_load((CONFIGS / f"{molecule}.yaml").read_text())
    seeds = stage_3["data"].get("extra_train_paths") or []
    energies = stage_3["data"].get("extra_energies", True)
    command = [*ethanol_loop_command(out, CONFIGS / f"{molecule}_base.yaml", start), *ROUND_MD]
    training = [f"data.path={dataset(md17_dir, molecule)}", *LOOP_FINETUNE]
    training += [f"data.extra_train_paths=[{', '.join(seeds)}]", f"data.extra_energies={str(energies).lower()}"]
    return command, training


def shipped_from(molecule: str, config: Path) -> bool:
    """Whether potentials/<molecule>.pt is the exported result of `config` (its card's training record).

    The card names the training command and the resolved train section; every key the config sets
    must hold the card's value (the defaults it leaves out are the card's too).
    """
    card_path = ROOT / "potentials" / f"{molecule}.yaml"
    if not card_path.is_file():
        return False
    training = yaml.safe_load(card_path.read_text()).get("training") or {}
    if str(config.relative_to(ROOT)) not in str(training.get("command", "")):
        return False
    recorded = training.get("config") or {}
    return all(recorded.get(key) == value for key, value in yaml.safe_load(config.read_text())["train"].items())


def learn_start(molecule: str, config: Path) -> Path | None:
    """What the learn loop fine-tunes from: the finished run's best.pt, else the shipped file it was exported to.

    A run folder does not outlive the machine it ran on; the shipped potential (in git) does, and
    `init_from` takes a potential file (its weights, without the export's core repulsion).
    """
    run_dir = output_dir(config)
    if (run_dir / "results.json").is_file():
        return run_dir / "best.pt"
    if shipped_from(molecule, config):
        return ROOT / "potentials" / f"{molecule}.pt"
    return None


def own_learn_config(molecule: str) -> Path | None:
    """The molecule's own learn config, examples/learn/pbe_<molecule>.yaml, if it has one (else ethanol's is used)."""
    path = ROOT / "examples" / "learn" / f"pbe_{molecule}.yaml"
    return path if path.is_file() else None


def learn_overrides(learn_config: Path, md17_dir: str, molecule: str) -> list[str]:
    """A learn config's training.overrides with data.path set to the molecule's rMD17 file (a list
    given on the command line replaces the config's, so every entry is passed on)."""
    overrides = yaml.safe_load(learn_config.read_text())["training"]["overrides"]
    data_path = f"data.path={dataset(md17_dir, molecule)}"
    return [data_path if entry.startswith("data.path=") else entry for entry in overrides]


def learn(args: argparse.Namespace) -> None:
    for molecule in args.only or MOLECULES:
        config = CONFIGS / f"{molecule}.yaml"
        shipped_stage_3 = (CONFIGS / f"{molecule}_base.yaml").is_file()
        if shipped_stage_3 and args.round == 1:
            print(f"{molecule}: its shipped config is already the stage after the loop (--round 2: another); skipped")
            continue
        if args.round > 1 and not shipped_stage_3:
            print(f"{molecule}: --round {args.round} starts from a shipped last stage, and it has none; skipped")
            continue
        out = learn_dir(molecule, args.round).relative_to(ROOT)
        own = own_learn_config(molecule)
        if args.round > 1:
            state = ROOT / out / "learn_state.json"
            if state.is_file():
                # Resumed: the start and labels it recorded, whatever is shipped now (`final` may
                # have written the round's labels into the last stage's config already).
                recorded = json.loads(state.read_text())["config"]["training"]
                command, _ = round_overrides(molecule, args.md17_dir, out, recorded["init_from"])
                training = recorded["overrides"]
            elif (kept := keep_start(molecule)) is not None:
                command, training = round_overrides(molecule, args.md17_dir, out, str(kept[0].relative_to(ROOT)))
            else:
                print(UNCOMMITTED.format(m=molecule))
                continue
        elif own is not None:
            # The molecule's own learn config (start, seed labels and output folder its own).
            command = ["mlff", "--threads", "1", "learn", str(own.relative_to(ROOT))]
            training = learn_overrides(own, args.md17_dir, molecule)
        else:
            start = learn_start(molecule, config)
            if start is None:
                print(f"{molecule}: training not finished and the shipped file is not its result; skipped")
                continue
            # Ethanol's loop with this molecule's config and start (the labels' energies trained: the config's default).
            training = [f"data.path={dataset(args.md17_dir, molecule)}", *LOOP_FINETUNE]
            command = ethanol_loop_command(out, config, str(start.relative_to(ROOT)))
        # Entries holding a list are quoted, so that the flow list around them parses.
        quoted = [f'"{entry}"' if "[" in entry else entry for entry in training]
        command += [f"training.overrides=[{', '.join(quoted)}]"]
        run([*command, "--resume"] if (ROOT / out / "learn_state.json").is_file() else command)


# Epochs of the last stage's fine-tune: compiled, 200 epochs of uracil take about 45 CPU-minutes.
FINAL_EPOCHS = 200


def final_config(
    molecule: str,
    base: dict,
    last_iteration: int,
    labels: list[Path],
    seeds: list[str],
    energies: bool,
    batch_size: int,
    epochs: int = 60,
    round_: int = 1,
    start: str | None = None,
) -> str:
    """Stage 3 of a shipped potential: the loop's member 0 fine-tuned on rMD17 plus the labelled frames.

    `seeds`: labelled files the loop trained on from its start (its own data.extra_train_paths);
    `energies`: whether it trained their energies (data.extra_energies); `batch_size`: the loop's;
    `epochs`: of the fine-tune (60, the first shipped ones, train into runs/potentials/<m>_learned;
    others into <m>_learned_<epochs>ep); `round_`: the learn round it follows (a later one: _r<N> added);
    `start`: a later round's start as its loop recorded it (a `keep_start` copy names its commit).
    """
    iteration = learn_dir(molecule, round_).relative_to(ROOT) / f"iter_{last_iteration:03d}"
    member = iteration / "train" / "member_0" / "best.pt"
    data = {**base["data"], "extra_train_paths": [*seeds, *(str(path.relative_to(ROOT)) for path in labels)]}
    data["extra_energies"] = energies
    # Compiled: 0.60x the eager CPU time per uracil step at batch 32 (docs/training.md#compiled-training).
    train = {"epochs": epochs, "batch_size": batch_size, "lr": 5.0e-4, "warmup_epochs": 1, "compile": True}
    train["loss_weights"] = base["train"]["loss_weights"]
    if energies:
        # As the loop's fine-tunes: the validation frames hold no labelled frame (docs/learn.md, toluene).
        train["keep"] = "last"
    config = {"init_from": str(member), "data": data, "model": base["model"], "train": train}
    config["output_dir"] = f"runs/potentials/{molecule}_learned" + ("" if epochs == 60 else f"_{epochs}ep")
    config["output_dir"] += round_suffix(round_)
    round_option = "" if round_ == 1 else f" --round {round_}"
    own = own_learn_config(molecule)
    loop = str(own.relative_to(ROOT)) if own and round_ == 1 else "examples/learn/pbe_ethanol.yaml with that config"
    loop += " and its best.pt (docs/learn.md)"
    if round_ > 1:
        commit = start_commit(start or "")
        shipped = f"shipped at {commit} ({start}, its card beside it)" if commit else "shipped before"
        loop = f"""examples/learn/pbe_ethanol.yaml with that config, round {round_} (docs/learn.md): from the
#    file {shipped},
#    training on its labels too, {" ".join(ROUND_MD)}"""
    replicas = 5 if round_ == 1 else ROUND_REPLICAS  # the first round: ethanol's loop config's 5
    if labels:
        kept = labels_dir(molecule, round_).relative_to(ROOT)
        stage_2 = f"""frames of its own MD from {len(labels)} iteration(s) labelled with PBE/def2-SVP (pyscf,
#    rMD17's level), kept in {kept}/; iteration {last_iteration} held {replicas} of {replicas}."""
        stage_3 = "the rMD17 frames plus the labelled frames " + (
            "(energies and forces), keeping the last epoch."
            if energies
            else "(their forces only: the exact-Coulomb labels' energy zero is not rMD17's)."
        )
    else:
        stage_2 = f"""its MD held {replicas} of {replicas} replicas at iteration {last_iteration}, after each member's
#    fine-tune on rMD17 alone, so no frame was labelled."""
        stage_3 = "the rMD17 frames (the loop labelled none)."
    header = f"""# The shipped potential potentials/{molecule}.pt, in three stages (issue: potentials that hold):
# 1. potentials/configs/{molecule}_base.yaml (its header: architecture, recipe, CPU cap).
# 2. mlff learn {loop}: a
#    committee of two; {stage_2}
#      python scripts/retrain_potentials.py learn --md17-dir DIR --only {molecule}{round_option}
# 3. This config: member 0 of the loop's last committee fine-tuned for {epochs} epochs (lr 5e-4, cosine, compiled) on
#    {stage_3}
"""
    header += "\n".join(stage_run_lines(molecule, 3)) + "\n"
    return header + yaml.safe_dump(config, sort_keys=False, default_flow_style=None)


def stage_run_lines(molecule: str, stage: int) -> list[str]:
    """The how-to-run lines of a last stage's config header: retrain it, export and benchmark it."""
    return [
        f"# Retrain stage {stage}: python scripts/retrain_potentials.py train --md17-dir DIR --only {molecule}",
        f"#   (= mlff --threads 1 train potentials/configs/{molecule}.yaml data.path=DIR/rmd17_{molecule}.npz"
        " [--resume])",
        f"# Export and stability (card): python scripts/retrain_potentials.py ship --md17-dir DIR --only {molecule}",
        "# data.path: the rMD17 file of the published splits (9,633 frames, the SHA-256 below); give it on the"
        " command line.",
    ]


# The first line of a config header's how-to-run block: a shipped config's (retrain, or the old
# style's "Retrain:" and "Export (...)" lines) or a staged candidate's.
RUN_LINES = ("# Retrain", "# Export", "#   mlff --threads 1 train", "# (its card records")


def base_config(molecule: str, text: str) -> str:
    """The trained config's text as stage 1: its header renamed, its own retrain command, nothing else changed."""
    header = f"# Stage 1 of the shipped {molecule} potential (potentials/configs/{molecule}.yaml is stage 3):"
    lines = text.splitlines()
    # The header's description is stage 1's; from its first how-to-run line on, the header is the
    # old file's own commands (retrain, export, stability: stage 3's now), old-style ones included.
    body = next(index for index, line in enumerate(lines) if not line.startswith("#"))
    commands = next((index for index, line in enumerate(lines[:body]) if line.startswith(RUN_LINES)), body)
    lines = lines[:commands] + lines[body:]
    # A shipped config's first line, or a staged candidate's (potentials/stages/<m>/config.yaml).
    renamed = (
        f"# The shipped potential potentials/{molecule}.pt:",
        f"# Stage 1 of the {molecule} retraining, not shipped (potentials/stages/README.md):",
    )
    if lines[0].startswith(renamed):
        lines[0] = header + lines[0].split(":", 1)[1]
    else:
        lines.insert(0, header)
    command = f"#   mlff --threads 1 train potentials/configs/{molecule}_base.yaml data.path=DIR/rmd17_{molecule}.npz"
    command += " [--resume]"
    first_key = next(index for index, line in enumerate(lines) if not line.startswith("#"))
    return "\n".join([*lines[:first_key], command, *lines[first_key:]]) + "\n"


def final(args: argparse.Namespace) -> None:
    for molecule in args.only or MOLECULES:
        config, base = CONFIGS / f"{molecule}.yaml", CONFIGS / f"{molecule}_base.yaml"
        if base.is_file() and not args.again and args.round == 1:
            print(f"{molecule}: {base.name} exists; its config is already the last stage (--again rewrites it)")
            continue
        loop_dir = learn_dir(molecule, args.round)
        summary_path = loop_dir / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
        iterations = summary.get("iterations", [])
        if not iterations or not iterations[-1].get("stable"):
            print(f"{molecule}: no stable learn run in {summary_path.parent}; skipped")
            continue
        kept = labels_dir(molecule, args.round)
        labels = []
        for iteration in iterations:
            if iteration.get("labelled"):
                kept.mkdir(parents=True, exist_ok=True)
                source = loop_dir / f"iter_{iteration['index']:03d}" / "labelled.extxyz"
                labels.append(kept / f"iter_{iteration['index']:03d}.extxyz")
                shutil.copyfile(source, labels[-1])
        loop_config = json.loads((loop_dir / "learn_state.json").read_text())["config"]
        # Stage 1 is what the loop started from: the shipped config, or a staged candidate's
        # (potentials/stages/<m>/config.yaml: naphthalene, malonaldehyde).
        text = (ROOT / loop_config["training"]["config"]).read_text()
        base_existed = base.is_file()
        if base_existed:
            # --again: the loop's training config may be <m>.yaml itself, by now the last stage
            # (its labels among its data): stage 1 is the base file, which the loop read then.
            text = base.read_text()
            if ROOT / loop_config["training"]["config"] == config:
                training = {**loop_config["training"], "config": str(base.relative_to(ROOT))}
                loop_config = {**loop_config, "training": training}
        else:
            base.write_text(base_config(molecule, text))
        with contextlib.chdir(ROOT):  # the loop's training.config path is relative to the checkout
            loop_training = learn_config_from_dict(loop_config).training_config()
        loop_data = loop_training.data
        last = iterations[-1]["index"]
        seeds, energies = list(loop_data.extra_train_paths), loop_data.extra_energies
        # The loop's batch, not stage 1's: a stage 1 run on a GPU (aspirin: 256) overrides it for the CPU loop.
        batch = loop_training.train.batch_size
        stage_1 = yaml.safe_load(text)
        # A later round's start as the loop recorded it: a kept copy names its commit; a round run
        # before starts were kept (uracil's, from potentials/<m>.pt, since replaced) names none.
        start = loop_config["training"].get("init_from")
        stage_3 = final_config(
            molecule, stage_1, last, labels, seeds, energies, batch, args.epochs, args.round, start=start
        )
        config.write_text(stage_3)
        written = ([] if base_existed else [base]) + [config] + ([kept] if labels else [])
        print(f"wrote {', '.join(str(path.relative_to(ROOT)) for path in written)}")


NUMBER_WORDS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine"}


# The learning rate of an extension's fine-tune (cosine from the top): a last stage after a learn loop
# has annealed already; a one-stage file cut short by its time cap (aspirin) wants more (`--lr`).
EXTEND_LR = 5.0e-4


def rate(lr: float) -> str:
    """A learning rate as the config headers write it: 5e-4, 1.5e-3."""
    mantissa, exponent = f"{lr:e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def extended_config(
    molecule: str,
    text: str,
    epochs: int,
    commit: str,
    start: Path,
    lr: float = EXTEND_LR,
    batch_size: int | None = None,
    extra_labels: Sequence[str] = (),
) -> str:
    """The shipped last stage `text` (potentials/configs/<m>.yaml at `commit`) followed by one more:
    its shipped file, kept at `start`, fine-tuned for `epochs` more epochs on the same frames.

    A config of numbered stages gets one more; a one-stage config (no numbers: trained from scratch
    under a time cap) becomes stage 1 of two, named by its commit, and the run lines become the
    script's. `batch_size`: the new stage's batch (None: the last stage's); `extra_labels`: labelled
    frame files (paths relative to the checkout) the new stage trains on beside the last stage's frames."""
    lines = text.splitlines()
    body = next(index for index, line in enumerate(lines) if not line.startswith("#"))
    commands = next((index for index, line in enumerate(lines[:body]) if line.startswith(RUN_LINES)), body)
    description, run_lines = lines[:commands], lines[commands:body]
    numbered = [int(match.group(1)) for line in description if (match := re.match(r"# (\d+)\. ", line))]
    stage_1, kept = f"potentials/configs/{molecule}.yaml", start.relative_to(ROOT)
    if numbered:
        last = max(numbered)
        description = [line.replace(f"# {last}. This config: ", f"# {last}. ") for line in description]
        run_lines = [re.sub(r"^# Retrain stage \d+:", f"# Retrain stage {last + 1}:", line) for line in run_lines]
        source = [
            f"# {last + 1}. This config: stage {last}'s file as shipped at {commit} (its config: git show",
            f"#    {commit}:{stage_1}), kept in {kept} with its card,",
        ]
    else:
        last = 1
        description = [
            f"# The shipped potential potentials/{molecule}.pt, in two stages (issue: potentials that hold):",
            f"# 1. {stage_1} as shipped at {commit} (its header: architecture, recipe, time cap;",
            f"#    git show {commit}:{stage_1}).",
        ]
        run_lines = stage_run_lines(molecule, 2)
        # Stage 1's line names the commit and its config already.
        source = [f"# 2. This config: stage 1's file as shipped at {commit}, kept in {kept} with its card,"]
    description[0] = re.sub(r"in \w+ stages", f"in {NUMBER_WORDS[last + 1]} stages", description[0])
    config = yaml.safe_load(text)
    batch = "" if batch_size in (None, config["train"].get("batch_size")) else f", batch {batch_size}"
    description += [
        *source,
        f"#    fine-tuned for {epochs} more epochs (lr {rate(lr)}{batch}, cosine from the top, compiled)",
        f"#    on the same frames{''.join(f' plus {path}' for path in extra_labels)}, keeping the last epoch.",
    ]
    config.pop("init_from", None)
    # The new stage runs its epochs: an earlier stage's time cap is not its own.
    train = {key: value for key, value in config["train"].items() if key not in ("max_minutes", "max_cpu_minutes")}
    train.update(epochs=epochs, lr=lr, warmup_epochs=1, compile=True, keep="last")
    if batch_size is not None:
        train["batch_size"] = batch_size
    config["train"] = train
    if extra_labels:
        paths = list(config["data"].get("extra_train_paths") or [])
        config["data"]["extra_train_paths"] = paths + [path for path in extra_labels if path not in paths]
    # The start's commit in the name: a second extension of the same length must not resume the first's
    # run; so the labels it adds (another set, another run), by a short hash of their paths.
    config["output_dir"] = f"runs/potentials/{molecule}_extended_{commit}_{epochs}ep"
    if extra_labels:
        config["output_dir"] += "_x" + hashlib.sha256(" ".join(sorted(extra_labels)).encode()).hexdigest()[:6]
    header = "\n".join([*description, *run_lines]) + "\n"
    config = {"init_from": str(kept), **config}  # first, as in the configs `final` writes
    return header + yaml.safe_dump(config, sort_keys=False, default_flow_style=None)


def extend(args: argparse.Namespace) -> None:
    missing = [path for path in args.extra_labels if not (ROOT / path).is_file()]
    if missing:
        raise SystemExit(
            f"extend --extra-labels: no such file (paths are relative to the checkout): {', '.join(missing)}"
        )
    for molecule in args.only or MOLECULES:
        config = CONFIGS / f"{molecule}.yaml"
        if not shipped_from(molecule, config):
            print(f"{molecule}: its shipped file is not the result of {config.relative_to(ROOT)}; skipped")
            continue
        kept = keep_start(molecule)
        if kept is None:
            print(UNCOMMITTED.format(m=molecule))
            continue
        start, commit = kept
        config.write_text(
            extended_config(
                molecule, config.read_text(), args.epochs, commit, start, args.lr, args.batch_size, args.extra_labels
            )
        )
        print(f"wrote {config.relative_to(ROOT)}, {start.relative_to(ROOT)} (and its card)")


# The files of a shipped potential that `ship` replaces, relative to the repository ({m}: the molecule).
# The stability benchmark's committed files of one molecule (potentials/stability-cpu/<m>/).
STABILITY_FILES = ("summary.json", "hr.png", "bond_deviation.png")
SHIPPED_FILES = (
    "potentials/{m}.pt",
    "potentials/{m}.yaml",
    "potentials/stability-cpu/stability.json",
    "potentials/stability-cpu/report.md",
    *(f"potentials/stability-cpu/{{m}}/{name}" for name in STABILITY_FILES),
)
# What the stability benchmark leaves beside those (not in git): the staged file's MD, moved with it.
STABILITY_RUN_FILES = ("replica_*.h5", "checkpoint.pt", "thermo.csv")


def replaces(new_card: dict, old_card: dict | None) -> bool:
    """Whether a new potential's card beats the shipped one's: no more collapsed seeds, and fewer
    of them or a lower test force MAE (a card without a stability row never replaces one with it)."""
    if old_card is None:
        return True
    new_stability, old_stability = new_card.get("stability") or {}, old_card.get("stability") or {}
    if "collapsed_seeds" not in new_stability:
        return "collapsed_seeds" not in old_stability
    new_collapsed = new_stability["collapsed_seeds"]
    old_collapsed = old_stability.get("collapsed_seeds", new_stability["seeds"])
    new_force = new_card["test_metrics"]["force_mae_mev_per_a"]
    old_force = old_card["test_metrics"]["force_mae_mev_per_a"]
    return new_collapsed <= old_collapsed and (new_collapsed < old_collapsed or new_force < old_force)


def stage_header(molecule: str, config: Path, folder: str) -> str:
    """The comment that heads a staged config: what it is and how to rerun it from its new place."""
    staged = f"potentials/stages/{folder}/config.yaml"
    return (
        f"# A stage of the {molecule} retraining, not shipped (potentials/stages/README.md): trained as\n"
        f"# {config.relative_to(ROOT)}, whose shipped file it did not beat in the stability benchmark.\n"
        f"#   mlff --threads 1 train {staged} data.path=DIR/rmd17_{molecule}.npz [--resume]\n"
        f"# (its card records the same run under {config.relative_to(ROOT)}, the name it was trained under)\n"
    )


def committed(relative: str) -> bytes | None:
    """A file as the last commit holds it (the shipped state), or None where git has no such file."""
    result = subprocess.run(["git", "show", f"HEAD:{relative}"], cwd=ROOT, capture_output=True)
    return result.stdout if result.returncode == 0 else None


def stage_folder(molecule: str, run_dir: Path) -> str:
    """The folder under potentials/stages/ a candidate is staged in: the molecule's name, or the run
    folder's name where the last commit already holds a stage of that molecule (learn configs and
    docs point at a committed stage; a later candidate must not overwrite it)."""
    folder, number = molecule, 0
    while committed(f"potentials/stages/{folder}/{molecule}.pt") is not None:
        folder = f"{run_dir.name}_{number}" if number else run_dir.name
        number += 1
    return folder


def stage(molecule: str, folder: str) -> Path:
    """Move the just-benchmarked potential to potentials/stages/<folder>/ and put the shipped one back
    (its file, card, config and stability rows as the last commit holds them); its MD goes to
    runs/stages/<folder>/stability/<m>/. Returns the folder."""
    staged = ROOT / "potentials" / "stages" / folder
    if staged.exists():
        shutil.rmtree(staged)
    (staged / "stability").mkdir(parents=True)
    config = CONFIGS / f"{molecule}.yaml"
    body = "".join(line for line in config.read_text().splitlines(keepends=True) if not line.startswith("#"))
    (staged / "config.yaml").write_text(stage_header(molecule, config, folder) + body)
    shutil.move(ROOT / "potentials" / f"{molecule}.pt", staged / f"{molecule}.pt")
    shutil.move(ROOT / "potentials" / f"{molecule}.yaml", staged / f"{molecule}.yaml")
    stability = ROOT / "potentials" / "stability-cpu"
    for name in STABILITY_FILES:
        shutil.copy2(stability / molecule / name, staged / "stability" / name)
    rows = json.loads((stability / "stability.json").read_text())["rows"]
    row = next(row for row in rows if row["molecule"] == molecule)
    (staged / "stability" / "row.json").write_text(json.dumps(row, indent=2) + "\n")
    # The MD (trajectories, checkpoint) beside its summary, where `--recorded` reads them.
    recorded = ROOT / "runs" / "stages" / folder / "stability" / molecule
    if recorded.exists():
        shutil.rmtree(recorded)
    recorded.mkdir(parents=True)
    shutil.copy2(stability / molecule / "summary.json", recorded / "summary.json")
    for pattern in STABILITY_RUN_FILES:
        for path in (stability / molecule).glob(pattern):
            shutil.move(path, recorded / path.name)
    for relative in (*SHIPPED_FILES, f"potentials/configs/{molecule}.yaml"):
        content = committed(relative.format(m=molecule))
        if content is not None:
            (ROOT / relative.format(m=molecule)).write_bytes(content)
    return staged


def ship(args: argparse.Namespace) -> None:
    for molecule in args.only or MOLECULES:
        run_dir = output_dir(CONFIGS / f"{molecule}.yaml")
        if not (run_dir / "results.json").is_file():
            print(f"{molecule}: training not finished; skipped")
            continue
        data = dataset(args.md17_dir, molecule)
        potential = f"potentials/{molecule}.pt"
        run(
            ["mlff", "--threads", "1", "export", str((run_dir / "best.pt").relative_to(ROOT)), "-o", potential]
            + ["--dtype", "float32", "--core-repulsion", CORE_REPULSION, "--reference-data", data, "--check-data", data]
        )
        # The folder named: by name alone, an editable install finds its own checkout's potentials,
        # not this tree's (a worktree's bench ran the old toluene file and wrote the row into its card).
        # The compiled engine: the same MD at 1.8x the steps/s (naphthalene's 5 seeds, one thread).
        run(
            ["mlff", "--threads", "1", "bench", "stability", "--molecules", molecule, "--update-cards"]
            + ["--potentials-dir", "potentials", "-o", "potentials/stability-cpu", "--engine", "torch-compiled"]
        )
        shipped_card = committed(f"potentials/{molecule}.yaml")
        new_card = yaml.safe_load((ROOT / "potentials" / f"{molecule}.yaml").read_text())
        if replaces(new_card, yaml.safe_load(shipped_card) if shipped_card is not None else None):
            print(f"{molecule}: shipped (better than the committed file); commit it")
            continue
        if args.accept:
            # A judgement the gate cannot make (naphthalene: 300 ps held at a higher force error).
            print(f"{molecule}: shipped although the gate prefers the committed file (--accept); commit it")
            continue
        folder = stage_folder(molecule, run_dir)
        staged = stage(molecule, folder).relative_to(ROOT)
        print(
            f"{molecule}: not better than the committed file; staged in {staged}, the shipped file restored."
            f" Its collapses: mlff --threads 1 bench collapse {staged}/{molecule}.pt --recorded"
            f" runs/stages/{folder}/stability --replay --dft-frames 1 --dft-collapse-frame"
            f" --out runs/stages/{folder}/collapse"
        )


def status(args: argparse.Namespace) -> None:
    for config in [PRETRAIN, *(CONFIGS / f"{molecule}.yaml" for molecule in MOLECULES)]:
        if not config.is_file():
            continue
        folder = output_dir(config)
        metrics = folder / "metrics.jsonl"
        lines = metrics.read_text().splitlines() if metrics.is_file() else []
        last = json.loads(lines[-1]) if lines else {}
        state = "finished" if (folder / "results.json").is_file() else ("running/stopped" if lines else "not started")
        print(
            f"{config.stem:14s} {state:16s} epoch {last.get('epoch', '-')!s:>5} "
            f"CPU-h {last.get('cpu_seconds_total', 0) / 3600:.2f} val F {last.get('val_force_mae_mev_per_a', '-')}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    steps = {
        "pretrain": pretrain,
        "train": train,
        "learn": learn,
        "final": final,
        "extend": extend,
        "ship": ship,
        "status": status,
    }
    parser.add_argument("step", choices=list(steps))
    parser.add_argument("--md17-dir", default="~/.cache/mlff/datasets", help="folder of the rmd17_<molecule>.npz files")
    parser.add_argument("--xtb-dir", default="~/.cache/mlff/datasets", help="folder of the xtb_<molecule>.npz files")
    parser.add_argument("--slot", type=int, default=0)
    parser.add_argument("--slots", type=int, default=1)
    parser.add_argument("--only", nargs="+", choices=MOLECULES, help="these molecules only")
    parser.add_argument(
        "--epochs", type=int, default=FINAL_EPOCHS, help="final, extend: epochs of the new stage's fine-tune"
    )
    parser.add_argument(
        "--lr", type=float, default=EXTEND_LR, help="extend: the new stage's learning rate (cosine from the top)"
    )
    parser.add_argument("--batch-size", type=int, help="extend: the new stage's batch (default: the last stage's)")
    parser.add_argument(
        "--extra-labels",
        nargs="+",
        default=[],
        metavar="PATH",
        help="extend: labelled frame files (committed, relative to the checkout) the new stage also trains on",
    )
    parser.add_argument("--again", action="store_true", help="final: rewrite the last stage of a molecule that has one")
    parser.add_argument(
        "--accept",
        action="store_true",
        help="ship: keep the new file even where the gate (50 ps stability, test force MAE) prefers the committed one",
    )
    parser.add_argument(
        "--round",
        type=int,
        default=1,
        help="learn, final: a later learn round from the shipped last stage (its own run folder; 10 replicas x 100 ps)",
    )
    args = parser.parse_args()
    steps[args.step](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
