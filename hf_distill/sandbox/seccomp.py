"""A tiny seccomp filter for bubblewrap: no debugging of other processes, no foreign system-call ABIs.

Without it, a program could start a debugger (or its own binary) in the sandbox, attach to the harness
and make it exit with the "passed" status. The filter is classic BPF, assembled here because it is eight
instructions long: system calls from another ABI kill the process; ``ptrace``,
``process_vm_readv`` and ``process_vm_writev`` fail with EPERM; everything else is allowed.
"""

from __future__ import annotations

import platform
import struct

# machine -> (AUDIT_ARCH_* value, (ptrace, process_vm_readv, process_vm_writev) numbers)
_ARCHES = {
    "x86_64": (0xC000003E, (101, 310, 311)),
    "aarch64": (0xC00000B7, (117, 270, 271)),
}
_LOAD_WORD, _JUMP_EQUAL, _JUMP_AT_LEAST, _RETURN = 0x20, 0x15, 0x35, 0x06
_ALLOW, _KILL_PROCESS, _ERRNO_EPERM = 0x7FFF0000, 0x80000000, 0x00050000 | 1
_X32_SYSCALL_BIT = 0x40000000  # x86_64's x32 ABI: same arch value, numbers with this bit set


def _instruction(code: int, k: int, jump_true: int = 0, jump_false: int = 0) -> bytes:
    return struct.pack("<HBBI", code, jump_true, jump_false, k)


def seccomp_filter(machine: str | None = None) -> bytes | None:
    """The filter for ``machine`` (default: this one) as bytes for ``bwrap --seccomp``; None if unknown."""
    arch = _ARCHES.get(machine or platform.machine())
    if arch is None:
        return None
    audit_arch, (ptrace, vm_read, vm_write) = arch
    program = [
        _instruction(_LOAD_WORD, 4),  # seccomp_data.arch
        _instruction(_JUMP_EQUAL, audit_arch, 0, 6),  # another ABI -> kill
        _instruction(_LOAD_WORD, 0),  # seccomp_data.nr
        _instruction(_JUMP_AT_LEAST, _X32_SYSCALL_BIT, 4, 0),  # x32 -> kill
        _instruction(_JUMP_EQUAL, ptrace, 4, 0),
        _instruction(_JUMP_EQUAL, vm_read, 3, 0),
        _instruction(_JUMP_EQUAL, vm_write, 2, 0),
        _instruction(_RETURN, _ALLOW),
        _instruction(_RETURN, _KILL_PROCESS),
        _instruction(_RETURN, _ERRNO_EPERM),
    ]
    return b"".join(program)
