"""Several processes (one per host, or several on one machine) as one run, on JAX's own
multi-controller model (``jax.distributed``).

Every process runs the same command. Process 0, the main process, claims the run
directory and writes what is written once (records, metadata, the report); each process
reads and writes only its own share of the slices, and trains on its own share of each
batch; they meet at barriers. One process is the plain case: every function here is
then a no-op or the identity.

A cluster is named by ``--coordinator HOST:PORT --num-processes N --process-id I`` (or
``SRJAX_COORDINATOR``, ``SRJAX_NUM_PROCESSES``, ``SRJAX_PROCESS_ID``); under a scheduler
JAX detects itself (SLURM, Open MPI, ...), nothing is needed.
"""

from __future__ import annotations

import contextlib
import itertools
import os

import numpy as np

from srjax.errors import SrjaxError

ENVIRONMENT = {"coordinator": "SRJAX_COORDINATOR", "num_processes": "SRJAX_NUM_PROCESSES",
               "process_id": "SRJAX_PROCESS_ID"}
# Variables by which the schedulers jax.distributed detects show a job of several tasks.
SCHEDULED = ("SLURM_STEP_NUM_TASKS", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE")
MESSAGE_BYTES = 1024  # an error message shared with the other processes is cut to this
WAIT_MS = 24 * 3600 * 1000  # how long a process waits for the others (a dead one stops all sooner)
_exchanges = itertools.count()  # every process makes the same exchanges in the same order
_alone = False  # inside ``alone()``


def _setting(name: str, given, convert):
    value = given if given is not None else os.environ.get(ENVIRONMENT[name])
    if value is None or value == "":
        return None
    try:
        return convert(value)
    except ValueError:
        raise SrjaxError(f"{ENVIRONMENT[name]}={value!r} is not valid for --{name.replace('_', '-')}") from None


def _scheduled() -> bool:
    return any(int(os.environ.get(name, "1") or 1) > 1 for name in SCHEDULED)


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
    """Join the other processes of this job, if there are any; call before anything uses JAX."""
    import jax

    settings = {"coordinator": _setting("coordinator", coordinator, str),
                "num_processes": _setting("num_processes", num_processes, int),
                "process_id": _setting("process_id", process_id, int)}
    given = {key for key, value in settings.items() if value is not None}
    if not given and not _scheduled():
        return
    if given and len(given) < 3:
        missing = ", ".join(f"--{key.replace('_', '-')}" for key in settings if key not in given)
        raise SrjaxError(f"several processes need --coordinator, --num-processes and --process-id; {missing} "
                         "missing (or set SRJAX_COORDINATOR, SRJAX_NUM_PROCESSES, SRJAX_PROCESS_ID)")
    if given:
        if settings["num_processes"] < 1 or not 0 <= settings["process_id"] < settings["num_processes"]:
            raise SrjaxError(f"--process-id {settings['process_id']} is not between 0 and --num-processes "
                             f"{settings['num_processes']} - 1")
        if settings["num_processes"] == 1:
            return
    # The CPU devices of several processes reduce through gloo.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if given:
        jax.distributed.initialize(settings["coordinator"], settings["num_processes"], settings["process_id"])
    else:
        jax.distributed.initialize()


def count() -> int:
    import jax

    return 1 if _alone else jax.process_count()


def index() -> int:
    import jax

    return 0 if _alone else jax.process_index()


@contextlib.contextmanager
def alone():
    """Within, this process works by itself as a job of one process (its own main process),
    with no barrier or exchange: for work that is all its own, such as a whole scan of a
    campaign."""
    global _alone
    before, _alone = _alone, True
    try:
        yield
    finally:
        _alone = before


def is_main() -> bool:
    return index() == 0


def _client():
    # The coordination service's client (jax.distributed's): host-side barriers and small
    # exchanges go through it, not through device collectives, whose CPU (gloo) set-up
    # gives up after 30 s while the main process may stream a whole volume alone.
    from jax._src import distributed

    return distributed.global_state.client


def barrier(name: str) -> None:
    """Wait until every process has come here (``name`` must be the same on all)."""
    if count() > 1:
        _client().wait_at_barrier(f"srjax/{next(_exchanges)}/{name}", WAIT_MS)


def share(total: int, processes: int | None = None, process: int | None = None) -> range:
    """A process's (by default this one's) contiguous share of ``range(total)``; shares differ by at most one."""
    processes = count() if processes is None else processes
    process = index() if process is None else process
    return range(process * total // processes, (process + 1) * total // processes)


def gathered(values) -> np.ndarray:
    """Every process's ``values`` (an array of the same shape and dtype on all), stacked in process order."""
    values = np.asarray(values)
    if count() == 1:
        return values[None]
    client, key = _client(), f"srjax/{next(_exchanges)}/gathered"
    client.key_value_set_bytes(f"{key}/{index()}", np.ascontiguousarray(values).tobytes())
    parts = [client.blocking_key_value_get_bytes(f"{key}/{process}", WAIT_MS) for process in range(count())]
    return np.stack([np.frombuffer(part, values.dtype).reshape(values.shape) for part in parts])


def summed(values) -> np.ndarray:
    """The sum over processes of ``values`` (integers stay exact)."""
    return gathered(values).sum(axis=0)


def together(work):
    """``work()`` on every process; if it raised an ``SrjaxError`` on any, every process raises
    the first one's, so none is left waiting for a process that has stopped."""
    try:
        result, message = work(), ""
    except SrjaxError as err:
        if count() == 1:
            raise
        result, message = None, str(err)
    if count() > 1:
        encoded = np.frombuffer(message.encode()[:MESSAGE_BYTES].ljust(MESSAGE_BYTES, b"\0"), np.uint8)
        for text in gathered(encoded):
            if text.any():
                raise SrjaxError(bytes(text).rstrip(b"\0").decode(errors="replace"))
    return result


def on_main(work):
    """``work()`` on the main process only, the others waiting for it (and raising its error)."""
    return together(lambda: work() if is_main() else None)
