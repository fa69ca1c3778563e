"""Ending a sandboxed run's whole process tree, and knowing when it has ended.

Under bubblewrap the handle is a pidfd on the sandbox's PID 1 (the kernel empties a PID namespace before
its PID 1 becomes a zombie); for the guard it is the process group plus a per-run marker in the environment.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time

KILL_DEADLINE_S = 10.0


def open_sandbox_init(info_fd: int, bwrap_pid: int, deadline: float) -> int | None:
    """A pidfd for the sandbox's PID 1, read from bwrap's --info-fd report (None if it never came).

    The PID is trusted only if that process is a child of our bwrap; the pidfd then keeps referring to
    it, so no later PID reuse can redirect the kill.
    """
    data = b""
    while b"}" not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([info_fd], [], [], remaining)[0]:
            return None
        chunk = os.read(info_fd, 4096)
        if not chunk:
            return None
        data += chunk
    try:
        pid = int(json.loads(data[: data.index(b"}") + 1])["child-pid"])
        pidfd = os.pidfd_open(pid)
    except (ValueError, KeyError, TypeError, OSError, AttributeError):
        return None
    if _parent_of(pid) != bwrap_pid:
        os.close(pidfd)
        return None
    return pidfd


def end_process_tree(
    proc: subprocess.Popen, run_marker: str | None, init_pidfd: int | None = None, timed_out: bool = False
) -> None:
    """Kill everything the run started, and return only once it is gone.

    Under bubblewrap, ``init_pidfd`` is the sandbox's PID 1: killing it makes the kernel kill every process
    in the PID namespace, and PID 1 becomes a zombie (its pidfd readable) only once the namespace is
    empty. For the guard, every process that still carries this run's marker in its environment (one that
    left the process group) is killed as well.
    """
    if init_pidfd is not None:
        try:
            signal.pidfd_send_signal(init_pidfd, signal.SIGKILL)
            select.select([init_pidfd], [], [], KILL_DEADLINE_S)
        except ProcessLookupError:
            pass  # already gone
        finally:
            os.close(init_pidfd)
    _kill(-proc.pid)
    try:
        proc.wait(timeout=KILL_DEADLINE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=KILL_DEADLINE_S)
    if run_marker is not None:
        _kill_marked_until_clean(run_marker.encode(), careful=timed_out)


def _kill_marked_until_clean(marker: bytes, careful: bool) -> None:
    """Scan until nothing marked is left. A process caught between fork and exec can be unreadable for an
    instant, so after a kill or a timeout it takes two clean scans, 20 ms apart, to stop."""
    clean_needed = 2 if careful else 1
    clean = 0
    for _ in range(20):
        if _kill_marked_processes(marker):
            clean, clean_needed = 0, 2
        else:
            clean += 1
        if clean >= clean_needed:
            return
        time.sleep(0.02)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _parent_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return int(handle.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _kill_marked_processes(marker: bytes) -> int:
    killed = 0
    try:
        pids = [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/environ", "rb") as handle:
                environ = handle.read()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except OSError:
                pass
    return killed
