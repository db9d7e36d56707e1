"""Run the same operations on the model and on the live kernel and compare what a user sees.

A :class:`Twin` holds a model process and a live child process (``vmwidgets.live``) whose
arena sits at the same address, so addresses, return values, errnos and the arena's
``/proc/PID/maps`` lines can be compared literally after every operation, and page states
through pagemap (and, as root, through which pages share a frame, kpagecount and
kpageflags).
"""

import contextlib
import os
import random
import tempfile

import pytest

import vmwidgets as vw
from vmwidgets.live import LiveProcess, live_kernel_available, live_root_available

P = vw.PAGE_SIZE
WRITE_BYTE = b"\x41"


def require_live():
    ok, why = live_kernel_available()
    if not ok:
        pytest.skip(f"live kernel not usable: {why}")


@contextlib.contextmanager
def real_file(pages, tail=b"", prefix="vmw-file-"):
    """A temporary file of ``pages`` pages, page i filled with the byte i + 1, then ``tail``;
    written out and dropped from the page cache, so the first access really reads it."""
    fd, path = tempfile.mkstemp(prefix=prefix)
    try:
        os.write(fd, b"".join(bytes([i + 1]) * vw.PAGE_SIZE for i in range(pages)) + tail)
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    try:
        yield path
    finally:
        os.unlink(path)


def root_available():
    return live_root_available()[0]


def _normalise(line):
    # Shared anonymous memory is a shmem file whose inode number is the kernel's choice.
    if line.endswith("/dev/zero (deleted)"):
        head = line.split()
        return " ".join(head[:4]) + " <shmem-ino> /dev/zero (deleted)"
    return line


class Mismatch(AssertionError):
    pass


class Twin:
    """Model processes and live processes in pairs, with the same arena.

    It starts as one pair; ``fork(who)`` adds a pair, ``exit(who)`` removes one.
    ``p`` / ``lp`` are the first pair's processes.
    """

    def __init__(self, arena_pages=64, check_pages=True, swap=0):
        lp = LiveProcess(arena_pages=arena_pages)
        self.m = vw.Machine(swap=swap)
        self.pairs = [(self.m.spawn(), lp)]
        self.first = lp
        self.base = lp.arena
        self.end = lp.arena_end
        self.lo = lp.arena - lp.guard * P
        self.hi = lp.arena_end + lp.guard * P
        self.log = []
        self.check_pages = check_pages
        self.root = root_available()
        self.fds = {}

    @property
    def p(self):
        return self.pairs[0][0]

    @property
    def lp(self):
        return self.pairs[0][1]

    def close(self):
        self.first.close()

    def open(self, path, flags):
        """Open a real file in the live child and the same file in the model; the model's
        file takes the real one's contents, device and inode, so maps lines match. A
        second open of the same path opens the model's file again (a second open file
        description of the same inode), as the kernel does."""
        if path not in self.m.files:
            st = os.stat(path)
            with open(path, "rb") as f:
                data = f.read()
                # Reading it filled the page cache; empty it again (the model starts empty).
                os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
            mfile = self.m.create_file(path, data)
            mfile.dev = (os.major(st.st_dev), os.minor(st.st_dev))
            mfile.ino = st.st_ino
            self.m.read_ahead_kb = read_ahead_kb(st.st_dev)
        mfd = self.p.open(path, flags)
        self.fds[mfd] = self.lp.open(path, flags)
        return mfd

    def dup(self, mfd, who=0):
        """dup() an fd on both sides (the fd table is shared by fork: same numbers)."""
        p, lp = self.pairs[who]
        self.log.append(f"[{who}] dup({mfd})")
        new = p.dup(mfd)
        self.fds[new] = lp.dup(self.fds[mfd])
        return new

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- processes --------------------------------------------------------------------------
    def fork(self, who=0):
        """fork() the ``who``-th pair on both sides; returns the new pair's index."""
        self.log.append(f"[{who}] fork()")
        mp, lp = self.pairs[who]
        self.pairs.append((mp.fork(), lp.fork()))
        return len(self.pairs) - 1

    def exit(self, who):
        self.log.append(f"[{who}] exit()")
        mp, lp = self.pairs.pop(who)
        mp.exit()
        lp.exit()

    # -- running one operation on both sides -------------------------------------------------
    def syscall(self, name, *args, who=0):
        """Run ``name(*args)`` on both; return the model's result; raise on any difference."""
        p, lp = self.pairs[who]
        self.log.append(f"[{who}] {name}("
                        f"{', '.join(hex(a) if isinstance(a, int) else repr(a) for a in args)})")
        model = _outcome(lambda: getattr(p, name)(*args))
        if name == "mmap" and len(args) > 4:
            args = args[:4] + (self.fds.get(args[4], args[4]),) + args[5:]
        kernel = _outcome(lambda: getattr(lp, name)(*args))
        if name in ("mmap", "mremap") and "ret" in model and "ret" in kernel:
            m_in = self.lo <= model["ret"] < self.hi
            k_in = self.lo <= kernel["ret"] < self.hi
            if not m_in and not k_in:
                # Both placed it outside the arena (near their own mmap_base): equivalent.
                # Unmap it so the rest of the trace compares like with like.
                length = args[1] if name == "mmap" else args[2]
                p.munmap(model["ret"], length)
                lp.munmap(kernel["ret"], length)
                self.log[-1] += "  [placed outside the arena; unmapped]"
                return model
        if model != kernel:
            self.fail(f"{name} result differs: model {model}, kernel {kernel}")
        return model

    def access(self, addr, write, who=0):
        """A one-byte access; the model's SIGSEGV prediction is checked in a forked probe."""
        p, lp = self.pairs[who]
        self.log.append(f"[{who}] {'write' if write else 'read'}({addr:#x})")
        # A write is a pure one-byte store on both sides (no read first: a read fault would
        # map neighbours by fault-around). Each process writes its own byte value, so data
        # leaking between processes shows up in later reads.
        byte = bytes([WRITE_BYTE[0] + who])
        try:
            if write:
                p.write(addr, byte)
                model = "ok"
            else:
                model = p.read(addr, 1)
        except vw.SegmentationFault:
            model = "signal 11"
        except vw.BusError:
            model = "signal 7"
        if isinstance(model, bytes) or model == "ok":
            try:
                if write:
                    lp.write(addr, byte)
                else:
                    kernel = lp.read(addr, 1)
                    if kernel != model:
                        self.fail(f"read {addr:#x}: model {model!r}, kernel {kernel!r}")
            except RuntimeError as exc:
                self.fail(f"model allowed the access, the kernel killed the child: {exc}")
        else:
            kernel = lp.probe(addr, write)
            if kernel != model:
                self.fail(f"model says {model}, kernel says {kernel}")
        return model

    # -- comparing state ------------------------------------------------------------------------
    def maps(self, who=0):
        p, lp = self.pairs[who]
        model = [_normalise(line) for line in p.proc_maps().splitlines()
                 if self._in_arena(line)]
        kernel = [_normalise(line) for line in lp.maps(self.lo, self.hi)]
        return model, kernel

    def _in_arena(self, line):
        start, end = (int(x, 16) for x in line.split()[0].split("-"))
        return start < self.hi and end > self.lo

    def check(self):
        for who in range(len(self.pairs)):
            model, kernel = self.maps(who)
            if model != kernel:
                self.fail(f"maps of process [{who}] differ:\n  model:\n    "
                          + "\n    ".join(model) + "\n  kernel:\n    " + "\n    ".join(kernel))
        if self.check_pages:
            self.check_page_states()

    def check_page_states(self):
        addrs = list(range(self.base, self.end, P))
        kernel_entries, model_entries = {}, {}
        for who, (p, lp) in enumerate(self.pairs):
            for a, raw in zip(addrs, lp.pagemaps(addrs)):
                k = kernel_entries[who, a] = vw.PagemapEntry.from_int(raw)
                mdl = model_entries[who, a] = p.pagemap(a)
                got = (k.present, k.swapped, k.file_shared, k.exclusive)
                want = (mdl.present, mdl.swapped, mdl.file_shared, mdl.exclusive)
                if got != want:
                    self.fail(f"pagemap of [{who}] {a:#x} (present, swapped, file/shared, "
                              f"exclusive): model {want}, kernel {got}")
        if self.root:
            present = [key for key, e in kernel_entries.items() if e.present]
            self._compare_frames(present, kernel_entries, model_entries)

    def _compare_frames(self, present, kernel_entries, model_entries):
        """Which (process, page)s share a frame, and each frame's kpagecount and flags."""
        def groups(entries):
            by = {}
            for key in present:
                by.setdefault(entries[key].pfn, []).append(key)
            return sorted(tuple(v) for v in by.values())
        kg, mg = groups(kernel_entries), groups(model_entries)
        if kg != mg:
            self.fail(f"pages sharing a frame differ: model {mg}, kernel {kg}")
        mask = (1 << vw.KPF_ANON) | (1 << vw.KPF_ZERO_PAGE) | (1 << vw.KPF_MMAP)
        for key in present:
            kpfn, mpfn = kernel_entries[key].pfn, model_entries[key].pfn
            kc, mc = self.lp.kpagecount(kpfn), self.m.kpagecount(mpfn)
            kf, mf = self.lp.kpageflags(kpfn), self.m.kpageflags(mpfn)
            if (kc, kf & mask) != (mc, mf & mask):
                self.fail(f"frame of [{key[0]}] {key[1]:#x}: (kpagecount, ANON|ZERO_PAGE|MMAP) "
                          f"model ({mc}, {mf & mask:#x}) kernel ({kc}, {kf & mask:#x})")

    def fail(self, message):
        trace = "\n    ".join(self.log[-40:])
        raise Mismatch(f"{message}\nafter (last ops):\n    {trace}\nmodel state:\n{self.m.dump()}")


def run_ops(twin, ops):
    """Run a scenario on both sides, comparing after every step.

    Each op is ``(name, args...)`` or ``(who, name, args...)``, ``who`` being the index of
    the process; addresses are arena page numbers: ``("mmap", page, npages, prot, flags)``,
    ``("munmap", page, npages)``, ``("mprotect"|"madvise", page, npages, value)``,
    ``("mremap", page, old_npages, new_npages, flags, dst_page)``, ``("read"|"write", page)``,
    ``(who, "fork")``, ``(who, "exit")``.
    """
    def addr(page):
        return twin.base + page * P

    for op in ops:
        who, op = (op[0], op[1:]) if isinstance(op[0], int) else (0, op)
        name, args = op[0], op[1:]
        if name == "fork":
            twin.fork(who)
        elif name == "exit":
            twin.exit(who)
        elif name in ("read", "write"):
            twin.access(addr(args[0]), name == "write", who=who)
        elif name == "mmap":
            page, n, prot, flags = args
            twin.syscall("mmap", addr(page), n * P, prot, flags, who=who)
        elif name == "munmap":
            twin.syscall(name, addr(args[0]), args[1] * P, who=who)
        elif name in ("mprotect", "madvise"):
            twin.syscall(name, addr(args[0]), args[1] * P, args[2], who=who)
        elif name == "mremap":
            page, old, new, flags, dst = args
            twin.syscall("mremap", addr(page), old * P, new * P, flags,
                         addr(dst) if flags & vw.MREMAP_FIXED else 0, who=who)
        else:
            raise ValueError(f"unknown scenario op {op!r}")
        vw.validate(twin.m)
        twin.check()


def read_ahead_kb(st_dev):
    """The read-ahead of the block device holding a file (128 when unknown)."""
    path = f"/sys/dev/block/{os.major(st_dev)}:{os.minor(st_dev)}/queue/read_ahead_kb"
    try:
        with open(path) as f:
            return int(f.read())
    except OSError:
        return 128


def _outcome(fn):
    try:
        return {"ret": fn()}
    except OSError as exc:
        return {"errno": exc.errno}


# -- seeded random traces -------------------------------------------------------------------------

PROTS = [vw.PROT_NONE, vw.PROT_READ, vw.PROT_WRITE, vw.PROT_READ | vw.PROT_WRITE,
         vw.PROT_EXEC, vw.PROT_READ | vw.PROT_EXEC, vw.PROT_READ | vw.PROT_WRITE | vw.PROT_EXEC]
ADVICE = [vw.MADV_DONTNEED, vw.MADV_DONTNEED, vw.MADV_FREE, vw.MADV_DONTFORK, vw.MADV_DOFORK,
          vw.MADV_WIPEONFORK, vw.MADV_KEEPONFORK, vw.MADV_DONTDUMP, vw.MADV_DODUMP,
          vw.MADV_NORMAL, vw.MADV_RANDOM, vw.MADV_SEQUENTIAL, vw.MADV_WILLNEED, vw.MADV_COLD,
          vw.MADV_POPULATE_READ, vw.MADV_POPULATE_WRITE, vw.MADV_NOHUGEPAGE, 7, 999]


def random_op(rng, base, pages):
    """One random operation over an arena of ``pages`` pages at ``base``: (name, args)."""
    def addr(span=pages):
        a = base + rng.randrange(span) * P
        return a + (rng.choice([1, 0x800]) if rng.random() < 0.03 else 0)

    def length(huge=True):
        # A huge length is fine for calls that stop at the first hole (munmap, mprotect);
        # madvise would walk on past the arena into the live child's own memory.
        if rng.random() < 0.03:
            return rng.choice([0, 1, P + 1] + ([1 << 63] if huge else []))
        return rng.randint(1, 6) * P

    kind = rng.choices(["mmap", "munmap", "mprotect", "madvise", "mremap", "read", "write"],
                       [30, 12, 20, 10, 8, 10, 14])[0]
    if kind == "mmap":
        prot = rng.choice(PROTS)
        flags = vw.MAP_ANONYMOUS | (vw.MAP_SHARED if rng.random() < 0.08 else vw.MAP_PRIVATE)
        placement = rng.choices(["fixed", "noreplace", "hint"], [6, 2, 2])[0]
        flags |= {"fixed": vw.MAP_FIXED, "noreplace": vw.MAP_FIXED_NOREPLACE, "hint": 0}[placement]
        if rng.random() < 0.1:
            flags |= vw.MAP_NORESERVE
        if rng.random() < 0.1:
            flags |= vw.MAP_POPULATE
        if rng.random() < 0.03:
            flags |= vw.MAP_STACK
        if rng.random() < 0.02:
            flags &= ~(vw.MAP_PRIVATE | vw.MAP_SHARED)
        return "mmap", (addr(pages - 6), length(), prot, flags)
    if kind == "munmap":
        return "munmap", (addr(), length())
    if kind == "mprotect":
        prot = rng.choice(PROTS)
        if rng.random() < 0.03:
            prot |= rng.choice([0x10, vw.PROT_GROWSDOWN])
        return "mprotect", (addr(), length(), prot)
    if kind == "madvise":
        return "madvise", (addr(), length(huge=False), rng.choice(ADVICE))
    if kind == "mremap":
        old = addr(pages - 6)
        old_len = rng.randint(1, 4) * P
        new_len = rng.randint(1, 6) * P
        how = rng.choice(["resize", "resize", "maymove", "fixed", "fixed", "dontunmap"])
        if how == "resize":
            return "mremap", (old, old_len, new_len, 0, 0)
        if how == "maymove":
            return "mremap", (old, old_len, new_len, vw.MREMAP_MAYMOVE, 0)
        dst = addr(pages - 6) & ~(P - 1)
        if how == "fixed":
            return "mremap", (old, old_len, new_len, vw.MREMAP_MAYMOVE | vw.MREMAP_FIXED, dst)
        return "mremap", (old, old_len, old_len,
                          vw.MREMAP_MAYMOVE | vw.MREMAP_FIXED | vw.MREMAP_DONTUNMAP, dst)
    return kind, (base + rng.randrange(pages) * P + rng.randrange(P),)


def run_random_trace(seed, n_ops=120, arena_pages=48, check_every=1):
    rng = random.Random(seed)
    with Twin(arena_pages=arena_pages) as twin:
        for i in range(n_ops):
            name, args = random_op(rng, twin.base, arena_pages)
            if name in ("read", "write"):
                twin.access(args[0], name == "write")
            else:
                twin.syscall(name, *args)
            vw.validate(twin.m)
            if i % check_every == 0:
                twin.check()
        twin.check()
        return twin.log


def run_random_family_trace(seed, n_ops=150, arena_pages=32, max_procs=4):
    """Like :func:`run_random_trace`, with fork and exit: every op runs in a random live
    process; after each op every process's maps and pages, and (as root) the frames shared
    between processes, are compared."""
    rng = random.Random(seed)
    with Twin(arena_pages=arena_pages) as twin:
        for i in range(n_ops):
            roll = rng.random()
            if roll < 0.06 and len(twin.pairs) < max_procs:
                twin.fork(rng.randrange(len(twin.pairs)))
            elif roll < 0.09 and len(twin.pairs) > 1:
                twin.exit(rng.randrange(1, len(twin.pairs)))
            else:
                who = rng.randrange(len(twin.pairs))
                name, args = random_op(rng, twin.base, arena_pages)
                if name in ("read", "write"):
                    twin.access(args[0], name == "write", who=who)
                else:
                    twin.syscall(name, *args, who=who)
            vw.validate(twin.m)
            twin.check()
        return twin.log
