"""The data the benchmarks read, and one rule when it is absent.

Every benchmark takes `--data DIR`: the shared data folder (`books/*.txt`, three novels one
paragraph per line; `stsb/sts-dev.csv`, `stsb/sts-train.csv`, the STS benchmark), by default
`../shared/data` beside the repository. When what a benchmark needs is not there it says so in
one line on stderr and exits 2, as the CLI does for bad input: no traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data"
BOOKS = "books/*.txt (novels, one paragraph per line)"
STS_DEV = "stsb/sts-dev.csv (STS benchmark dev, tab-separated)"
STS_TRAIN = "stsb/sts-train.csv (STS benchmark train, tab-separated)"


def add_data_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_DATA,
        metavar="DIR",
        help="the data folder: books/*.txt, stsb/sts-{dev,train}.csv [default: ../shared/data beside the repository]",
    )


def require(data: Path, *needs: str) -> None:
    """Exit 2 with one line naming what is missing, e.g. `require(args.data, BOOKS, STS_DEV)`."""
    missing = [need for need in needs if not _present(data, need.split(" ", 1)[0])]
    if missing:
        script = Path(sys.argv[0]).name
        print(f"{script}: needs {'; '.join(missing)} under {data}, not found there; pass --data DIR", file=sys.stderr)
        raise SystemExit(2)


def require_file(path: Path, what: str) -> None:
    """Exit 2 with one line when a file named by an option is missing."""
    if not path.is_file():
        print(f"{Path(sys.argv[0]).name}: needs {what} at {path}, not found there", file=sys.stderr)
        raise SystemExit(2)


def _present(data: Path, pattern: str) -> bool:
    return any(data.glob(pattern)) if "*" in pattern else (data / pattern).is_file()
