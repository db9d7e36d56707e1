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

Privileges
----------
Maps and the pagemap flag bits (present, exclusive, ...) work without
privileges.  PFNs in pagemap and ``/proc/kpagecount``/``/proc/kpageflags``
need root (CAP_SYS_ADMIN): see :func:`live_root_available`.
"""

import ctypes
import json
import os
import selectors
import subprocess
import sys

# ---------------------------------------------------------------------------
# Constants (x86-64 Linux)

# The Linux constants are the model's own (one place for each value); the child program
# keeps its own copy because it must run without vmwidgets installed.
from .core.flags import (  # noqa: F401 (re-exported for callers and tests)
    KPF_ANON, KPF_BUDDY, KPF_DIRTY, KPF_LRU, KPF_MMAP, KPF_PGTABLE, KPF_SWAPBACKED,
    KPF_ZERO_PAGE, MADV_DONTNEED, MADV_FREE, MAP_ANONYMOUS, MAP_FIXED, MAP_FIXED_NOREPLACE,
    MAP_GROWSDOWN, MAP_NORESERVE, MAP_POPULATE, MAP_PRIVATE, MAP_SHARED, MREMAP_DONTUNMAP,
    MREMAP_FIXED, MREMAP_MAYMOVE, PAGE_SIZE, PM_FILE, PM_PRESENT, PM_SOFT_DIRTY, PROT_EXEC,
    PROT_NONE, PROT_READ, PROT_WRITE)
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
    """

    def __init__(self, arena_pages=DEFAULT_ARENA_PAGES, arena_base=DEFAULT_ARENA_BASE,
                 timeout=DEFAULT_TIMEOUT, no_aslr=False):
        if arena_base % PAGE_SIZE or arena_pages <= 0:
            raise ValueError("arena_base must be page aligned and arena_pages > 0")
        self._proc = None
        self._dead = None  # reason the child is gone, once it is
        self._buf = b""
        self.timeout = timeout
        env = dict(os.environ)
        env["MALLOC_MMAP_THRESHOLD_"] = "0"  # keep malloc off the brk heap
        self._proc = subprocess.Popen(
            [sys.executable, "-I", "-S", CHILD_PATH,
             hex(arena_base), str(arena_pages), str(GUARD_PAGES)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True,
            preexec_fn=_disable_aslr if no_aslr else None,
        )
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._proc.stdout, selectors.EVENT_READ)
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

    # ---- plumbing ----

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def close(self):
        """Kill the child and reap it.  Safe to call more than once."""
        proc = self._proc
        if proc is None:
            return
        self._proc = None
        if self._dead is None:
            self._dead = "closed"
        try:
            self._selector.close()
        except Exception:
            pass
        try:
            proc.stdin.close()
        except Exception:
            pass
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()

    @property
    def alive(self):
        """True while the child can take requests."""
        return self._proc is not None and self._dead is None

    def _died(self, what):
        """The child closed its stdout: reap it and raise RuntimeError."""
        try:
            code = self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            code = self._proc.wait()
        if code < 0:
            self._dead = "live child died with signal %d during %s" % (-code, what)
        else:
            self._dead = "live child exited with status %d during %s" % (code, what)
        raise RuntimeError(self._dead)

    def _receive(self, what):
        """Read one JSON line from the child, detecting EOF and timeouts."""
        fd = self._proc.stdout.fileno()
        while b"\n" not in self._buf:
            if not self._selector.select(self.timeout):
                self._proc.kill()
                self._dead = "live child timed out after %gs during %s" % (self.timeout, what)
                raise RuntimeError(self._dead)
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                self._died(what)
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return json.loads(line)

    def _request(self, op, *args, what=None):
        """Send one request and return the raw reply dictionary."""
        what = what or op
        if self._dead is not None:
            raise RuntimeError("live child is gone (%s); cannot do %s" % (self._dead, what))
        message = json.dumps({"op": op, "args": list(args)}).encode() + b"\n"
        try:
            self._proc.stdin.write(message)
            self._proc.stdin.flush()
        except BrokenPipeError:
            self._died(what)
        reply = self._receive(what)
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
