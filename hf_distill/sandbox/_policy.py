"""The audit-hook policy the harness installs in the child before the program runs (both isolation levels).

Executed by the harness (``_child.py``) with ``install_policy(guard, workdir, blocked_status)`` called right
after. CPython raises an audit event inside the C implementation of process creation, signals, sockets,
ctypes, tracing and file access, so the policy sees these calls even when the program digs out original
functions. A hook cannot be removed once added; this one holds its few references in a closure that
nothing else points to (``gc`` introspection is among the refused events). On a refused event (or the
harness's own ``hf_distill.sandbox.blocked`` event, raised by the guard's checks) it writes one line to
stderr and ends the process at once with the "blocked" status, so catching the error changes nothing.

Rules for every level: no process creation, no signals, no sockets, no ctypes (nor cffi or the C test
modules), no tracing or profiling (which could skip a test's assertions), no sub-interpreters, no ``gc``
object introspection. The guard level
adds the file rules: nothing under ``/proc``, no writes and no directory handles outside the work directory.
"""

_ALWAYS_REFUSED = frozenset(
    {
        "os.system",
        "os.exec",
        "os.fork",
        "os.forkpty",
        "os.posix_spawn",
        "os.spawn",
        "os.startfile",
        "subprocess.Popen",
        "pty.spawn",
        "os.kill",
        "os.killpg",
        "signal.pthread_kill",
        "sys.settrace",
        "sys.setprofile",
        "sys.monitoring.register_callback",
        "sys._current_frames",
        "sys.addaudithook",
        "cpython.PyInterpreterState_New",
        "gc.get_objects",
        "gc.get_referrers",
        "gc.get_referents",
        "sqlite3.connect",
        "sqlite3.enable_load_extension",
    }
)
# Modules whose only purpose here would be raw C calls (under bubblewrap their files are hidden as well).
_REFUSED_IMPORTS = frozenset(
    {"ctypes", "_ctypes", "cffi", "_cffi_backend", "_testcapi", "_testinternalcapi", "_xxsubinterpreters"}
)
_REFUSED_PREFIXES = ("socket.", "ctypes.", "_ctypes.", "winreg.", "msvcrt.")
# Path events of the guard level: (indices of path arguments, indices of dir_fd arguments).
_PATH_EVENTS = {
    "os.remove": ((0,), (1,)),
    "os.rmdir": ((0,), (1,)),
    "os.mkdir": ((0,), (2,)),
    "os.rename": ((0, 1), (2, 3)),
    "os.link": ((0, 1), (2, 3)),
    "os.symlink": ((0, 1), (2,)),
    "os.chmod": ((0,), (2,)),
    "os.chown": ((0,), (3,)),
    "os.utime": ((0,), (3,)),
    "os.truncate": ((0,), ()),
    "os.setxattr": ((0,), ()),
    "os.removexattr": ((0,), ()),
    "os.chdir": ((0,), ()),
    "os.chroot": ((0,), ()),
    "shutil.rmtree": ((0,), (1,)),
    "shutil.copyfile": ((1,), ()),
    "shutil.copymode": ((1,), ()),
    "shutil.copystat": ((1,), ()),
    "shutil.copytree": ((1,), ()),
    "shutil.move": ((0, 1), ()),
}
_WRITE_FLAGS = 0o1 | 0o2 | 0o100 | 0o1000 | 0o2000  # O_WRONLY | O_RDWR | O_CREAT | O_TRUNC | O_APPEND (Linux)


def install_policy(guard, workdir, blocked_status):
    import posix
    import sys

    exit_now, write, lstat, readlink, getcwd = posix._exit, posix.write, posix.lstat, posix.readlink, posix.getcwd
    always, prefixes, path_events, write_flags = _ALWAYS_REFUSED, _REFUSED_PREFIXES, _PATH_EVENTS, _WRITE_FLAGS
    refused_imports = _REFUSED_IMPORTS
    proc_root = "/proc"

    def refuse(text):
        try:
            write(2, ("\nhf_distill-sandbox: blocked call: " + text + "\n").encode("utf-8", "replace"))
        finally:
            exit_now(blocked_status)

    def as_text(path):
        kind = type(path)
        if kind is str:
            return path
        if kind is bytes:
            return path.decode("utf-8", "surrogateescape")
        return None

    def resolve(path):
        """Absolute path with every symlink followed, using only functions bound before the program ran."""
        pending = path if path.startswith("/") else getcwd() + "/" + path
        parts, resolved, hops = [p for p in pending.split("/") if p], [], 0
        while parts:
            part = parts.pop(0)
            if part == ".":
                continue
            if part == "..":
                if resolved:
                    resolved.pop()
                continue
            candidate = "/" + "/".join(resolved + [part])
            try:
                is_link = (lstat(candidate).st_mode & 0o170000) == 0o120000
            except OSError:
                is_link = False
            if is_link and hops < 40:
                hops += 1
                target = readlink(candidate)
                parts = [p for p in target.split("/") if p] + parts
                if target.startswith("/"):
                    resolved = []
                continue
            resolved.append(part)
        return "/" + "/".join(resolved)

    def inside(resolved, root):
        return resolved == root or resolved.startswith(root + "/")

    def check_path(event, path, writing):
        text = as_text(path)
        if text is None:
            if type(path) is int:
                return  # a descriptor: it came from an open that was checked
            refuse(event + " with a path of type " + type(path).__name__)
        resolved = resolve(text)
        if inside(resolved, proc_root):
            refuse(event + " of " + resolved + " (/proc exposes other processes)")
        if writing and not inside(resolved, workdir):
            refuse(event + " outside the sandbox directory (" + resolved + ")")
        if not inside(resolved, workdir):
            try:
                is_dir = (lstat(resolved).st_mode & 0o170000) == 0o040000
            except OSError:
                is_dir = False
            if is_dir and event == "open":
                refuse("opening the directory " + resolved + " (a handle to it would bypass the path checks)")

    def check_open(args):
        path, mode, flags = (tuple(args) + (None, None, None))[:3]
        writing = (type(mode) is str and any(flag in mode for flag in "wax+")) or (
            type(flags) is int and flags > 0 and bool(flags & write_flags)
        )
        check_path("open", path, writing)

    def hook(event, args):
        if event == "hf_distill.sandbox.blocked":
            refuse(str(args[0]) if args else event)
        if event in always or event.startswith(prefixes):
            refuse(event)
        if event == "import" and args and str(args[0]).partition(".")[0] in refused_imports:
            refuse("import of " + str(args[0]))
        if not guard:
            return
        if event == "open":
            check_open(args)
        elif event in path_events:
            path_positions, dir_fd_positions = path_events[event]
            for position in dir_fd_positions:
                if position < len(args) and type(args[position]) is int and args[position] != -1:
                    refuse(event + " relative to a directory descriptor")
            for position in path_positions:
                if position < len(args):
                    check_path(event, args[position], event != "os.chdir")

    sys.addaudithook(hook)
