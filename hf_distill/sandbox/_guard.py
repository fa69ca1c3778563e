"""The in-process guard used where bubblewrap cannot start (the weaker "guard" isolation level).

Executed by the harness (``_child.py``) inside the child, which then calls ``install_guard(events,
violation_type)`` after its limits and policy are in place and before the program runs. It is a
best-effort barrier: everything it replaces lives in the same interpreter as the program, so a program that
introspects the guard's own closures or uses C-level types it finds on existing objects can still get
around it. docs/evaluation.md lists what it stops and what it does not.
"""

import _imp
import _io
import builtins
import io
import os
import posix
import sys

_realpath = os.path.realpath
_audit = sys.audit
_WORKDIR = ""
_record = None
_Violation = BaseException

# Modules that give a way around the guard (C calls, process creation, sockets, shared memory, file
# writes from C). They are refused by a sys.meta_path finder and by the extension-module loader.
BLOCKED_MODULES = frozenset(
    {
        "ctypes",
        "_ctypes",
        "_ctypes_test",
        "cffi",
        "_cffi_backend",
        "subprocess",
        "_posixsubprocess",
        "multiprocessing",
        "_multiprocessing",
        "_posixshmem",
        "pty",
        "socket",
        "_socket",
        "ssl",
        "_ssl",
        "asyncio",
        "_asyncio",
        "mmap",
        "resource",
        "sqlite3",
        "_sqlite3",
        "dbm",
        "_dbm",
        "_gdbm",
        "readline",
        "_xxsubinterpreters",
        "_testcapi",
        "_testinternalcapi",
        "_testbuffer",
        "_testmultiphase",
        "_testimportmultiple",
        "_xxtestfuzz",
    }
)


def _violation(text):
    _record(("blocked", text))
    _audit("hf_distill.sandbox.blocked", text)  # the policy ends the process here
    raise _Violation(text)


class _BlockedModuleFinder:
    """First entry of sys.meta_path: refuse the blocked modules, however the import is spelled."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED_MODULES:
            _violation("import of " + name + " is disabled in the sandbox")
        return None

    @staticmethod
    def invalidate_caches():
        return None


def _make_create_dynamic(original):
    def create_dynamic(spec, *args):
        if str(getattr(spec, "name", "")).partition(".")[0] in BLOCKED_MODULES:
            _violation("loading extension " + str(spec.name) + " is disabled in the sandbox")
        return original(spec, *args)

    return create_dynamic


def _check_path(name, path, writing):
    if isinstance(path, int):  # a file descriptor: it came from a guarded open
        return
    if not isinstance(path, (str, bytes, os.PathLike)):
        return
    resolved = _realpath(os.fsdecode(path))
    if resolved == "/proc" or resolved.startswith("/proc/"):
        _violation(name + " of " + resolved + " (/proc exposes other processes)")
    if writing and not (resolved == _WORKDIR or resolved.startswith(_WORKDIR + os.sep)):
        _violation(name + " writing outside the sandbox directory (" + resolved + ")")


def _check_no_dir_fd(name, kwargs):
    """Paths relative to a directory descriptor cannot be checked by name: refuse them."""
    if any(kwargs.get(key) is not None for key in ("dir_fd", "src_dir_fd", "dst_dir_fd")):
        _violation(name + " with a directory descriptor is disabled in the sandbox")


_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _make_low_level_open(original):
    def guarded_open(path, flags, *args, **kwargs):
        _check_no_dir_fd("os.open", kwargs)
        _check_path("os.open", path, bool(flags & _WRITE_FLAGS))
        return original(path, flags, *args, **kwargs)

    return guarded_open


def _make_open(original):
    def guarded_open(file, mode="r", *args, **kwargs):
        _check_path("open", file, any(flag in str(mode) for flag in "wax+"))
        return original(file, mode, *args, **kwargs)

    return guarded_open


def _make_open_code(original):
    def guarded_open_code(path):
        _check_path("open_code", path, False)
        return original(path)

    return guarded_open_code


class _GuardedFileIO(_io.FileIO):
    def __init__(self, file, mode="r", *args, **kwargs):
        _check_path("FileIO", file, any(flag in str(mode) for flag in "wax+"))
        super().__init__(file, mode, *args, **kwargs)


# Calls that change files by path: allowed inside the work directory, blocked elsewhere.
_PATH_CALLS = (
    "remove",
    "unlink",
    "rmdir",
    "rename",
    "replace",
    "truncate",
    "chmod",
    "lchmod",
    "chown",
    "lchown",
    "link",
    "symlink",
    "mkdir",
    "mkfifo",
    "mknod",
    "utime",
    "chdir",
    "chroot",
)


def _make_path_call(name, original):
    def guarded(*args, **kwargs):
        _check_no_dir_fd("os." + name, kwargs)
        for value in list(args[:2]) + [v for k, v in kwargs.items() if k in ("path", "src", "dst")]:
            _check_path("os." + name, value, True)
        return original(*args, **kwargs)

    return guarded


# Calls with no business in a unit test: process creation, signals to other processes, new sessions.
_BLOCKED_CALLS = (
    "system",
    "popen",
    "fork",
    "forkpty",
    "vfork",
    "spawnl",
    "spawnle",
    "spawnlp",
    "spawnlpe",
    "spawnv",
    "spawnve",
    "spawnvp",
    "spawnvpe",
    "posix_spawn",
    "posix_spawnp",
    "kill",
    "killpg",
    "setsid",
    "setpgid",
    "setpgrp",
    "setuid",
    "setgid",
    "setreuid",
    "setregid",
    "setresuid",
    "setresgid",
    "pidfd_open",
)


def _make_blocked(name):
    def blocked(*args, **kwargs):
        _violation(name + " is disabled in the sandbox")

    return blocked


def install_guard(events, violation_type):
    """Install the finder, the loader wrapper and the replaced functions; record violations in ``events``."""
    global _WORKDIR, _record, _Violation
    _WORKDIR, _record, _Violation = _realpath(os.getcwd()), events.append, violation_type
    sys.meta_path.insert(0, _BlockedModuleFinder)
    for loaded in list(sys.modules):
        if loaded.partition(".")[0] in BLOCKED_MODULES:
            del sys.modules[loaded]
    _imp.create_dynamic = _make_create_dynamic(_imp.create_dynamic)
    builtins.open = io.open = _io.open = _make_open(_io.open)
    io.open_code = _io.open_code = _make_open_code(_io.open_code)
    io.FileIO = _io.FileIO = _GuardedFileIO
    os.open = posix.open = _make_low_level_open(posix.open)
    for module in (os, posix):
        for name in _PATH_CALLS:
            if hasattr(module, name):
                setattr(module, name, _make_path_call(name, getattr(module, name)))
        for name in _BLOCKED_CALLS:
            if hasattr(module, name):
                setattr(module, name, _make_blocked(module.__name__ + "." + name))
