"""The scaled-out shape as real processes: ``vigil serve --no-worker``, ``vigil worker``s and
one ``vigil remediator``, sharing one DATABASE_URL and one Redis (under a queue prefix)."""

from __future__ import annotations

from dataclasses import dataclass, field

from tests.e2e.procs import Processes, VigilProcess
from tests.e2e.vigil_api import Api


@dataclass
class Cluster:
    procs: Processes
    api: Api
    remediator: VigilProcess
    worker_env: dict[str, str]
    workers: list[VigilProcess] = field(default_factory=list)

    def add_workers(self, count: int = 1, *, wait: bool = True) -> list[VigilProcess]:
        """Start ``count`` more workers (in parallel); by default return once healthy."""
        started = []
        for _ in range(count):
            name = f"worker-{len(self.workers) + 1}"
            self.workers.append(self.procs.worker(name, env=self.worker_env, wait=False))
            started.append(self.workers[-1])
        if wait:
            self.procs.wait_healthy(*started)
        return started

    def worker_by_name(self, actor: str) -> VigilProcess:
        """The worker whose history actor (``worker@host:PID:tag``) is ``actor``."""
        pid = int(actor.split("@", 1)[1].split(":")[1])
        for worker in self.workers:
            if worker.pid == pid:
                return worker
        raise AssertionError(f"no worker started by this test is {actor}" + self.procs.tails())


def start_cluster(
    procs: Processes, *, database_url: str, redis_url: str, queue_prefix: str, workers: int
) -> Cluster:
    """The remediator, the API and ``workers`` workers, started in parallel; each healthy."""
    shared = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "VIGIL_QUEUE_PREFIX": queue_prefix,
        "VIGIL_DB_POOL_SIZE": "4",
    }
    remediator = procs.remediator(env=shared, wait=False)
    api_proc = procs.serve(no_worker=True, env=shared, wait=False)
    worker_env = {**shared, "VIGIL_REMEDIATOR_URL": remediator.url}
    cluster = Cluster(procs, Api(api_proc.url, procs), remediator, worker_env)
    started = cluster.add_workers(workers, wait=False)
    procs.wait_healthy(remediator, api_proc, *started)
    return cluster
