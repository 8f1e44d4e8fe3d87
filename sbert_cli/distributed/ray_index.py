"""`sbert index --partitions N --ray`: each partition's graph built as a Ray task.

The driver plans and commits exactly as for local processes (retrieval/partitions.py); only
where `build_partition` runs changes. Tasks read their shards from the store and write their
graph into STORE/index/ under a new generation's name, so every node must see the store (checked
first, on every node with CPUs); a task that fails is retried by Ray, and its file is simply
written again: nothing refers to it until the driver commits index.json.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sbert_cli.distributed.paths import answer_probe, check_visible
from sbert_cli.distributed.session import check_address, import_ray, ray_session, worker_error
from sbert_cli.retrieval.graph import index_dir
from sbert_cli.retrieval.partition_build import PartitionExecutor, PartitionJob, PartitionResult, build_partition

TASK_RETRIES = 3


def _probe_nodes(ray: Any, store: Path) -> None:
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n["NodeID"] for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU")]
    probe = ray.remote(answer_probe)

    def ask(directory: str, token: str) -> dict[str, Any]:
        return {
            node[:12]: probe.options(
                num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)
            ).remote(directory, token, node[:12])
            for node in nodes
        }

    check_visible(ray, index_dir(store), store, ask)


def ray_executor(address: str | None) -> PartitionExecutor:
    """Build partitions as Ray tasks on a local runtime (`address` None) or a cluster."""
    import_ray()  # a missing extra is said before the store is locked
    address = check_address(address)

    def run(jobs: list[PartitionJob], done: Callable[[PartitionResult], None]) -> list[PartitionResult]:
        with ray_session(address, num_cpus=os.cpu_count()) as ray:
            _probe_nodes(ray, Path(jobs[0].store))
            # Threads per task: the cluster's CPUs shared by the tasks, at most one node's worth.
            largest = max(int(n.get("Resources", {}).get("CPU", 1)) for n in ray.nodes() if n.get("Alive"))
            threads = max(1, min(largest, int(ray.cluster_resources().get("CPU", 1)) // len(jobs)))
            task = ray.remote(build_partition).options(num_cpus=threads, max_retries=TASK_RETRIES)
            refs = {task.remote(dataclasses.replace(job, threads=threads)): job for job in jobs}
            results = []
            while refs:
                ready, _ = ray.wait(list(refs), num_returns=1)
                for ref in ready:
                    refs.pop(ref)
                    try:
                        results.append(ray.get(ref))
                    except ray.exceptions.RayError as exc:
                        raise worker_error(ray, exc, "building a partition") from None
                    done(results[-1])
            return results

    return run
