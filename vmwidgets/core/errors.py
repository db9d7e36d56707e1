"""Errors the model raises: syscall failures, faults and broken invariants.

A failing syscall raises :class:`OSError` with the errno Linux returns, as Python's
``os`` module does, plus a sentence explaining the kernel's reason.

>>> e = syscall_error(22, "mmap", "length is 0")
>>> e.errno, str(e)
(22, '[Errno 22] Invalid argument: mmap: length is 0')
"""

import errno as _errno
import os

from .flags import SEGV_ACCERR, SEGV_MAPERR


class SyscallError(OSError):
    """The OSError a model syscall raises; ``.errno`` as Linux, ``.reason`` in plain words."""

    def __init__(self, err, syscall, reason):
        super().__init__(err, os.strerror(err))
        self.syscall = syscall
        self.reason = reason

    def __str__(self):
        return f"[Errno {self.errno}] {self.strerror}: {self.syscall}: {self.reason}"

    def __reduce__(self):
        return (type(self), (self.errno, self.syscall, self.reason))


_BY_ERRNO = {}


def syscall_error(err, syscall, reason):
    """Build the OSError a syscall raises: ``err`` is an errno value, ``reason`` plain words.

    Like Python's ``os`` module, ENOENT gives a FileNotFoundError, EEXIST a
    FileExistsError, EACCES/EPERM a PermissionError (all OSError subclasses).

    >>> isinstance(syscall_error(2, "open", "no such file"), FileNotFoundError)
    True
    """
    builtin = type(OSError(err, ""))
    if builtin is OSError:
        return SyscallError(err, syscall, reason)
    cls = _BY_ERRNO.get(err)
    if cls is None:
        cls = _BY_ERRNO[err] = type(f"SyscallError_{builtin.__name__}", (SyscallError, builtin), {})
    return cls(err, syscall, reason)


class SegmentationFault(Exception):
    """An access the hardware and the kernel refused: the process would get SIGSEGV.

    ``si_code`` is SEGV_MAPERR (no VMA at the address) or SEGV_ACCERR (a VMA whose
    permissions forbid the access); ``addr`` is the faulting address.
    """

    def __init__(self, addr, si_code, access, reason):
        self.addr = addr
        self.si_code = si_code
        self.access = access
        self.reason = reason
        code = {SEGV_MAPERR: "SEGV_MAPERR", SEGV_ACCERR: "SEGV_ACCERR"}[si_code]
        super().__init__(f"SIGSEGV ({code}) on {access} at {addr:#x}: {reason}")


class ValidationError(AssertionError):
    """An invariant of the model does not hold; the message carries a readable state dump."""


class BusError(Exception):
    """SIGBUS: the page exists in a VMA but has no backing, e.g. past the end of a file."""

    def __init__(self, addr, access, reason):
        self.addr = addr
        self.access = access
        self.reason = reason
        super().__init__(f"SIGBUS on {access} at {addr:#x}: {reason}")


class ProcessKilled(Exception):
    """The process was killed (SIGKILL) while the call ran, e.g. by the OOM killer."""

    def __init__(self, pid, reason):
        self.pid = pid
        self.reason = reason
        super().__init__(f"process {pid} was killed: {reason}")


class OutOfMemory(Exception):
    """Physical memory is exhausted and nothing can be reclaimed."""


EINVAL = _errno.EINVAL
ENOMEM = _errno.ENOMEM
EEXIST = _errno.EEXIST
EFAULT = _errno.EFAULT
EACCES = _errno.EACCES
EPERM = _errno.EPERM
EBADF = _errno.EBADF
ENOENT = _errno.ENOENT
EAGAIN = _errno.EAGAIN
EOVERFLOW = _errno.EOVERFLOW
ENODEV = _errno.ENODEV
EOPNOTSUPP = _errno.EOPNOTSUPP
