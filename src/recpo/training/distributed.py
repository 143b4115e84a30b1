"""The processes of one multi-device job outside Lightning's loop: which rank this is,
what rank 0 decided, and the ranks a cluster launcher started.

Lightning starts the extra ranks of a job itself (re-running the command line) unless
a launcher started them all: SLURM (``srun`` tasks, read by Lightning's
``SLURMEnvironment``) or Hydra's submitit launcher with ``tasks_per_node`` equal to
``trainer.devices`` (:func:`export_launcher_ranks`). Ranks started by a launcher run
the pipeline together from the start, so they open the process group before the first
Trainer (:func:`join_launcher_ranks`) and take rank 0's decisions (reuse a stored SFT
model or train it, evaluate it or not) through :func:`recpo.ranks.rank_zero_decides`.
"""

from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist

from recpo.errors import ConfigError

# Set by export_launcher_ranks: every rank of this job was started by the launcher.
LAUNCHER_RANKS = "RECPO_LAUNCHER_RANKS"


def export_launcher_ranks(devices: int, num_nodes: int = 1) -> bool:
    """Inside a submitit job (Hydra's submitit launcher, local or SLURM) with several
    tasks: export the rank, world size and master address of this task for
    ``torch.distributed`` (Lightning then uses the ranks and starts no process).

    Returns whether ranks were exported. Raises ``ConfigError`` when a multi-device job
    runs as one task: Lightning would start the other ranks by re-running the command
    line, which is submitit's own script, not ``recpo.train``.
    """
    try:
        import submitit
    except ImportError:
        return False
    try:
        env = submitit.JobEnvironment()
        tasks = env.num_tasks
    except RuntimeError:  # not inside a submitit job
        return False
    wanted = devices * num_nodes if isinstance(devices, int) else None
    if tasks == 1:
        if wanted not in (None, 1):
            raise ConfigError(
                f"a job with trainer.devices={devices} trainer.num_nodes={num_nodes} runs as "
                "one submitit task: set hydra.launcher.tasks_per_node to trainer.devices "
                "(conf/hydra/launcher/ does) so that the launcher starts every rank"
            )
        return False
    if wanted is not None and tasks != wanted:
        raise ConfigError(
            f"submitit started {tasks} tasks for trainer.devices={devices} x "
            f"trainer.num_nodes={num_nodes}: set hydra.launcher.tasks_per_node=trainer.devices "
            "and hydra.launcher.nodes=trainer.num_nodes"
        )
    from submitit.helpers import TorchDistributedEnvironment

    # The device count stays visible: Lightning picks this rank's device.
    TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    os.environ[LAUNCHER_RANKS] = "1"
    return True


def join_launcher_ranks(accelerator: str, timeout_s: float | None = None) -> None:
    """Open the process group of ranks a launcher started (:func:`export_launcher_ranks`)
    before the first Trainer, which then uses it. Nothing for other jobs.

    ``timeout_s`` (the SFT lock's, ``None``: no limit) sets how long a collective may
    wait: the other ranks wait in one while rank 0 waits for the SFT lock.
    """
    if os.environ.get(LAUNCHER_RANKS) != "1" or dist.is_initialized():
        return
    gpu = accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available()
    if gpu:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    seconds = max(1800.0, (7 * 86400 if timeout_s is None else timeout_s) + 600)
    dist.init_process_group("nccl" if gpu else "gloo", timeout=datetime.timedelta(seconds=seconds))
