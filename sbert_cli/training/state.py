"""The output directory of a training run, and resuming it.

    MODEL_DIR/                       the trained model (sentence-transformers layout), when done
    MODEL_DIR/README.md              model card
    MODEL_DIR/sbert-train.json       the record: what made the model; `complete: true` when done
    MODEL_DIR/.sbert-train/          work in progress, removed when the model is written:
        command.json                 what the run was asked to do (data checksums, settings)
        checkpoints/checkpoint-N/    the trainer's checkpoints; COMPLETE_MARK once fully written
        .lock                        held by the process training into the directory

The same command finds command.json equal and continues from the newest complete checkpoint; a
different one is refused (unless --force), so two runs never mix in one directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sbert_cli.errors import InputError, SbertError
from sbert_cli.store.atomic import write_atomic

WORK_DIR = ".sbert-train"
RECORD_FILE = "sbert-train.json"
COMMAND_FILE = "command.json"
CHECKPOINT_DIR = "checkpoints"
COMPLETE_MARK = "sbert-complete"
LOCK_FILE = ".lock"
_CHECKPOINT = re.compile(r"checkpoint-(\d+)$")


def write_json(path: Path, value: object) -> None:
    write_atomic(path, (json.dumps(value, indent=1, sort_keys=True) + "\n").encode("utf-8"))


def read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SbertError(f"{path}: unreadable ({exc}); remove it or use --force") from exc
    return value if isinstance(value, dict) else None


@dataclass(frozen=True)
class RunDir:
    output: Path

    @property
    def work(self) -> Path:
        return self.output / WORK_DIR

    @property
    def checkpoints(self) -> Path:
        return self.work / CHECKPOINT_DIR

    @property
    def record_path(self) -> Path:
        return self.output / RECORD_FILE

    def record(self) -> dict | None:
        return read_json(self.record_path)

    def prepare(self, command: dict, force: bool) -> str:
        """What to do here: `done` (this command already finished here), `resume` or `fresh`;
        refuses a directory holding another command's run, or anything else, unless `force`."""
        record = self.record()
        if not force and record and record.get("complete") and record.get("command") == command:
            return "done"
        saved = read_json(self.work / COMMAND_FILE)
        if not force and saved == command:
            return "resume"
        if not force:
            previous = saved or (record or {}).get("command")
            if previous is not None:
                changed = ", ".join(
                    sorted(k for k in set(previous) | set(command) if previous.get(k) != command.get(k))
                )
                raise InputError(
                    f"{self.output}: holds a training run of a different command (differs in: {changed}); "
                    "use another output directory, or --force to start over here"
                )
            if self.output.exists() and any(p.name != WORK_DIR for p in self.output.iterdir()):
                raise InputError(f"{self.output}: exists and is not empty; use a new directory, or --force")
        self.clear(record)
        self.work.mkdir(parents=True, exist_ok=True)
        write_json(self.work / COMMAND_FILE, command)
        return "fresh"

    def clear(self, record: dict | None) -> None:
        """Remove a previous run: its work in progress and the files its record says it wrote (the
        lock file stays: this process holds it)."""
        if self.checkpoints.exists():
            shutil.rmtree(self.checkpoints)
        (self.work / COMMAND_FILE).unlink(missing_ok=True)
        for name in (record or {}).get("files", []):
            path = self.output / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()

    # -- checkpoints -------------------------------------------------------------------------------
    def mark_complete(self, checkpoint: Path) -> None:
        """Called once the trainer has written every file of `checkpoint`."""
        write_atomic(checkpoint / COMPLETE_MARK, b"")

    def last_checkpoint(self) -> Path | None:
        """The newest fully written checkpoint; half-written ones (a kill during a save) are removed."""
        if not self.checkpoints.is_dir():
            return None
        found = []
        for path in self.checkpoints.iterdir():
            match = _CHECKPOINT.match(path.name)
            if not match or not path.is_dir():
                continue
            if (path / COMPLETE_MARK).is_file():
                found.append((int(match.group(1)), path))
            else:
                shutil.rmtree(path)
        return max(found)[1] if found else None

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """One training process per directory; flock is released by the kernel even on kill -9."""
        if self.output.exists() and not self.output.is_dir():
            raise InputError(f"{self.output}: exists and is not a directory")
        created = not self.work.exists()
        self.work.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.work / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise SbertError(f"{self.output}: another sbert train is writing this directory") from None
            yield
        finally:
            os.close(fd)
            # A refused run leaves no trace: drop the work directory if all it holds is our lock.
            if created and self.work.is_dir() and set(os.listdir(self.work)) <= {LOCK_FILE}:
                shutil.rmtree(self.work)

    def finish(self) -> None:
        """The model is written and recorded: the work in progress goes."""
        shutil.rmtree(self.work, ignore_errors=True)
