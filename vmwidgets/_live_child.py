"""Child program of the live-kernel harness (see :mod:`vmwidgets.live`).

This file is run as a separate Python process by
:class:`vmwidgets.live.LiveProcess`.  It reads one JSON request per line
on stdin and writes one JSON reply per line on stdout (flushed after each
reply).  The requests make it perform real system calls through
``ctypes`` on its own address space, so that the parent can compare the
kernel's behaviour with the model's.

Protocol
--------
Request : ``{"op": NAME, "args": [ARG, ...]}``
Reply   : ``{"ret": VALUE}`` on success,
          ``{"errno": N}`` when the system call failed,
          ``{"error": TEXT}`` when the request itself was bad.

The first line written by the child, before any request, is a ``hello``
reply describing the child (pid, arena, initial break, ...).

Several processes: fork and exit
--------------------------------
``{"op": "fork", "args": [TIMEOUT]}`` makes the child create two FIFOs in a
private temporary directory (``req`` and ``rep``) and call ``os.fork()``.  The
new process (the *forked* process) lets go of the channel it inherited (fds 0
and 1 become ``/dev/null``; an inherited FIFO channel is closed), reopens
``/proc/self/pagemap`` (the inherited descriptor would show its parent's
pages), opens ``req`` for reading and then ``rep`` for writing (the same order
as the parent side, so the blocking opens cannot deadlock; ``alarm(TIMEOUT)``
kills it if nobody connects), writes a hello ``{"ret": {"pid": PID}}`` on
``rep`` and serves requests from ``req`` with the same loop.  The forking
process replies ``{"ret": {"pid": PID, "req": PATH, "rep": PATH}}`` on its own
channel.  Neither process touches the arena between the fork and the next
request, so that request sees the pure post-fork state.

``{"op": "exit"}`` replies ``{"ret": 0}`` and then calls ``os._exit(0)``.
``fork`` and ``exit`` cannot be part of a ``run`` batch.

Reaping: a process that forked reaps its exited children with
``waitpid(-1, WNOHANG)`` before each request and keeps their statuses, which
``{"op": "wait_child", "args": [PID]}`` returns (it waits for PID if PID has not
exited yet; ``null`` if PID is not its child).  ``SIGCHLD`` is not ignored
(``SIG_IGN`` would make the kernel reap every child itself, and ``probe``'s
``waitpid`` would then fail), and no ``SIGCHLD`` handler is installed (it would
interrupt system calls issued through ctypes with EINTR).  The first child is a
child subreaper (``PR_SET_CHILD_SUBREAPER``): when a process that forked dies,
its children are reparented to the first child rather than to init, so they
can still be reaped by a request.

The child must stay small: stdlib only, nothing from ``vmwidgets``, and
no heavy imports, so that it starts quickly.  The parent starts it with
``MALLOC_MMAP_THRESHOLD_=0`` in the environment so that glibc malloc never
moves the program break (see :mod:`vmwidgets.live`).
"""

import ctypes
import errno
import json
import os
import resource
import signal
import sys

# x86-64 system call numbers (arch/x86/entry/syscalls/syscall_64.tbl).
SYS_MMAP = 9
SYS_MPROTECT = 10
SYS_MUNMAP = 11
SYS_BRK = 12
SYS_MREMAP = 25
SYS_MADVISE = 28

PAGE_SIZE = 4096
U64_MASK = (1 << 64) - 1

PROT_NONE = 0x0
MAP_PRIVATE = 0x02
MAP_ANONYMOUS = 0x20
MAP_NORESERVE = 0x4000
MAP_FIXED_NOREPLACE = 0x100000

# include/uapi/linux/prctl.h
PR_SET_CHILD_SUBREAPER = 36

# Field number (1-based, as in proc(5)) of start_brk in /proc/self/stat.
STAT_FIELD_START_BRK = 47

# Size of the window after start_brk reported by brk_sequence.
BRK_WINDOW = 64 << 20

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


class SyscallError(Exception):
    """A system call returned -1; ``args[0]`` is the errno."""


def syscall(number, *args):
    """Issue a raw system call, every argument as an unsigned 64-bit value.

    Returns the result as an unsigned integer; raises SyscallError(errno)
    when glibc's ``syscall()`` returns -1.
    """
    cargs = [ctypes.c_ulong(a & U64_MASK) for a in args]
    ctypes.set_errno(0)
    ret = libc.syscall(ctypes.c_long(number), *cargs)
    if ret == -1:
        raise SyscallError(ctypes.get_errno())
    return ret & U64_MASK


# --------------------------------------------------------------------------
# Helpers


def read_maps():
    """Return the lines of /proc/self/maps without trailing newlines."""
    with open("/proc/self/maps", "rb") as f:
        data = f.read()
    return data.decode("utf-8", "surrogateescape").splitlines()


def maps_range(lo, hi):
    """Lines of /proc/self/maps whose VMA intersects [lo, hi)."""
    out = []
    for line in read_maps():
        start, _, end = line.split(" ", 1)[0].partition("-")
        if int(start, 16) < hi and int(end, 16) > lo:
            out.append(line)
    return out


def read_start_brk():
    """Return start_brk from /proc/self/stat (field 47)."""
    with open("/proc/self/stat", "rb") as f:
        stat = f.read().decode()
    # Field 2 (comm) may contain spaces; fields after it follow the last ")".
    rest = stat.rsplit(")", 1)[1].split()
    return int(rest[STAT_FIELD_START_BRK - 3])


class Channel:
    """One request channel: JSON lines read from ``rfd``, replies written to ``wfd``."""

    def __init__(self, rfd, wfd):
        self.rfd = rfd
        self.wfd = wfd
        self.buf = b""

    def readline(self):
        """Return the next request line (bytes, without the newline); None at EOF."""
        while b"\n" not in self.buf:
            chunk = os.read(self.rfd, 1 << 16)
            if not chunk:
                return None
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line

    def send(self, obj):
        """Write one reply line, all of it."""
        data = memoryview((json.dumps(obj, separators=(",", ":")) + "\n").encode())
        while data:
            data = data[os.write(self.wfd, data):]

    def detach(self):
        """In a newly forked process: let go of the channel inherited from the parent,
        so that the parent's requests never reach it and its replies do not keep the
        parent's channel open.  Standard descriptors become /dev/null."""
        null = None
        for fd in (self.rfd, self.wfd):
            if fd <= 2:
                if null is None:
                    null = os.open(os.devnull, os.O_RDWR)
                os.dup2(null, fd)
            else:
                os.close(fd)
        if null is not None:
            os.close(null)
        self.buf = b""


class Child:
    """State of the child and the implementation of every request."""

    maps_buf = None
    channel = None

    def __init__(self, arena_base, arena_pages, guard_pages):
        self.arena = arena_base
        self.arena_end = arena_base + arena_pages * PAGE_SIZE
        self.guard = guard_pages * PAGE_SIZE
        self.initial_brk = syscall(SYS_BRK, 0)
        self.start_brk = read_start_brk()
        self.pagemap_fd = os.open("/proc/self/pagemap", os.O_RDONLY)
        self.reaped = {}  # pid -> wait status of exited children not yet asked for
        self.check_arena()

    def check_arena(self):
        """Check that the arena and its guards are free, leaving them free."""
        lo = self.arena - self.guard
        length = self.arena_end + self.guard - lo
        flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE | MAP_NORESERVE
        try:
            addr = syscall(SYS_MMAP, lo, length, PROT_NONE, flags, -1, 0)
        except SyscallError as e:
            err = e.args[0]
            raise RuntimeError(
                "live arena [%#x, %#x) (with guards) is not available in the "
                "child: mmap(MAP_FIXED_NOREPLACE) failed with %s (%s)"
                % (lo, lo + length, errno.errorcode.get(err, err), os.strerror(err))
            ) from None
        syscall(SYS_MUNMAP, addr, length)
        if addr != lo:  # Kernels before 4.17 ignore MAP_FIXED_NOREPLACE.
            raise RuntimeError(
                "live arena [%#x, %#x) (with guards) is not available in the child "
                "(kernel placed the probe at %#x)" % (lo, lo + length, addr)
            )

    def hello(self):
        return {
            "pid": os.getpid(),
            "arena": self.arena,
            "arena_end": self.arena_end,
            "guard": self.guard,
            "initial_brk": self.initial_brk,
            "start_brk": self.start_brk,
        }

    # ---- system calls (errors propagate as SyscallError) ----

    def op_mmap(self, addr, length, prot, flags, fd=-1, offset=0):
        return syscall(SYS_MMAP, addr, length, prot, flags, fd, offset)

    def op_munmap(self, addr, length):
        return syscall(SYS_MUNMAP, addr, length)

    def op_mprotect(self, addr, length, prot):
        return syscall(SYS_MPROTECT, addr, length, prot)

    def op_madvise(self, addr, length, advice):
        return syscall(SYS_MADVISE, addr, length, advice)

    def op_mremap(self, old_addr, old_size, new_size, flags=0, new_addr=0):
        return syscall(SYS_MREMAP, old_addr, old_size, new_size, flags, new_addr)

    def op_brk(self, addr):
        return syscall(SYS_BRK, addr)

    def op_brk_sequence(self, addrs):
        """brk() each address in turn, then restore the initial break.

        Returns a list of [ret, lines] where lines are the maps lines that
        are [heap] or intersect [start_brk, start_brk + BRK_WINDOW).
        """
        out = []
        try:
            for addr in addrs:
                ret = syscall(SYS_BRK, addr)
                out.append([ret, self.heap_lines()])
        finally:
            syscall(SYS_BRK, self.initial_brk)
        return out

    def heap_lines(self):
        lo, hi = self.start_brk, self.start_brk + BRK_WINDOW
        out = []
        for line in read_maps():
            start, _, end = line.split(" ", 1)[0].partition("-")
            if line.endswith("[heap]") or (int(start, 16) < hi and int(end, 16) > lo):
                out.append(line)
        return out

    # ---- memory accesses (a bad address kills the child with a signal) ----

    def op_write(self, addr, hexdata):
        data = bytes.fromhex(hexdata)
        ctypes.memmove(addr, data, len(data))
        return None

    def op_read(self, addr, size):
        return ctypes.string_at(addr, size).hex()

    def op_touch(self, addr, write):
        cell = ctypes.c_ubyte.from_address(addr)
        value = cell.value  # read access
        if write:
            cell.value = value  # write access, same value
        return None

    def op_probe(self, addr, write):
        """Try the access in a forked grandchild; report how it ended.

        Returns "ok" or "signal N". The fork is short-lived: after the grandchild exits,
        every page of this process has the mapcount it had before.
        """
        pid = os.fork()
        if pid == 0:
            try:
                resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
                if write:
                    # A pure store: a read first would fault in (shared) pages that the
                    # parent shares with this grandchild, e.g. shmem page-cache pages.
                    ctypes.memset(addr, 0, 1)
                else:
                    self.op_touch(addr, False)
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status):
            return "signal %d" % os.WTERMSIG(status)
        return "ok"

    def op_mmap_probe(self, addr, length, prot, flags):
        """Read /proc/self/maps, then mmap at once, allocating nothing in between that
        could take address space: returns [maps_text, address] so that the address the
        kernel chose can be checked against the layout it chose it from."""
        if self.maps_buf is None:
            self.maps_buf = bytearray(4 << 20)
        view = memoryview(self.maps_buf)
        fd = os.open("/proc/self/maps", os.O_RDONLY)
        n = 0
        try:
            while True:
                k = os.readv(fd, [view[n:]])
                if k == 0:
                    break
                n += k
        finally:
            os.close(fd)
        ret = syscall(SYS_MMAP, addr, length, prot, flags, -1, 0)
        return [bytes(view[:n]).decode(), ret]

    # ---- a second thread that keeps another CPU busy in this address space ----

    #: x86-64: ``1: pause; cmp byte [rdi], 0; je 1b; ret``: spin in user space (no
    #: syscalls, no faults, no GIL) until the byte at the argument becomes non-zero.
    SPIN_CODE = bytes.fromhex("f390803f0074f9c3")

    def op_spin_thread(self, cpu):
        """Start a thread pinned to ``cpu`` that spins in user space until stop_spin: the
        CPU keeps this address space loaded, not lazily. Returns the thread's tid."""
        import threading
        code = syscall(SYS_MMAP, 0, PAGE_SIZE, 3, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        ctypes.memmove(code, self.SPIN_CODE, len(self.SPIN_CODE))
        syscall(SYS_MPROTECT, code, PAGE_SIZE, 5)       # PROT_READ | PROT_EXEC
        self.spin_flag = ctypes.c_ubyte(0)
        spin = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(code)
        started = threading.Event()
        box = []

        def run():
            os.sched_setaffinity(0, {cpu})
            box.append(threading.get_native_id())
            started.set()
            spin(ctypes.addressof(self.spin_flag))     # ctypes lets the GIL go meanwhile

        self.spin_thread = threading.Thread(target=run, daemon=True)
        self.spin_thread.start()
        started.wait()
        return box[0]

    def op_stop_spin(self):
        self.spin_flag.value = 1
        self.spin_thread.join()
        return 0

    # ---- introspection ----

    def op_maps(self, lo, hi):
        return maps_range(lo, hi)

    def op_maps_text(self):
        with open("/proc/self/maps", "rb") as f:
            return f.read().decode("utf-8", "surrogateescape")

    def op_pagemap(self, addr):
        entry = os.pread(self.pagemap_fd, 8, (addr // PAGE_SIZE) * 8)
        return int.from_bytes(entry, "little")

    # ---- files, for file-backed mappings ----

    def op_open(self, path, flags, mode):
        return os.open(path, flags, mode)

    def op_memfd_create(self, name, flags):
        return os.memfd_create(name, flags)

    def op_ftruncate(self, fd, length):
        os.ftruncate(fd, length)
        return 0

    def op_close(self, fd):
        os.close(fd)
        return 0

    def op_dup(self, fd):
        return os.dup(fd)

    # ---- several processes ----

    def fork(self, timeout):
        """Fork a process that serves requests on two new FIFOs (see the module doc).

        Returns, in the forking process, ``{"pid", "req", "rep"}``; never returns in
        the forked process.
        """
        import tempfile  # only processes that fork pay for the import
        directory = tempfile.mkdtemp(prefix="vmwidgets-live-")
        req = os.path.join(directory, "req")
        rep = os.path.join(directory, "rep")
        try:
            os.mkfifo(req, 0o600)
            os.mkfifo(rep, 0o600)
            pid = os.fork()
        except BaseException:
            for path in (req, rep):
                try:
                    os.unlink(path)
                except OSError:
                    pass
            os.rmdir(directory)
            raise
        if pid == 0:
            status = 1
            try:
                self.serve_forked(req, rep, timeout)
                status = 0
            except BaseException as e:
                try:
                    sys.stderr.write("vmwidgets live child %d: %s: %s\n"
                                     % (os.getpid(), type(e).__name__, e))
                    sys.stderr.flush()
                except BaseException:
                    pass
            finally:
                os._exit(status)
        return {"pid": pid, "req": req, "rep": rep}

    def serve_forked(self, req, rep, timeout):
        """The forked process: connect to the FIFOs, then serve requests until EOF."""
        # Die (SIGALRM, default action) if the parent side never opens its ends.
        signal.alarm(min(max(1, int(-(-timeout // 1))), 1 << 30) if timeout else 0)
        self.reaped = {}
        self.channel.detach()
        self.channel = None
        # The inherited descriptor was opened by the parent: it shows the parent's pages.
        os.close(self.pagemap_fd)
        self.pagemap_fd = os.open("/proc/self/pagemap", os.O_RDONLY)
        rfd = os.open(req, os.O_RDONLY)  # blocks until the parent side opens req
        wfd = os.open(rep, os.O_WRONLY)  # then rep: same order on both sides
        signal.alarm(0)
        channel = Channel(rfd, wfd)
        channel.send({"ret": {"pid": os.getpid()}})
        self.serve(channel)

    def reap_children(self):
        """Reap every exited child (forked processes, and orphans adopted as subreaper);
        keep their wait statuses for wait_child.  Called between requests only, so it
        never takes the short-lived process of ``probe``."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.reaped[pid] = status

    def op_wait_child(self, pid):
        """The wait status of child ``pid`` (waiting for it to exit); None if it is not
        a child of this process."""
        if pid in self.reaped:
            return self.reaped.pop(pid)
        try:
            return os.waitpid(pid, 0)[1]
        except ChildProcessError:
            return None

    # ---- the request loop ----

    def serve(self, channel):
        """Serve requests from ``channel`` until EOF."""
        self.channel = channel
        while True:
            line = channel.readline()
            if line is None:
                return
            self.reap_children()
            try:
                request = json.loads(line)
                op, args = request.get("op"), request.get("args", [])
            except Exception as e:
                channel.send({"error": "bad request %r: %s" % (line[:200], e)})
                continue
            if op == "exit":
                channel.send({"ret": 0})
                os._exit(0)
            if op == "fork":
                try:
                    reply = {"ret": self.fork(*args)}
                except OSError as e:
                    reply = {"errno": e.errno}
                except Exception as e:
                    reply = {"error": "%s: %s" % (type(e).__name__, e)}
                channel.send(reply)
                continue
            channel.send(self.dispatch(request))

    # ---- batches ----

    def op_run(self, ops):
        return [self.dispatch(op) for op in ops]

    def dispatch(self, request):
        """Execute one request and return the reply dictionary."""
        if isinstance(request, dict) and request.get("op") in ("fork", "exit"):
            return {"error": "%s cannot be part of a run batch" % request["op"]}
        try:
            method = getattr(self, "op_" + request["op"])
        except (KeyError, TypeError, AttributeError):
            return {"error": "unknown request %r" % (request,)}
        try:
            return {"ret": method(*request.get("args", []))}
        except SyscallError as e:
            return {"errno": e.args[0]}
        except OSError as e:  # from os.open, os.ftruncate, ...
            return {"errno": e.errno}
        except Exception as e:  # bad arguments: report, do not die
            return {"error": "%s: %s" % (type(e).__name__, e)}


def main():
    # Ctrl-C goes to the whole process group: let the parent handle it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A caller bug that faults should not leave core files behind.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    arena_base, arena_pages, guard_pages = (int(a, 0) for a in sys.argv[1:4])
    channel = Channel(0, 1)
    try:
        child = Child(arena_base, arena_pages, guard_pages)
    except Exception as e:
        channel.send({"error": "%s: %s" % (type(e).__name__, e)})
        return 1
    # Orphans of processes forked from this one come back here to be reaped.
    libc.prctl(PR_SET_CHILD_SUBREAPER, ctypes.c_ulong(1), ctypes.c_ulong(0),
               ctypes.c_ulong(0), ctypes.c_ulong(0))
    channel.send({"ret": child.hello()})
    child.serve(channel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
