"""A local Ray cluster for tests and benchmarks: a head that runs no jobs and worker nodes of one CPU each.

`ray.cluster_utils.Cluster` starts real Ray processes (GCS, raylets, the dashboard that serves
Ray Jobs) on this host, each node its own raylet, so a node can be killed like a lost machine.
The cluster gets its own temporary folder, so another Ray instance on this host (another
test session) is never the one a job driver's `RAY_ADDRESS=auto` finds.
"""

from __future__ import annotations

import os
import shutil
import tempfile

OBJECT_STORE_BYTES = 80 * 2**20  # Ray would reserve about 30 % of RAM per node
# A killed node is declared dead after about 3 s instead of Ray's default of about 30 s.
FAST_HEALTH_CHECKS = {"health_check_initial_delay_ms": 1000, "health_check_period_ms": 1000,
                      "health_check_timeout_ms": 1000, "health_check_failure_threshold": 3}


def start_cluster(nodes: int = 2, *, cpus_per_node: int = 1):
    """Starts a head (0 CPUs: jobs never run there) and `nodes` worker nodes; returns the `Cluster`.

    Args:
        nodes: how many worker nodes.
        cpus_per_node: the CPUs each worker node offers (each Aperture job takes one).

    Returns:
        The cluster; its Ray Jobs address is `dashboard_address(cluster)`. Stop it with `stop_cluster`.
    """
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    from ray._common.utils import get_default_ray_temp_dir
    from ray.cluster_utils import Cluster

    # Whatever its temp_dir, Ray writes the head's address to <system temp>/ray/ray_current_cluster, a folder only
    # `ray start` makes: on a machine where Ray never ran, the Cluster failed with FileNotFoundError.
    os.makedirs(get_default_ray_temp_dir(), exist_ok=True)

    temp_dir = tempfile.mkdtemp(prefix="ray-ap-", dir="/tmp")  # short: Ray's socket paths must stay < 108 bytes
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": True, "dashboard_port": 0, "object_store_memory": OBJECT_STORE_BYTES,
        "temp_dir": temp_dir, "_system_config": FAST_HEALTH_CHECKS})
    cluster.aperture_temp_dir = temp_dir
    for _ in range(nodes):
        add_worker_node(cluster, cpus=cpus_per_node)
    cluster.wait_for_nodes()
    _wait_for_job_agent(dashboard_address(cluster))
    return cluster


def _wait_for_job_agent(address: str, timeout: float = 180.0) -> None:
    """Waits until Ray Jobs accepts a submission: the head answers "No available agent" until its agent is up
    (seconds, or a minute on a loaded machine). Submits a no-op job named `warm-up`."""
    import time

    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(address)
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.submit_job(entrypoint="true", submission_id="warm-up")
            return
        except RuntimeError as error:
            if "No available agent" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(1)


def stop_cluster(cluster) -> None:
    """Stops every process of the cluster and removes its temporary folder (Ray's logs and sockets)."""
    cluster.shutdown()
    shutil.rmtree(cluster.aperture_temp_dir, ignore_errors=True)


def add_worker_node(cluster, *, cpus: int = 1):
    """Adds one worker node with `cpus` CPUs; returns Ray's node handle (`.node_id`)."""
    return cluster.add_node(num_cpus=cpus, object_store_memory=OBJECT_STORE_BYTES)


def dashboard_address(cluster) -> str:
    """The cluster's Ray Jobs (dashboard) address, as RAY_ADDRESS takes it."""
    return "http://" + cluster.head_node.webui_url
