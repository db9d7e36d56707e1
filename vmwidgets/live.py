"""Live-kernel harness: the running Linux kernel as the oracle.

:class:`LiveProcess` starts a child Python process (``_live_child.py``)
and asks it, over JSON lines on its stdin/stdout, to perform real
``mmap``/``munmap``/``mprotect``/``madvise``/``mremap``/``brk`` system
calls on its own address space, to touch memory, and to report
``/proc/self/maps`` and ``/proc/self/pagemap``.  Differential tests run
the same operations on the model and on the child and compare return
values, errnos and maps after every operation.

The arena
---------
The child reserves nothing but checks, at start, that the range
``[arena_base - guard, arena_base + arena_pages*PAGE_SIZE + guard)`` is
free (``mmap`` with ``MAP_FIXED_NOREPLACE`` then ``munmap``).  The default
base, 16 TiB, lies far above the heap and far below ``mmap_base``
(~0x7f..), so the kernel's top-down allocator never puts the child's own
memory there: only the operations the caller issues create VMAs in it.

The program break
-----------------
The child is started with ``MALLOC_MMAP_THRESHOLD_=0`` in its
environment, which makes glibc malloc serve every request with ``mmap``
instead of extending the heap with ``sbrk``.  The child's break therefore
stays at ``start_brk`` (no ``[heap]`` VMA) and only moves when the caller
calls :meth:`LiveProcess.brk`, so ``initial_brk == start_brk`` and brk
tests can start from an empty heap.

Several processes
-----------------
:meth:`LiveProcess.fork` makes the child call ``os.fork()``; the new process
serves requests on its own pair of named FIFOs, and a new :class:`LiveProcess`
drives it, so that fork, copy-on-write and exit can be tested on parent and
child independently (each reads its own ``/proc/self/pagemap``).
:meth:`LiveProcess.exit` makes a process call ``_exit(0)``.  Exited and closed
processes are reaped by their parent through a request (``waitpid``), never
by ``SIGCHLD``/``SIG_IGN``; the first child is a child subreaper, so the
children of a process that is gone are still reaped (see ``_live_child.py``).

Privileges
----------
Maps and the pagemap flag bits (present, exclusive, ...) work without
privileges.  PFNs in pagemap and ``/proc/kpagecount``/``/proc/kpageflags``
need root (CAP_SYS_ADMIN): see :func:`live_root_available`.
"""

import ctypes
import errno
import json
import os
import select
import selectors
import signal
import subprocess
import sys
import time
import weakref

# ---------------------------------------------------------------------------
# Constants (x86-64 Linux)

# The Linux constants are the model's own (one place for each value); the child program
# keeps its own copy because it must run without vmwidgets installed.
from .core.flags import (  # noqa: F401 (re-exported for callers and tests)
    KPF_ANON, KPF_BUDDY, KPF_DIRTY, KPF_LRU, KPF_MMAP, KPF_PGTABLE, KPF_SWAPBACKED,
    KPF_ZERO_PAGE, MADV_DONTFORK, MADV_DONTNEED, MADV_FREE, MADV_WIPEONFORK, MAP_ANONYMOUS,
    MAP_FIXED, MAP_FIXED_NOREPLACE, MAP_GROWSDOWN, MAP_NORESERVE, MAP_POPULATE, MAP_PRIVATE,
    MAP_SHARED, MREMAP_DONTUNMAP, MREMAP_FIXED, MREMAP_MAYMOVE, PAGE_SIZE, PM_FILE, PM_PRESENT,
    PM_SOFT_DIRTY, PROT_EXEC, PROT_NONE, PROT_READ, PROT_WRITE)
from .core.flags import PM_MMAP_EXCLUSIVE as PM_EXCLUSIVE  # noqa: F401
from .core.flags import PM_PFRAME_MASK as PM_PFN_MASK  # noqa: F401
from .core.flags import PM_SWAP as PM_SWAPPED  # noqa: F401

# Arena defaults.
DEFAULT_ARENA_BASE = 0x100000000000  # 16 TiB
DEFAULT_ARENA_PAGES = 4096
GUARD_PAGES = 16

# Window after start_brk reported by brk_sequence (the child uses the same).
BRK_WINDOW = 64 << 20

# Seconds to wait for a reply before declaring the child hung.
DEFAULT_TIMEOUT = 60.0

CHILD_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_live_child.py")

# Operations that are plain system calls: reply {"ret": int} or {"errno": int}.
SYSCALL_OPS = ("mmap", "munmap", "mprotect", "madvise", "mremap", "brk")


# ---------------------------------------------------------------------------
# Availability checks


def live_kernel_available():
    """Tell whether live-kernel tests can run here.

    Returns
    -------
    (bool, str)
        ``(True, "")`` on Linux x86-64 with a readable ``/proc/self/maps``,
        else ``(False, reason)``.
    """
    if not sys.platform.startswith("linux"):
        return False, "not Linux (sys.platform=%r)" % sys.platform
    machine = os.uname().machine
    if machine != "x86_64":
        return False, "not x86-64 (machine=%r)" % machine
    try:
        with open("/proc/self/maps", "rb") as f:
            if not f.read(1):
                return False, "/proc/self/maps is empty"
    except OSError as e:
        return False, "cannot read /proc/self/maps: %s" % e
    return True, ""


def _pagemap_shows_pfns():
    """Tell whether this process sees PFNs in /proc/self/pagemap."""
    buf = ctypes.create_string_buffer(PAGE_SIZE)
    buf[0] = b"x"  # make the page present
    addr = ctypes.addressof(buf)
    fd = os.open("/proc/self/pagemap", os.O_RDONLY)
    try:
        entry = int.from_bytes(os.pread(fd, 8, (addr // PAGE_SIZE) * 8), "little")
    finally:
        os.close(fd)
    return bool(entry & PM_PRESENT) and (entry & PM_PFN_MASK) != 0


def live_root_available():
    """Tell whether the root-only features (PFNs, /proc/kpage*) work here.

    Returns
    -------
    (bool, str)
        ``(True, "")`` when :func:`live_kernel_available` holds, we are
        root, ``/proc/kpagecount`` and ``/proc/kpageflags`` are readable and
        pagemap shows PFNs; else ``(False, reason)``.
    """
    ok, reason = live_kernel_available()
    if not ok:
        return ok, reason
    if os.geteuid() != 0:
        return False, "not root"
    for path in ("/proc/kpagecount", "/proc/kpageflags"):
        try:
            with open(path, "rb") as f:
                if len(f.read(8)) != 8:
                    return False, "%s gives no data" % path
        except OSError as e:
            return False, "cannot read %s: %s" % (path, e)
    try:
        if not _pagemap_shows_pfns():
            return False, "pagemap does not show PFNs (no CAP_SYS_ADMIN?)"
    except OSError as e:
        return False, "cannot read /proc/self/pagemap: %s" % e
    return True, ""


# ---------------------------------------------------------------------------
# The live process


#: include/uapi/linux/personality.h: ADDR_NO_RANDOMIZE (what ``setarch -R`` sets).
ADDR_NO_RANDOMIZE = 0x0040000


def _disable_aslr():
    """In the child before exec: turn address-space randomisation off for it."""
    import ctypes
    ctypes.CDLL(None).personality(ADDR_NO_RANDOMIZE)


class LiveProcess:
    """A child process whose address space the caller drives.

    Parameters
    ----------
    arena_pages : int
        Size of the arena, in pages.
    arena_base : int
        Page-aligned address of the arena.  The arena and
        ``GUARD_PAGES`` pages on each side must be free in the child.
    timeout : float
        Seconds to wait for each reply before killing the child.
    no_aslr : bool
        Start the child with ADDR_NO_RANDOMIZE (as ``setarch -R``), so its layout is the
        fixed one the model's ``spawn()`` imitates.

    Attributes
    ----------
    arena, arena_end : int
        Bounds of the arena ``[arena, arena_end)``.
    guard : int
        Size in bytes of the guard on each side of the arena.
    pid : int
        Process id of the child.
    parent : LiveProcess or None
        For a process made by :meth:`fork`, the handle of the process that forked it.
    exit_status : int or None
        Once the process is reaped: its wait status for a forked process
        (``os.waitstatus_to_exitcode`` decodes it), ``Popen.returncode`` for the first.
    initial_brk : int
        ``brk(0)`` at child start.
    start_brk : int
        Start of the child's heap (``/proc/<pid>/stat`` field 47); equal to
        ``initial_brk`` because the child's malloc never uses brk.

    Notes
    -----
    Failing system calls raise ``OSError(errno, os.strerror(errno))``.  An
    access that faults kills the child with a signal; the call then raises
    ``RuntimeError("live child died with signal N during OP")`` and every
    later call raises ``RuntimeError`` too.  Use as a context manager or
    call :meth:`close`.

    Several processes: :meth:`fork` returns a handle on a new process (a real fork(2) of
    this one) that serves requests on its own pair of FIFOs, so that parent and child are
    driven independently; :meth:`exit` ends a process.  Every wait has the timeout: a
    forked process that dies gives the same RuntimeError as the first one.  Forked
    processes are reaped by the process that forked them (or by the first process, a
    child subreaper, once that one is gone), through a request, when their handle is
    closed or exits.
    """

    def __init__(self, arena_pages=DEFAULT_ARENA_PAGES, arena_base=DEFAULT_ARENA_BASE,
                 timeout=DEFAULT_TIMEOUT, no_aslr=False):
        self._init_handle(timeout)
        if arena_base % PAGE_SIZE or arena_pages <= 0:
            raise ValueError("arena_base must be page aligned and arena_pages > 0")
        self._first = True
        env = dict(os.environ)
        env["MALLOC_MMAP_THRESHOLD_"] = "0"  # keep malloc off the brk heap
        self._proc = subprocess.Popen(
            [sys.executable, "-I", "-S", CHILD_PATH,
             hex(arena_base), str(arena_pages), str(GUARD_PAGES)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True,
            preexec_fn=_disable_aslr if no_aslr else None,
        )
        self._family = weakref.WeakSet()
        self._attach(self._proc.stdout.fileno(), self._proc.stdin.fileno())
        hello = self._receive("startup")
        if "ret" not in hello:
            self.close()
            raise RuntimeError("live child failed to start: %s" % hello.get("error", hello))
        info = hello["ret"]
        self.pid = info["pid"]
        self.arena = info["arena"]
        self.arena_end = info["arena_end"]
        self.guard = info["guard"]
        self.initial_brk = info["initial_brk"]
        self.start_brk = info["start_brk"]

    def _init_handle(self, timeout):
        """Set every attribute that close() and __del__ rely on."""
        self._first = False  # True for the process LiveProcess() started
        self._proc = None  # the Popen of the first child until it is reaped
        self._pidfd = None  # pidfd of a forked process (to signal it safely)
        self._rfd = self._wfd = None  # reply channel (read), request channel (write)
        self._rsel = self._wsel = None
        self._closed = False
        self._busy = False  # inside _request (so __del__ of another handle keeps off)
        self._dead = None  # reason the child is gone, once it is
        self._buf = b""
        self._reaped = False  # a forked process's wait status has been collected
        self.exit_status = None  # its wait status (os.waitstatus_to_exitcode), if known
        self.timeout = timeout
        self.pid = None
        self.parent = None
        self._root = self
        self._family = None
        self._depth = 0

    def _attach(self, rfd, wfd):
        """Wire the handle to a reply descriptor and a request descriptor."""
        self._rfd = rfd
        self._wfd = wfd
        os.set_blocking(wfd, False)  # writes wait in a selector, with the timeout
        self._rsel = selectors.DefaultSelector()
        self._rsel.register(rfd, selectors.EVENT_READ)
        if self._pidfd is not None:
            # Readable once the process has exited: catches a death even when some other
            # process still holds the write end of the reply FIFO.
            self._rsel.register(self._pidfd, selectors.EVENT_READ)
        self._wsel = selectors.DefaultSelector()
        self._wsel.register(wfd, selectors.EVENT_WRITE)

    @classmethod
    def _from_fifos(cls, parent, info):
        """The handle of a process just forked by ``parent``'s process.

        ``info`` is the fork reply: ``{"pid", "req", "rep"}``.  Opens ``req`` for writing,
        then ``rep`` for reading (the forked process opens them in the same order, so
        neither side can block the other for good), waits for the forked process's hello
        and removes the FIFOs and their directory.
        """
        self = cls.__new__(cls)
        self._init_handle(parent.timeout)
        self.parent = parent
        self._root = parent._root
        self._depth = parent._depth + 1
        self.pid = info["pid"]
        for name in ("arena", "arena_end", "guard", "initial_brk", "start_brk"):
            setattr(self, name, getattr(parent, name))
        try:
            try:
                self._pidfd = os.pidfd_open(self.pid)
            except OSError:  # kernel without pidfds (before 5.3)
                self._pidfd = None
            what = "fork (connecting to the new process)"
            deadline = None if self.timeout is None else time.monotonic() + self.timeout
            wfd = None
            while wfd is None:
                try:
                    # O_NONBLOCK: fails with ENXIO (instead of blocking) until the forked
                    # process has opened req for reading.
                    wfd = os.open(info["req"], os.O_WRONLY | os.O_NONBLOCK)
                except OSError as e:
                    if e.errno != errno.ENXIO:
                        raise
                    if self._exited(0.001):
                        self._died(what)
                    if deadline is not None and time.monotonic() > deadline:
                        self._timed_out(what)
            # A non-blocking open for reading never waits; the forked process opens the
            # write end right after req.
            rfd = os.open(info["rep"], os.O_RDONLY | os.O_NONBLOCK)
            self._attach(rfd, wfd)
            hello = self._receive(what)
            if hello.get("ret", {}).get("pid") != self.pid:
                raise RuntimeError("live child %d: unexpected hello %r" % (self.pid, hello))
        except BaseException:
            self.close()
            raise
        finally:
            for path in (info["req"], info["rep"]):
                try:
                    os.unlink(path)
                except OSError:
                    pass
            try:
                os.rmdir(os.path.dirname(info["req"]))
            except OSError:
                pass
        self._root._family.add(self)
        return self

    # ---- plumbing ----

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        try:
            self._close(reap=None)
        except Exception:
            pass

    def close(self):
        """Kill the process and reap it.  Safe to call more than once.

        Closing the first process (the one ``LiveProcess()`` started) first closes every
        process forked from it, directly or not.  Closing a forked process kills only that
        process: its own children live on (reparented to the first process, a child
        subreaper) and their handles keep working.
        """
        self._close(reap=True)

    def _close(self, reap):
        """close(); ``reap=None`` (from __del__): reap only if no request is under way."""
        if self._closed:
            return
        if self._family is not None:  # first, while this process can still reap them
            for handle in sorted(self._family, key=lambda h: -h._depth):
                handle._close(reap)
        self._closed = True
        if self._dead is None:
            self._dead = "closed"
        self._release(reap)

    def _release(self, reap):
        """Kill the process if it still runs, reap it, release the channel.  Idempotent."""
        for sel in (self._rsel, self._wsel):
            if sel is not None:
                try:
                    sel.close()
                except Exception:
                    pass
        self._rsel = self._wsel = None
        if self._first:
            proc, self._proc = self._proc, None
            self._rfd = self._wfd = None  # they belong to proc's pipe objects
            if proc is not None:
                try:
                    proc.stdin.close()
                except Exception:
                    pass
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
                proc.stdout.close()
                if self.exit_status is None:
                    self.exit_status = proc.returncode
            return
        # A forked process: closing its FIFOs makes it leave its loop; kill it anyway.
        for fd in (self._wfd, self._rfd):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._wfd = self._rfd = None
        self._kill()
        if reap or (reap is None and not self._reaper_busy()):
            self._reap()
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None

    @property
    def alive(self):
        """True while the process can take requests."""
        return not self._closed and self._dead is None

    def _kill(self):
        """SIGKILL the process (not yet reaped: its pid cannot belong to another one)."""
        if self._first:
            if self._proc is not None and self._proc.poll() is None:
                self._proc.kill()
            return
        if self._reaped or self.pid is None:
            return
        try:
            if self._pidfd is not None:
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
            else:
                os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def _exited(self, timeout):
        """Wait up to ``timeout`` seconds for a forked process to exit (needs a pidfd)."""
        if self._pidfd is None:
            time.sleep(timeout)
            return False
        return bool(select.select([self._pidfd], [], [], timeout)[0])

    def _reapers(self):
        """Who may be the parent of this forked process: the process that forked it, or,
        once that one is gone, the first process (a child subreaper)."""
        for handle in (self.parent, self._root):
            if handle is not None and handle is not self and handle.alive:
                yield handle

    def _reaper_busy(self):
        return any(handle._busy for handle in (self.parent, self._root) if handle is not None)

    def _reap(self):
        """Collect the wait status of this (exiting or killed) forked process through its
        parent, so that it does not linger as a zombie; return it, or None if unknown."""
        if self._first or self._reaped:
            return self.exit_status
        for handle in self._reapers():
            try:
                status = handle._call("wait_child", self.pid)
            except RuntimeError:
                continue
            if status is not None:
                self._reaped = True
                self.exit_status = status
                return status
        return None

    def _died(self, what):
        """The child closed its reply channel: reap it and raise RuntimeError."""
        if self._first:
            try:
                code = self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                code = self._proc.wait()
            self.exit_status = code
        else:
            self._kill()  # in case it only closed its channel
            status = self._reap()
            code = None if status is None else os.waitstatus_to_exitcode(status)
        if code is None:
            self._dead = "live child %d is gone (status unknown) during %s" % (self.pid, what)
        elif code < 0:
            self._dead = "live child died with signal %d during %s" % (-code, what)
        else:
            self._dead = "live child exited with status %d during %s" % (code, what)
        raise RuntimeError(self._dead)

    def _timed_out(self, what):
        self._kill()
        self._dead = "live child timed out after %gs during %s" % (self.timeout, what)
        raise RuntimeError(self._dead)

    def _read_chunk(self, what):
        """Wait for the reply channel and read from it: bytes, or b"" at EOF."""
        while True:
            if not self._rsel.select(self.timeout):
                self._timed_out(what)
            try:
                return os.read(self._rfd, 1 << 16)
            except BlockingIOError:
                # Only the pidfd is ready: the process exited, though another process
                # (one it forked) still holds the write end of its reply FIFO.
                if self._exited(0):
                    return b""

    def _receive(self, what):
        """Read one JSON line from the child, detecting EOF and timeouts."""
        while b"\n" not in self._buf:
            chunk = self._read_chunk(what)
            if not chunk:
                self._died(what)
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return json.loads(line)

    def _send(self, message, what):
        """Write one request, waiting (with the timeout) while the channel is full."""
        view = memoryview(message)
        while view:
            try:
                view = view[os.write(self._wfd, view):]
            except BlockingIOError:
                if not self._wsel.select(self.timeout):
                    self._timed_out(what)
            except BrokenPipeError:
                self._died(what)

    def _request(self, op, *args, what=None):
        """Send one request and return the raw reply dictionary."""
        what = what or op
        if self._dead is not None:
            raise RuntimeError("live child is gone (%s); cannot do %s" % (self._dead, what))
        message = json.dumps({"op": op, "args": list(args)}).encode() + b"\n"
        self._busy = True
        try:
            self._send(message, what)
            reply = self._receive(what)
        finally:
            self._busy = False
        if "error" in reply:
            raise RuntimeError("live child rejected %s: %s" % (what, reply["error"]))
        return reply

    def _call(self, op, *args):
        """Send a request; return its result or raise OSError for an errno."""
        reply = self._request(op, *args)
        if "errno" in reply:
            err = reply["errno"]
            raise OSError(err, os.strerror(err))
        return reply["ret"]

    # ---- several processes ----

    def fork(self):
        """fork(2) the process; return a :class:`LiveProcess` driving the new one.

        The new process has the same ``arena``, ``arena_end``, ``guard``,
        ``initial_brk`` and ``start_brk``; ``pid`` is its own and ``parent`` is this
        handle.  It serves requests on two FIFOs; neither process touches the arena
        between the fork and the next request, so that request sees the pure post-fork
        state (shared, write-protected pages and so on).  Forked processes can fork
        again.  Raises OSError if fork(2) fails.
        """
        return LiveProcess._from_fifos(self, self._call("fork", self.timeout))

    def exit(self):
        """The process calls ``_exit(0)``; its handle is closed and it is reaped.

        Returns once the process has released its address space (its reply channel is
        closed after its memory is torn down, in do_exit()), so page counts seen
        afterwards no longer include its mappings.  Its children live on: those of a
        forked process are reparented to the first process (a child subreaper) and can
        still be driven and reaped.  Those of the first process go to init (or the
        nearest subreaper above the test process): they can still be driven, but closing
        them leaves the reaping to init (some container inits never reap).  The same
        holds when the first process dies of a signal while forked ones run.
        """
        self._request("exit")
        while self._read_chunk("exit"):  # until EOF: the process has released its memory
            pass
        self._dead = "exited"
        if self._first:
            try:
                self._proc.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                pass  # _release kills it
            self._release(reap=True)  # forked processes stay: close() closes them
        else:
            self._reap()
            self._close(reap=True)

    # ---- system calls ----

    def mmap(self, addr, length, prot, flags, fd=-1, offset=0):
        """mmap(2) in the child; return the address, raise OSError on failure."""
        return self._call("mmap", addr, length, prot, flags, fd, offset)

    def munmap(self, addr, length):
        """munmap(2) in the child; return 0, raise OSError on failure."""
        return self._call("munmap", addr, length)

    def mprotect(self, addr, length, prot):
        """mprotect(2) in the child; return 0, raise OSError on failure."""
        return self._call("mprotect", addr, length, prot)

    def madvise(self, addr, length, advice):
        """madvise(2) in the child; return 0, raise OSError on failure."""
        return self._call("madvise", addr, length, advice)

    def mremap(self, old_addr, old_size, new_size, flags=0, new_addr=0):
        """mremap(2) in the child; return the new address, raise OSError on failure."""
        return self._call("mremap", old_addr, old_size, new_size, flags, new_addr)

    def brk(self, addr):
        """Raw brk system call in the child.

        Returns the resulting break.  The kernel never fails brk with an
        errno: when it refuses to move the break it returns the old one.
        """
        return self._call("brk", addr)

    def brk_sequence(self, addrs):
        """Call brk on each address in turn, then restore ``initial_brk``.

        Parameters
        ----------
        addrs : list of int
            Arguments of the successive brk calls.

        Returns
        -------
        list of (int, list of str)
            For each call, its return value and the maps lines that are
            ``[heap]`` or intersect ``[start_brk, start_brk + BRK_WINDOW)``.
        """
        return [(ret, lines) for ret, lines in self._call("brk_sequence", list(addrs))]

    # ---- memory accesses ----

    def write(self, addr, data):
        """Copy ``data`` (bytes) to ``addr`` in the child.

        The caller guarantees that the range is writable; otherwise the
        child dies and RuntimeError is raised.
        """
        self._call("write", addr, bytes(data).hex())

    def read(self, addr, size):
        """Return ``size`` bytes read at ``addr`` in the child."""
        return bytes.fromhex(self._call("read", addr, size))

    def touch(self, addr, write):
        """Access one byte at ``addr``: a read, then (if ``write``) a write
        of the same value back."""
        self._call("touch", addr, bool(write))

    def probe(self, addr, write):
        """Would this access fault? A forked grandchild tries it: returns ``"ok"`` or
        ``"signal 11"`` (SIGSEGV). The child itself survives either way."""
        return self._call("probe", addr, bool(write))

    def mmap_probe(self, addr, length, prot, flags):
        """mmap(addr, length, prot, flags, -1, 0) right after reading the maps it is placed
        in: returns ``(maps_text_before, address)``; raises OSError on failure."""
        text, ret = self._call("mmap_probe", addr, length, prot, flags)
        return text, ret

    # ---- a second thread ----

    def spin_thread(self, cpu):
        """Start a second thread in the child, pinned to ``cpu``, spinning in user space
        (no syscalls, no faults) until :meth:`stop_spin`: that CPU keeps the child's
        address space loaded, so TLB shootdowns reach it. Returns the thread's tid."""
        return self._call("spin_thread", cpu)

    def stop_spin(self):
        """End the thread of :meth:`spin_thread`."""
        return self._call("stop_spin")

    # ---- introspection ----

    def maps(self, lo=None, hi=None):
        """Lines of the child's /proc/self/maps for VMAs intersecting [lo, hi).

        Lines are exactly as the kernel prints them, without the newline.
        ``lo`` and ``hi`` default to the arena bounds including the guards.
        """
        lo = self.arena - self.guard if lo is None else lo
        hi = self.arena_end + self.guard if hi is None else hi
        return self._call("maps", lo, hi)

    def maps_text(self):
        """The whole /proc/self/maps of the child, as text."""
        return self._call("maps_text")

    def pagemap(self, addr):
        """The raw 64-bit /proc/self/pagemap entry of the page holding ``addr``.

        Read by the child, so the flag bits work unprivileged; the PFN
        (bits 0-54) is zero unless the child has CAP_SYS_ADMIN.
        """
        return self._call("pagemap", addr)

    def pagemaps(self, addrs):
        """The pagemap entries of the pages holding each of ``addrs``, in one round trip.

        Returns a list of int, as :meth:`pagemap` would one by one.
        """
        replies = self.run([{"op": "pagemap", "args": [addr]} for addr in addrs])
        out = []
        for reply in replies:
            if "errno" in reply:
                raise OSError(reply["errno"], os.strerror(reply["errno"]))
            out.append(reply["ret"])
        return out

    @staticmethod
    def _kpage(path, pfn):
        with open(path, "rb") as f:
            data = os.pread(f.fileno(), 8, pfn * 8)
        if len(data) != 8:
            raise ValueError("pfn %#x is beyond %s" % (pfn, path))
        return int.from_bytes(data, "little")

    def kpagecount(self, pfn):
        """Number of mappings of the page frame ``pfn`` (/proc/kpagecount; root)."""
        return self._kpage("/proc/kpagecount", pfn)

    def kpageflags(self, pfn):
        """KPF_* flags of the page frame ``pfn`` (/proc/kpageflags; root)."""
        return self._kpage("/proc/kpageflags", pfn)

    # ---- files, for file-backed mappings (fds live in the child) ----

    def open(self, path, flags=os.O_RDWR, mode=0o600):
        """os.open in the child; return the child's fd."""
        return self._call("open", path, flags, mode)

    def memfd_create(self, name="vmwidgets", flags=0):
        """os.memfd_create in the child; return the child's fd."""
        return self._call("memfd_create", name, flags)

    def ftruncate(self, fd, length):
        """os.ftruncate of the child's fd."""
        return self._call("ftruncate", fd, length)

    def close_fd(self, fd):
        """os.close of the child's fd."""
        return self._call("close", fd)

    def dup(self, fd):
        """os.dup of the child's fd (the same open file description); the new fd."""
        return self._call("dup", fd)

    # ---- batches ----

    def run(self, ops):
        """Run a batch of operations in one round trip.

        Parameters
        ----------
        ops : list of dict
            Each like ``{"op": "mmap", "args": [addr, length, prot, flags]}``;
            ``op`` is any method name above that the child implements
            (``mmap``, ``munmap``, ``mprotect``, ``madvise``, ``mremap``,
            ``brk``, ``write``, ``read``, ``touch``, ``maps``, ``pagemap``...).

        Returns
        -------
        list of dict
            One per op: ``{"ret": value}`` or ``{"errno": n}``.  ``read``
            gives bytes, ``write`` takes bytes, ``maps`` gives a list of
            lines (``args`` ``[lo, hi]`` required).

        Raises
        ------
        RuntimeError
            If an op is malformed or the child dies during the batch.
        """
        wire = []
        for op in ops:
            args = list(op.get("args", []))
            if op["op"] == "write":
                args[1] = bytes(args[1]).hex()
            wire.append({"op": op["op"], "args": args})
        names = ", ".join(op["op"] for op in ops[:8]) + (", ..." if len(ops) > 8 else "")
        replies = self._request("run", wire, what="run([%s])" % names)["ret"]
        for op, reply in zip(ops, replies):
            if "error" in reply:
                raise RuntimeError("live child rejected %r: %s" % (op, reply["error"]))
            if op["op"] == "read" and "ret" in reply:
                reply["ret"] = bytes.fromhex(reply["ret"])
        return replies
