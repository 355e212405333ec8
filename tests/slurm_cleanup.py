"""Stopping the local SLURM cluster of tests/workflow/test_slurm.py however the test ends.

A fixture's ``finally`` does not run when pytest is killed by SIGTERM (an outer timeout,
a CI runner cancelling the job): the daemons (munged, mysqld, slurmdbd, slurmctld,
slurmd) daemonise themselves, so they outlive pytest. Hence:

- :func:`stop_on_signal`: the stop callback runs when the block ends, normally or by an
  exception, *and* when SIGTERM / SIGHUP arrives; the handler stops the cluster once,
  restores the previous handlers and re-delivers the signal, so pytest still dies of it;
- :func:`record_owner` / :func:`leftover_cluster`: the test writes its own process id to
  ``<state dir>/owner.pid`` when it starts a cluster; a later run that finds recorded
  daemons alive while that owner is gone (SIGKILL, which nothing can catch) knows they
  are leftovers and stops them (tests/slurm/stop_local_slurm.sh, by recorded pid) before
  starting its own. A cluster without an owner file was started by hand and is left
  alone, as is one whose owner still runs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

OWNER_FILE = "owner.pid"
#: The daemons tests/slurm/start_local_slurm.sh records in ``<state dir>/pids``.
DAEMONS = ("munged", "mysqld_safe", "mysqld", "slurmdbd", "slurmctld", "slurmd")
SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (and is not a zombie)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def record_owner(state_dir: str | os.PathLike, pid: int | None = None) -> Path:
    """Write ``pid`` (default: this process) as the owner of the cluster in ``state_dir``."""
    path = Path(state_dir) / OWNER_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{os.getpid() if pid is None else pid}\n")
    return path


def leftover_cluster(state_dir: str | os.PathLike) -> dict[str, int]:
    """Recorded daemons (name -> pid) still alive in ``state_dir`` whose owner, the test
    process that started them, is gone; {} when there are none, when no owner was
    recorded (a cluster started by hand) or when the owner still runs."""
    base = Path(state_dir)
    owner = _read_pid(base / OWNER_FILE)
    if owner is None or pid_alive(owner):
        return {}
    alive = {}
    for name in DAEMONS:
        pid = _read_pid(base / "pids" / f"{name}.pid")
        if pid is not None and pid_alive(pid):
            alive[name] = pid
    return alive


@contextlib.contextmanager
def stop_on_signal(stop: Callable[[], None], signals=SIGNALS) -> Iterator[None]:
    """Run ``stop()`` exactly once: when the block ends (normally or by an exception) or
    when one of ``signals`` arrives while it runs. The handler then restores the
    previous handlers and raises the signal again, so the process ends as it would have
    (SIGTERM's default: terminated). Outside the main thread no handler can be set: then
    only the block's end stops."""
    done = threading.Lock()

    def stop_once() -> None:
        if done.acquire(blocking=False):
            stop()

    previous: dict[int, object] = {}

    def restore() -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        previous.clear()

    def handler(signum, frame) -> None:
        try:
            stop_once()
        finally:
            restore()
            signal.raise_signal(signum)

    if threading.current_thread() is threading.main_thread():
        for signum in signals:
            previous[signum] = signal.signal(signum, handler)
    try:
        yield
    finally:
        restore()
        stop_once()
