"""Data parallelism with `jax.sharding`: a `Mesh` over the batch axis, params replicated.

Every device holds the whole train state and a slice of the global batch; the
jit-compiled step computes the loss as a mean over the global batch, and XLA
inserts the all-reduce of the gradients. The loss curve is the one-device curve
(the same global batch) up to float rounding in the reduction order.

Multi-host: start every process with the same command and call
`jax.distributed.initialize()` first (`initialize_processes` here: it reads the
coordinator address, the number of processes and the process id from the
cluster's environment: SLURM, Open MPI, Cloud TPU, Kubernetes; or takes them as
arguments). `jax.devices()` then lists the devices of every host, and
`data_parallel()` builds its mesh over all of them. Each process makes the
same global batch (a pure function of seed and step) and `DataParallel.shard`
copies only the rows of its own devices. Checkpoints go to a directory that
every host can reach; orbax coordinates the writes.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from rnnscan.validation import check_positive_int

BATCH_AXIS = "batch"


class DataParallel(NamedTuple):
    """Placement of the train state and batches on a 1-D device mesh `("batch",)`."""

    mesh: Mesh

    @property
    def num_devices(self) -> int:
        return self.mesh.size

    def replicate(self, tree):
        """Copies every leaf of `tree` to every device of the mesh."""
        return jax.device_put(tree, NamedSharding(self.mesh, PartitionSpec()))

    def shard(self, batch):
        """Splits every leaf of the host `batch` `(batch, ...)` along axis 0 over the mesh.

        Raises:
          ValueError: if the batch size is not a multiple of the number of devices.
        """
        sharding = NamedSharding(self.mesh, PartitionSpec(BATCH_AXIS))

        def put(leaf):
            leaf = np.asarray(leaf)
            if leaf.ndim == 0 or leaf.shape[0] % self.num_devices:
                raise ValueError(
                    f"the batch size must be a multiple of the number of devices "
                    f"({self.num_devices}); got an array of shape {leaf.shape}"
                )
            return jax.make_array_from_callback(leaf.shape, sharding, lambda index: leaf[index])

        return jax.tree_util.tree_map(put, batch)


def data_parallel(devices: Optional[Sequence[jax.Device]] = None) -> DataParallel:
    """A `DataParallel` over `devices`, by default every device of every host."""
    if devices is None:
        devices = jax.devices()
    else:
        what = "devices must be a sequence of jax devices (from jax.devices())"
        if isinstance(devices, str) or not hasattr(devices, "__iter__"):
            raise TypeError(f"{what}; got {type(devices).__name__}")
        devices = list(devices)
        wrong = sorted({type(d).__name__ for d in devices if not isinstance(d, jax.Device)})
        if wrong:
            raise TypeError(f"{what}; got a sequence holding {', '.join(wrong)}")
        if not devices:
            raise ValueError("devices must hold at least one device; got none")
    return DataParallel(Mesh(np.asarray(devices), (BATCH_AXIS,)))


def initialize_processes(coordinator: str = "auto", num_processes: Optional[int] = None,
                         process_id: Optional[int] = None) -> None:
    """Joins this process to a multi-host run (`jax.distributed.initialize`).

    Call it first, before anything that touches a device.

    Args:
      coordinator: `"HOST:PORT"`, process 0's address and a port free there,
        the same for every process; or `"auto"`: taken, with whatever of the
        other two is `None`, from the cluster's environment (SLURM, Open MPI,
        Cloud TPU; `JAX_COORDINATOR_ADDRESS`), as `jax.distributed.initialize()`
        finds them.
      num_processes: how many processes take part.
      process_id: this process's index, in `[0, num_processes)`.

    Raises a `ValueError` naming what is missing or wrong.
    """
    if not isinstance(coordinator, str) or not (coordinator == "auto" or _host_port(coordinator)):
        raise ValueError(f"coordinator must be 'HOST:PORT' or 'auto'; got {coordinator!r}")
    if num_processes is not None:
        check_positive_int("num_processes", num_processes)
    if process_id is not None:
        if isinstance(process_id, bool) or not isinstance(process_id, int) or process_id < 0:
            raise ValueError(f"process_id must be an int of at least 0; got {process_id!r}")
        if num_processes is not None and process_id >= num_processes:
            raise ValueError(f"process_id must be below num_processes ({num_processes}); got {process_id}")
    address = None if coordinator == "auto" else coordinator
    try:
        jax.distributed.initialize(address, num_processes, process_id)
    except ValueError as error:  # jax's: nothing in the environment to take the rest from
        raise ValueError(f"coordinator {coordinator!r}, num_processes {num_processes}, process_id "
                         f"{process_id}: {error} (no cluster environment gives it)") from None


def barrier(name: str) -> None:
    """Waits until every process reaches `barrier(name)`; at once with one process."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def _host_port(text: str) -> bool:
    host, _, port = text.rpartition(":")
    return bool(host) and port.isdigit()
