"""What the `sbert serve` tests share: hash-model stores made with the CLI, and a real server in a
subprocess (which cannot see conftest's hash model, so a launcher registers it there)."""

from __future__ import annotations

import contextlib
import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from typer.testing import CliRunner

from sbert_cli.cli import app

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
SAMPLE_CORPUS = ROOT / "sample_corpus"
MODEL = "hash:32"
runner = CliRunner()

# Runs `sbert serve ARGS...` with `hash:` served by tests/fakes.py; with $SBERT_TEST_DELAY the
# model sleeps that long in each run, after touching $SBERT_TEST_MARKER (a request is in flight).
LAUNCHER = f"""
import os, sys, time
sys.path.insert(0, {str(TESTS)!r})
import fakes
from sbert_cli.encoding.loader import ENCODER_FACTORIES

delay = float(os.environ.get("SBERT_TEST_DELAY", "0"))
if delay:
    original = fakes.HashEncoder.run

    def slow_run(self, window):
        open(os.environ["SBERT_TEST_MARKER"], "w").close()
        time.sleep(delay)
        return original(self, window)

    fakes.HashEncoder.run = slow_run
ENCODER_FACTORIES["hash"] = fakes.hash_factory
from sbert_cli.cli import main

sys.argv = ["sbert", "serve", *sys.argv[1:]]
main()
"""
STARTED = re.compile(r"^sbert: serving .* on (http://\S+)$")


def sbert(*args: str | Path):
    return runner.invoke(app, [str(a) for a in args])


def make_store(path: Path, *inputs: str | Path, index: bool = True) -> Path:
    """A hash-model store of `inputs` (default: the sample corpus, 500 rows), indexed."""
    result = sbert("encode", *(inputs or [SAMPLE_CORPUS]), "-o", path, "--model", MODEL, "-q")
    assert result.exit_code == 0, result.output
    if index:
        result = sbert("index", path, "-q")
        assert result.exit_code == 0, result.output
    return path


@dataclass
class RunningServer:
    process: subprocess.Popen
    url: str
    stderr: list[str] = field(default_factory=list)


@contextlib.contextmanager
def running_server(store: Path, *args: str, env: dict | None = None, timeout: float = 60) -> Iterator[RunningServer]:
    """`sbert serve STORE --port 0 ARGS` in a subprocess, once its start-up line says where it listens."""
    command = [sys.executable, "-c", LAUNCHER, str(store), "--port", "0", *args]
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=environment)
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_pump, args=(process, lines), daemon=True).start()
    server = RunningServer(process, "")
    deadline = time.monotonic() + timeout
    try:
        while not server.url:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            if line is None:
                raise AssertionError(f"sbert serve exited {process.wait()}: {''.join(server.stderr)}")
            server.stderr.append(line)
            match = STARTED.match(line.strip())
            server.url = match.group(1) if match else ""
        server.lines = lines  # type: ignore[attr-defined]
        yield server
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
        while True:
            try:
                line = lines.get(timeout=2)
            except queue.Empty:
                break
            if line is None:
                break
            server.stderr.append(line)


def _pump(process: subprocess.Popen, lines: queue.Queue) -> None:
    for line in process.stderr:
        lines.put(line)
    lines.put(None)
