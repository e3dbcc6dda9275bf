"""The local Ray every Ray benchmark starts: 2 CPUs, no dashboard, quiet drivers."""

from __future__ import annotations


def init_local_ray(one_omp_thread: bool = True):
    """``ray.init`` of a new local cluster for a benchmark; returns the ``ray`` module.

    ``one_omp_thread``: every worker process gets ``OMP_NUM_THREADS=1`` (trials that each use one
    torch thread); off where the benchmark sets its threads itself.
    """
    import ray

    kwargs = {"runtime_env": {"env_vars": {"OMP_NUM_THREADS": "1"}}} if one_omp_thread else {}
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="ERROR",
        **kwargs,
    )
    return ray
