"""One molecule's rows from several `mlff bench stability` runs, into one JSON the docs' tables read.

Each run is a stability.json that `mlff bench stability -o DIR` wrote, as a path or as `REV:PATH`
(the file as git commit REV holds it: a run whose row a later run of the same folder replaced).
Every row keeps the benchmark's fields and gains `candidate` (its label) and `source`:

    python scripts/collect_stability_rows.py --molecule naphthalene -o docs/data/stability_300_naphthalene.json \\
        --row "12.7 file=d0db0b6:potentials/stability-300/stability.json" \\
        --row "shipped 11.9 file=potentials/stability-300/stability.json"
"""

import argparse
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from mlff.utils import atomic_write_text


def read_run(source: str, cwd: Path) -> dict:
    """A stability.json as a path, or as git holds it at a commit (`REV:PATH`)."""
    path = cwd / source
    if path.is_file():
        return json.loads(path.read_text())
    result = subprocess.run(["git", "show", source], cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{source}: neither a file nor REV:PATH that git holds ({result.stderr.strip()})")
    return json.loads(result.stdout)


def collect(molecule: str, labelled: Sequence[tuple[str, str]], cwd: Path) -> list[dict]:
    """The molecule's row of each (label, source) run, in order, with `candidate` and `source`."""
    rows = []
    for label, source in labelled:
        found = [row for row in read_run(source, cwd)["rows"] if row["molecule"] == molecule]
        if len(found) != 1:
            raise SystemExit(f"{source}: {len(found)} rows of {molecule}, expected one")
        rows.append({"candidate": label, "source": source, **found[0]})
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--molecule", required=True)
    parser.add_argument("--row", action="append", required=True, metavar="LABEL=SOURCE")
    parser.add_argument("-o", "--out", required=True, type=Path)
    args = parser.parse_args(argv)
    labelled = []
    for item in args.row:
        label, separator, source = item.partition("=")
        if not separator or not label or not source:
            parser.error(f"--row {item!r}: expected LABEL=SOURCE")
        labelled.append((label, source))
    rows = collect(args.molecule, labelled, Path.cwd())
    atomic_write_text(args.out, json.dumps({"molecule": args.molecule, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}: {len(rows)} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
