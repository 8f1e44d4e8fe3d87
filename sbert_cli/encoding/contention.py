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
    """CPU seconds the machine spent busy, or running other guests (steal), since boot; None
    where /proc/stat cannot be read (not Linux)."""
    try:
        first = PROC_STAT.read_text(encoding="ascii").split("\n", 1)[0].split()
        ticks = [int(v) for v in first[1:]]
    except (OSError, ValueError, IndexError):
        return None
    steal = ticks[STEAL_FIELD] if len(ticks) > STEAL_FIELD else 0
    return (sum(ticks[i] for i in BUSY_FIELDS if i < len(ticks)) + steal) / os.sysconf("SC_CLK_TCK")


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
