"""Can every Ray worker reach the store? Asked before any work starts, answered with a file.

Workers write shards (encode) and graphs (index) into the store themselves, so the store must be
one directory that the driver and every worker see at the same path: any local folder for a
local runtime, a shared filesystem (NFS, Lustre, CephFS, a FUSE mount of object storage) on a
cluster. The driver writes a probe file holding a random token; each worker must read that
token at the same path and write a probe of its own, which the driver must then see. A node
with the path unmounted, a different folder at that path, or a read-only mount each fail here,
with the node named, instead of as lost shards later.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sbert_cli.errors import InputError

_PROBE = ".probe-{token}.tmp-{tag}"  # a temp name: whatever a crash leaves, the next run removes
PROBE_TIMEOUT_S = 120


def _probe_file(directory: Path, token: str, tag: str) -> Path:
    return directory / _PROBE.format(token=token, tag=tag)


def place_probe(directory: Path) -> str:
    """Driver side: create `directory` and a probe in it; returns the token workers must read."""
    directory.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    _probe_file(directory, token, "driver").write_text(token, encoding="utf-8")
    return token


def answer_probe(directory: str, token: str, tag: str) -> tuple[str, str | None]:
    """Worker side: (this node's name, what is wrong or None)."""
    node = socket.gethostname()
    folder = Path(directory)
    try:
        seen = _probe_file(folder, token, "driver").read_text(encoding="utf-8")
    except OSError as exc:
        return node, f"cannot read {folder} ({exc.strerror or exc})"
    if seen != token:
        return node, f"{folder} is another directory there"
    try:
        _probe_file(folder, token, tag).write_text(token, encoding="utf-8")
    except OSError as exc:
        return node, f"cannot write to {folder} ({exc.strerror or exc})"
    return node, None


def finish_probe(directory: Path, token: str, answers: dict[str, tuple[str, str | None]], store: Path) -> None:
    """Driver side: check every worker's answer (tag -> (node, problem)) and that the files they
    wrote are visible here, remove the probes, and raise one InputError naming the nodes that
    cannot use the store."""
    problems: dict[str, str] = {}
    for tag, (node, problem) in answers.items():
        if problem is None and not _probe_file(directory, token, tag).is_file():
            problem = f"writes to {directory} do not reach this machine"
        if problem is not None:
            problems.setdefault(node, problem)
    for path in directory.glob(f".probe-{token}.tmp-*"):
        path.unlink(missing_ok=True)
    if problems:
        where = "; ".join(f"node {node}: {problem}" for node, problem in sorted(problems.items()))
        raise InputError(
            f"{store}: Ray workers cannot use this store ({where}); on a cluster the store must be on a "
            "filesystem every node mounts at the same path (NFS, Lustre, CephFS, a FUSE mount of object storage)"
        )


def check_visible(ray: Any, directory: Path, store: Path, ask: Callable[[str, str], dict[str, Any]]) -> None:
    """Probe `directory` (inside `store`) from the workers: `ask(directory, token)` starts one
    `answer_probe` per worker or node and returns {tag: its ref}. A folder the probe created is
    removed again when it stays empty, so a new store looks as a local run leaves it."""
    created = not directory.exists()
    token = place_probe(directory)
    refs = ask(str(directory), token)
    try:
        answers = dict(zip(refs, ray.get(list(refs.values()), timeout=PROBE_TIMEOUT_S), strict=True))
    except ray.exceptions.GetTimeoutError:
        answers = {tag: ("?", f"no answer within {PROBE_TIMEOUT_S} s") for tag in refs}
    finish_probe(directory, token, answers, store)
    if created and not any(directory.iterdir()):
        directory.rmdir()
