"""How much of the CPUs other processes took while something was timed: a calibration
(encoding/calibrate.py) measured on a busy machine is no verdict to keep.

Read from /proc/stat: the machine's busy time (user, nice, system, irq, softirq) less this
process's own CPU time, plus the time the hypervisor gave to other guests (steal), over the wall
time: in cores. One engine timed while another process ran and the next timed after it ended
compare the other process, not the engines (this project's EPYC: torch bf16 was cached as the
faster, measured so; OpenVINO bf16 ran 20-40% faster on the same texts afterwards).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

PROC_STAT = Path("/proc/stat")
BUSY_FIELDS = (0, 1, 2, 5, 6)  # user nice system (idle iowait) irq softirq, after "cpu"
STEAL_FIELD = 7
CONTENDED_CORES = 0.25  # others took more than this many cores on average: the timing is doubtful
PROBE_S = 0.25  # how long `others_now` watches


def machine_seconds() -> float | None:
    """CPU seconds the CPUs this process may run on spent busy, or running other guests (steal),
    since boot; None where /proc/stat cannot be read (not Linux). Only those CPUs: in a container
    pinned to a few of a large host's, the rest of the host is not this process's competition."""
    try:
        allowed = {f"cpu{n}" for n in os.sched_getaffinity(0)}
    except AttributeError:  # no affinity to read: the machine's total line
        allowed = {"cpu"}
    try:
        lines = [line.split() for line in PROC_STAT.read_text(encoding="ascii").splitlines()]
        rows = [[int(v) for v in line[1:]] for line in lines if line and line[0] in allowed]
    except (OSError, ValueError):
        return None
    if not rows:  # per-CPU lines missing: the machine's total
        rows = [[int(v) for v in line[1:]] for line in lines if line and line[0] == "cpu"]
    ticks = sum(sum(row[i] for i in (*BUSY_FIELDS, STEAL_FIELD) if i < len(row)) for row in rows)
    return ticks / os.sysconf("SC_CLK_TCK") if rows else None


def own_seconds() -> float:
    """This process's CPU seconds, all its threads."""
    times = os.times()
    return times.user + times.system


class Others:
    """`with Others() as others:` ... `others.cores`: the cores other processes took meanwhile
    (None where it cannot be told)."""

    def __enter__(self) -> Others:
        self.cores: float | None = None
        self._start = (machine_seconds(), own_seconds(), time.perf_counter())
        return self

    def __exit__(self, *exc) -> None:
        machine, own, wall = machine_seconds(), own_seconds(), time.perf_counter()
        if machine is None or self._start[0] is None or wall <= self._start[2]:
            return
        others = (machine - self._start[0]) - (own - self._start[1])
        self.cores = max(0.0, others / (wall - self._start[2]))


def others_now(window_s: float = PROBE_S) -> float | None:
    """The cores other processes take right now, watched for `window_s` while this one waits."""
    with Others() as others:
        time.sleep(window_s)
    return others.cores
