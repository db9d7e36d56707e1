"""The front door: a :class:`Machine` (physical memory, sysctls, processes) and the
syscall surface of each :class:`Process`.

Every syscall takes its arguments as the x86-64 ABI does (unsigned 64-bit integers; an
``int`` fd), checks Python types first (a ``TypeError`` naming the argument), then runs
the kernel path. Failures raise ``OSError`` with Linux's errno; refused accesses raise
:class:`SegmentationFault` and change nothing.

>>> import vmwidgets as vw
>>> m = vw.Machine()
>>> p = m.spawn()
>>> a = p.mmap(0, 3 * 4096, vw.PROT_READ | vw.PROT_WRITE, vw.MAP_PRIVATE | vw.MAP_ANONYMOUS)
>>> p.write(a + 4096, b"hi")
>>> p.read(a + 4096, 2)
b'hi'
>>> p.mprotect(a, 4096, vw.PROT_READ)
0
>>> len(p.mm.vmas_in(a, a + 3 * 4096))
2
>>> vw.validate(m)
"""

import functools
import time
from collections import Counter, deque
from dataclasses import dataclass, field

from . import madvise as madvise_mod, memory, mmap as mmap_mod, mprotect as mprotect_mod
from . import mremap as mremap_mod, pgtable, tlb as tlb_mod, vma as vma_mod
from .flags import SEGV_MAPERR
from .errors import (EBADF, ENOENT, ENOMEM, BusError, OutOfMemory, ProcessKilled,
                     SegmentationFault, syscall_error)
from .filemap import File, OpenFile
from .flags import (DEFAULT_MAX_MAP_COUNT, DEFAULT_MMAP_MIN_ADDR, PAGE_MASK, PAGE_SHIFT,
                    PAGE_SIZE, STACK_GUARD_GAP, STACK_TOP, TASK_SIZE, ULONG_MAX, VM_ACCOUNT,
                    VM_DONTEXPAND, VM_EXEC, VM_IO, VM_MAYEXEC, VM_MAYREAD,
                    VM_MAYWRITE, VM_PFNMAP, VM_READ, VM_STACK_FLAGS, VM_WRITE, VM_DONTDUMP)
from .mm_types import MmStruct, VmAreaStruct, VmOps
from . import swap as swap_mod
from .swap import SwapArea
from .timeline import Op, StepRecord, Timeline
from .. import trace

#: arch/x86/include/asm/elf.h: ELF_ET_DYN_BASE, where a PIE binary loads without ASLR.
ELF_ET_DYN_BASE = 0x555555554000
#: arch/x86/mm/mmap.c: mmap_base() clamps the gap below the stack to at least 128 MiB.
MIN_GAP = 128 << 20
RLIMIT_STACK = 8 << 20
#: fs/exec.c: setup_arg_pages() grows the new stack VMA to 128 KiB plus the argument page.
INITIAL_STACK_BYTES = 0x21000
#: glibc's first sbrk() (128 KiB + a page of padding): the heap a started process has.
INITIAL_HEAP_BYTES = 0x21000

_O_CREAT = 0o100

_SYSCTL_DEFAULTS = {
    "vm.max_map_count": DEFAULT_MAX_MAP_COUNT,
    "vm.mmap_min_addr": DEFAULT_MMAP_MIN_ADDR,
    "vm.overcommit_memory": 0,
    "vm.overcommit_ratio": 50,
}


class Sysctl(dict):
    """``/proc/sys/vm`` settings the model honours; unknown names are refused. Setting one is a
    step of the machine (``sysctl -w``), so the timeline replays it."""

    def __init__(self, machine):
        super().__init__(_SYSCTL_DEFAULTS)
        self.machine = machine

    def __setitem__(self, key, value):
        self.check(key, value)
        self.machine.set_sysctl(key, value)

    @staticmethod
    def check(key, value):
        if key not in _SYSCTL_DEFAULTS:
            raise KeyError(f"unknown sysctl {key!r}; known: {', '.join(sorted(_SYSCTL_DEFAULTS))}")
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"sysctl {key} takes a non-negative int, got {value!r}")
        if key == "vm.overcommit_memory" and value not in (0, 1, 2):
            raise ValueError("vm.overcommit_memory is 0 (heuristic), 1 (always) or 2 (never)")

    def __reduce__(self):
        return (_restore_sysctl, (self.machine, dict(self)))


def _restore_sysctl(machine, values):
    sysctl = Sysctl(machine)
    dict.update(sysctl, values)
    return sysctl


def step(fn):
    """Make a public operation one step of the machine: it is logged (so the timeline can
    replay it), traced (its kernel call tree), and its events are kept with it. Calls made
    while a step runs (``touch`` reading, the OOM killer's ``kill``) are part of that step.
    Bad arguments (``TypeError``/``ValueError``) are not steps: nothing happened."""
    call = fn.__name__

    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        machine = self if isinstance(self, Machine) else self.machine
        if machine._step is not None:
            return fn(self, *args, **kwargs)
        return machine._run_step(self, call, fn, args, kwargs)

    return wrapper


@dataclass
class Event:
    """One step of the machine: a syscall or memory access and what the kernel did."""

    seq: int
    pid: int
    call: str
    args: tuple
    result: object = None
    errno: int = 0
    outcome: list = field(default_factory=list)

    def __str__(self):
        args = ", ".join(hex(a) if isinstance(a, int) and a > 9 else repr(a) for a in self.args)
        res = f"errno {self.errno}" if self.errno else (
            hex(self.result) if isinstance(self.result, int) and self.result > 9 else repr(self.result))
        return f"#{self.seq} pid {self.pid}: {self.call}({args}) = {res}"


def _parse_size(value, name):
    if isinstance(value, str):
        units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
        text = value.strip().upper().rstrip("B").rstrip("I")
        try:
            if text and text[-1] in units:
                return int(float(text[:-1]) * units[text[-1]])
            return int(text)
        except ValueError:
            raise ValueError(f"{name} must be a number of bytes or a size like '256M', "
                             f"got {value!r}") from None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise TypeError(f"{name} must be a number of bytes or a size like '256M', got {value!r}")
    return value


class Machine:
    """A Linux 6.18 x86-64 machine: finite RAM, sysctls in :attr:`sysctl`, processes.

    :param ram: physical memory in bytes, or a size such as ``"256M"``.
    :param swap: swap space in bytes or a size; reclaim swaps anonymous pages out to it.
    :param read_ahead_kb: the block device's read-ahead, which sizes the read-around of
        file faults (Linux defaults to 128; ``/sys/block/*/queue/read_ahead_kb``).
    :param cpus: the number of CPUs (1 to 64); each has a TLB (see :mod:`.tlb`).
    :param tlb_entries: entries of each CPU's TLB.
    :param tlb_policy: the TLB's replacement: ``"lru"``, ``"fifo"`` or ``"random"``.
    :param pcid: tag TLB entries with PCIDs (x86 CR4.PCIDE), so a context switch need not
        flush; without, every switch to another address space flushes.
    :param seed: seeds ``machine.rng``, the only source of randomness (random replacement).

    ``m.cpus`` lists the :class:`~vmwidgets.core.tlb.Cpu` objects; ``m.tlb_log`` the recent
    :class:`~vmwidgets.core.tlb.TlbFlush` records (each step's are in its record's
    ``tlb_flushes``).
    """

    def __init__(self, ram="256M", swap=0, read_ahead_kb=128, *, history=True, trace=True,
                 checkpoint_every=None, keep_events=10_000, cpus=1, tlb_entries=64,
                 tlb_policy="lru", pcid=True, seed=0):
        from .page_alloc import PhysicalMemory
        ram = _parse_size(ram, "ram")
        self.phys = PhysicalMemory(ram >> PAGE_SHIFT)
        self.swap_pages = _parse_size(swap, "swap") >> PAGE_SHIFT
        self.swap = SwapArea(self.swap_pages + 1)
        self.lru_clock = 0
        self.read_ahead_kb = read_ahead_kb
        self.stats = Counter()
        self.current = None
        self.sysctl = Sysctl(self)
        self.processes = []
        self.anon_vmas = {}
        self.events = deque(maxlen=keep_events)
        self._nevents = 0
        self._last_pid = 0
        self._last_shmem_ino = 0
        self._last_file_serial = 0
        self._ids = {}
        self.binary = File("/usr/bin/demo", _demo_binary(), ino=260131)
        self.files = {self.binary.path: self.binary}
        self.tlb_log = deque(maxlen=keep_events)
        tlb_mod.setup(self, cpus, tlb_entries, tlb_policy, pcid, seed)
        #: Steps run so far; the StepRecord of the one running (None between steps).
        self.nr_steps = 0
        self._step = None
        self.frozen = False
        self.tracing = trace
        self.timeline = None
        if history:
            self.timeline = Timeline(self, checkpoint_every)

    # -- steps ---------------------------------------------------------------------------------
    def _run_step(self, task, call, fn, args, kwargs):
        if self.frozen:
            raise RuntimeError("this machine is a past state from a timeline (read-only); "
                               "run operations on the live machine")
        args = tuple(_plain(a) for a in args)
        kwargs = {k: _plain(v) for k, v in kwargs.items()}
        record = StepRecord(self.nr_steps, Op(0 if task is self else task.tid, call, args,
                                              kwargs))
        self._step = record
        code = fn.__code__
        previous = (trace.begin(call, record.op.shown(code.co_varnames[1:code.co_argcount]))
                    if self.tracing else trace.pause())
        record.cost = time.perf_counter()
        try:
            result = fn(task, *args, **kwargs)
        except (TypeError, ValueError, KeyError, ProcessLookupError):
            trace.end(previous) if self.tracing else trace.resume(previous)
            self._step = None
            raise
        except BaseException as exc:
            record.error = trace._error_text(exc)
            record.reason = _error_reason(exc)
            self._finish_step(record, previous)
            raise
        record.result = result
        self._finish_step(record, previous)
        return result

    def _finish_step(self, record, previous):
        record.cost = time.perf_counter() - record.cost
        if self.tracing:
            record.trace = trace.end(previous)
            record.trace.error = record.error
            if record.result is not None:
                record.trace.result = trace.fmt_value(record.result)
        else:
            trace.resume(previous)
        self._step = None
        self.nr_steps += 1
        if self.timeline is not None:
            self.timeline.append(record, record.cost)

    def apply(self, op):
        """Run a logged :class:`Op` again (the timeline's replay). Returns ``(result,
        error)``: the exception is caught and given as text, as in :class:`StepRecord`."""
        target = self if op.target == 0 else self.task(op.target)
        try:
            return getattr(target, op.call)(*op.args, **op.kwargs), None
        except Exception as exc:  # noqa: BLE001 - replayed as it happened the first time
            return None, trace._error_text(exc)

    def task(self, pid):
        """The live process (or thread) with this id."""
        for proc in self.processes:
            if proc.pid == pid:
                return proc
        for proc in self.processes:
            for thread in proc.threads:
                if thread.tid == pid:
                    return thread
        raise ProcessLookupError(f"no process {pid} is running")

    # -- CPUs ----------------------------------------------------------------------------------
    @step
    def switch_to(self, cpu, task):
        """Schedule ``task`` (a process, a thread or its id) on CPU ``cpu``; ``None`` makes
        the CPU idle, which leaves the old address space loaded in lazy-TLB mode. A task
        running on another CPU moves here (that CPU goes idle). See :mod:`.tlb`."""
        cpu = self._check_cpu(cpu)
        if task is not None:
            task = getattr(task, "tid", task)
            if not isinstance(task, int) or isinstance(task, bool):
                raise TypeError(f"task must be a Process, a Thread, a tid or None, not "
                                f"{type(task).__name__}")
            task = self.task(task)
        self.this_cpu = cpu
        target = self.cpus[cpu]
        if task is not None:
            if target.current is task:
                return cpu
            other = tlb_mod.task_running_on(task)
            if other is not None:
                tlb_mod.context_switch(other, None)
        elif target.current is None:
            return cpu
        tlb_mod.context_switch(target, task)
        return cpu

    def _check_cpu(self, cpu):
        _check_int(cpu, "cpu")
        if not 0 <= cpu < len(self.cpus):
            raise ValueError(f"cpu must be between 0 and {len(self.cpus) - 1}, got {cpu}")
        return cpu

    @step
    def inject_skip_flush(self, cause=None, count=1):
        """Fault injection: skip the next ``count`` TLB flushes made for ``cause`` (one of
        :data:`~vmwidgets.core.tlb.CAUSES`; ``None``: any), as if the kernel forgot them.
        The page tables change, the TLBs keep their old entries: a thread on another CPU
        can then reach freed or reused memory, and ``validate`` reports the stale entry."""
        if cause is not None and cause not in tlb_mod.CAUSES:
            raise ValueError(f"cause must be None or one of {', '.join(tlb_mod.CAUSES)}, "
                             f"got {cause!r}")
        _check_int(count, "count")
        if count < 1:
            raise ValueError(f"count must be positive, got {count}")
        self.tlb_inject = [cause, count]
        return count

    @step
    def advance_time(self, ms):
        """Let ``ms`` milliseconds pass (jiffies advance at HZ = 250). Time matters to the
        TLB code only: 6.18 trims a CPU that left an address space from its mm_cpumask at
        most once a second, by sending it the next flush IPI."""
        _check_int(ms, "ms")
        if ms < 0:
            raise ValueError("ms must not be negative")
        self.jiffies += ms * tlb_mod.HZ // 1000
        return self.jiffies

    def step_record(self, index):
        """The :class:`StepRecord` of step ``index``: its op, result, events and call tree."""
        if self.timeline is None:
            raise RuntimeError("this machine keeps no history (Machine(history=False))")
        return self.timeline.record(index)

    @property
    def last_step(self):
        """The record of the most recent step, or ``None`` before the first."""
        return self.step_record(self.nr_steps - 1) if self.nr_steps else None

    @step
    def set_sysctl(self, name, value):
        """``sysctl -w name=value`` (the same as ``m.sysctl[name] = value``)."""
        Sysctl.check(name, value)
        dict.__setitem__(self.sysctl, name, value)
        return value

    def __getstate__(self):
        state = self.__dict__.copy()
        state["tlb_log"] = deque(maxlen=self.tlb_log.maxlen)
        state["timeline"] = None
        state["events"] = deque(maxlen=self.events.maxlen)
        state["_step"] = None
        return state

    def alloc_page(self, kind):
        """A frame for the kernel. When RAM is full: direct reclaim, then the OOM killer
        (mm/page_alloc.c: __alloc_pages_slowpath). If the OOM killer picks the process
        whose fault is being served, that process dies with SIGKILL (ProcessKilled)."""
        try:
            page = self.phys.alloc_page(kind)
        except OutOfMemory:
            page = swap_mod.alloc_pages_slowpath(self, kind)
        if kind in ("anon", "file"):
            swap_mod.lru_add(self, page)
        return page

    @step
    def reclaim(self, nr_pages):
        """Free up to ``nr_pages`` frames as kswapd would (LRU order, rmap walk,
        try_to_unmap, swap-out). Returns the number of frames freed."""
        _check_int(nr_pages, "nr_pages")
        self.this_cpu = 0           # Simplification: reclaim runs on CPU 0 (kswapd0)
        freed = swap_mod.reclaim(self, nr_pages)
        self._add_event(Event(0, 0, "reclaim", (nr_pages,), freed, 0,
                              [f"{freed} page(s) reclaimed"]))
        return freed

    def next_shmem_ino(self):
        self._last_shmem_ino += 1
        return self._last_shmem_ino

    def next_file_serial(self):
        self._last_file_serial += 1
        return self._last_file_serial

    def next_pid(self):
        self._last_pid += 1
        return self._last_pid

    def new_id(self, kind):
        """A small id, counted per machine and per kind, so runs replay identically."""
        self._ids[kind] = self._ids.get(kind, 0) + 1
        return self._ids[kind]

    # -- processes -----------------------------------------------------------------------
    @step
    def spawn(self, root=True):
        """A process as after exec of a small PIE program: text/data, [heap], [vvar],
        [vvar_vclock], [vdso] just below ``mmap_base`` and [stack] at the top (no ASLR,
        as with ``setarch -R``)."""
        proc = Process(self, self.next_pid(), root)
        _exec_layout(proc)
        self.processes.append(proc)
        tlb_mod.place_task(proc)
        self._record(proc, "spawn", (), proc.pid, ["exec-time layout"])
        return proc

    @step
    def create_file(self, path, data=b""):
        """Create (or replace) a file in the machine's small in-memory filesystem."""
        if not isinstance(path, str) or not path.startswith("/"):
            raise ValueError(f"path must be an absolute path string, got {path!r}")
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError(f"data must be bytes, not {type(data).__name__}")
        if path in self.files and self.files[path].mapping.i_mmap:
            raise ValueError(f"{path} is mapped by a process; it cannot be replaced")
        self.files[path] = File(path, bytes(data), ino=self.new_id("ino") + 1000)
        return self.files[path]

    def read_file(self, path):
        """The current contents of a file, including writes made through shared mappings."""
        try:
            return self.files[path].contents()
        except KeyError:
            raise FileNotFoundError(2, f"No such file: {path}") from None

    def kpagecount(self, pfn):
        """/proc/kpagecount for one frame."""
        from ..procfs import kpagecount
        return kpagecount(self, self._check_pfn(pfn))

    def kpageflags(self, pfn):
        """/proc/kpageflags for one frame (KPF_* bits)."""
        from ..procfs import kpageflags
        return kpageflags(self, self._check_pfn(pfn))

    def _check_pfn(self, pfn):
        _check_int(pfn, "pfn")
        if not 0 <= pfn < self.phys.nr_pages:
            raise ValueError(f"pfn {pfn:#x} is outside RAM (0..{self.phys.nr_pages - 1:#x})")
        return pfn

    def committed_pages(self):
        """Pages charged to VM_ACCOUNT VMAs of all processes (Committed_AS)."""
        return sum(v.pages() for p in self.processes for v in p.mm.mm_mt
                   if v.vm_flags & VM_ACCOUNT)

    def _record(self, proc, call, args, result, outcome, errno=0):
        return self._add_event(Event(0, proc.pid, call, args, result, errno, list(outcome)))

    def _add_event(self, event):
        event.seq = self._nevents
        self._nevents += 1
        self.events.append(event)
        if self._step is not None:
            self._step.events.append(event)
        return event

    def dump(self):
        """A readable picture of the whole state (for errors and bug reports)."""
        out = [f"Machine: {self.phys.nr_pages} frames, {self.phys.nr_free} free"]
        for proc in self.processes:
            out.append(f"pid {proc.pid}:")
            for vma in proc.mm.mm_mt:
                av = vma.anon_vma.id if vma.anon_vma is not None else "-"
                chain = [avc.anon_vma.id for avc in vma.anon_vma_chain]
                out.append(f"  {vma.vm_start:#014x}-{vma.vm_end:#014x} {vma.perms()} "
                           f"pgoff={vma.vm_pgoff:#x} flags={vma.vm_flags:#x} anon_vma={av} "
                           f"chain={chain} id={vma.id}")
        for av in self.anon_vmas.values():
            out.append(f"anon_vma {av.id}: root={av.root.id} parent={av.parent.id} "
                       f"children={av.num_children} active={av.num_active_vmas} "
                       f"avcs={[avc.vma.id for avc in av.rb_root]}")
        return "\n".join(out)

    def __repr__(self):
        return f"Machine(ram={self.phys.nr_pages << PAGE_SHIFT}, processes={len(self.processes)})"


def _error_reason(exc):
    """A failed step's explanation: a SyscallError's ``reason``, a signal's message (which
    names SEGV_MAPERR / SEGV_ACCERR), else the exception's text."""
    if isinstance(exc, OSError):
        return getattr(exc, "reason", None) or exc.strerror or str(exc)
    return str(exc)


def _check_int(value, name):
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")


def _plain(arg):
    """A step's argument as the timeline logs it: bytes for buffers, a task's id for a
    task (so that a replay finds the task of the replaying machine)."""
    if isinstance(arg, (bytearray, memoryview)):
        return bytes(arg)
    if isinstance(arg, (Process, Thread)):
        return arg.tid
    return arg


def _u64(value, name):
    """The syscall ABI's unsigned long: negative ints wrap as they would in C."""
    _check_int(value, name)
    return value & ULONG_MAX


class Process:
    """A process: its ``mm`` and the syscalls that change it."""

    def __init__(self, machine, pid, root=True):
        self.machine = machine
        self.pid = pid
        self.root = root
        self.mm = MmStruct(machine)
        self.mm.owner = self
        self.mm.pgd = pgtable.pgd_alloc(machine)
        self.mm.rss = {"anon": 0, "file": 0, "swap": 0}
        self.kill_reason = None
        self.files = {}             # the fd table: fd -> OpenFile (struct file)
        self.alive = True
        #: The other threads (the process itself is the main thread); see clone_thread.
        self.threads = []
        self.cpu = None             # the CPU this (main) thread runs on (see .tlb)
        self._acting = None         # the Thread on whose behalf a call runs, if not main
        tlb_mod.init_new_context(self.mm)

    @property
    def tid(self):
        """The main thread's id, which is the pid."""
        return self.pid

    @property
    def process(self):
        return self

    def _task(self):
        return self._acting if self._acting is not None else self

    def _syscall(self, call, args, fn):
        self._check_alive()
        self.machine.current = self
        tlb_mod.task_enter(self._task(), call)
        try:
            result, outcome = fn()
        except OSError as exc:
            self.machine._record(self, call, args, None, getattr(exc, "outcomes", [exc.strerror]),
                                 exc.errno)
            raise
        except OutOfMemory as exc:
            raise OSError(12, f"Cannot allocate memory: {exc}") from None
        self.machine._record(self, call, args, result,
                             outcome if isinstance(outcome, list) else [outcome])
        return result

    # -- syscalls ---------------------------------------------------------------------------
    @step
    def mmap(self, addr, length, prot, flags, fd=-1, offset=0):
        """mmap(2). Returns the address of the new mapping."""
        args = (_u64(addr, "addr"), _u64(length, "length"), _u64(prot, "prot"),
                _u64(flags, "flags"), _fd(fd), _u64(offset, "offset"))
        return self._syscall("mmap", args, lambda: mmap_mod.sys_mmap(self, *args))

    @step
    def munmap(self, addr, length):
        """munmap(2). Returns 0."""
        args = (_u64(addr, "addr"), _u64(length, "length"))
        return self._syscall("munmap", args, lambda: (
            mmap_mod.vm_munmap(self.mm, *args), f"unmapped {args[0]:#x}+{args[1]:#x}"))

    @step
    def mprotect(self, addr, length, prot):
        """mprotect(2). Returns 0."""
        args = (_u64(addr, "addr"), _u64(length, "length"), _u64(prot, "prot"))
        return self._syscall("mprotect", args, lambda: (
            0, mprotect_mod.do_mprotect_pkey(self, *args)))

    @step
    def madvise(self, addr, length, advice):
        """madvise(2). Returns 0."""
        args = (_u64(addr, "addr"), _u64(length, "length"), _u64(advice, "advice"))
        return self._syscall("madvise", args, lambda: (
            0, madvise_mod.do_madvise(self, *args)))

    @step
    def mremap(self, old_addr, old_size, new_size, flags=0, new_addr=0):
        """mremap(2). Returns the (possibly new) address."""
        args = (_u64(old_addr, "old_addr"), _u64(old_size, "old_size"),
                _u64(new_size, "new_size"), _u64(flags, "flags"), _u64(new_addr, "new_addr"))
        return self._syscall("mremap", args, lambda: mremap_mod.do_mremap(self, *args))

    @step
    def brk(self, addr):
        """brk(2) as the kernel implements it: returns the new break, or the unchanged one
        when the request is refused (never an errno; glibc's sbrk() turns that into ENOMEM)."""
        args = (_u64(addr, "addr"),)
        return self._syscall("brk", args, lambda: mmap_mod.sys_brk(self, *args))

    # -- memory accesses ------------------------------------------------------------------------
    @step
    def write(self, addr, data):
        """Store ``data`` at ``addr`` as user code would: page-table walk, faults, COW."""
        _check_int(addr, "addr")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be bytes, not {type(data).__name__}")
        data = bytes(data)
        self._access(addr, len(data), True, lambda page, off, lo, hi: page.write(off, data[lo:hi]))
        self.machine._record(self, "write", (addr, len(data)), None, [f"{len(data)} byte(s)"])

    @step
    def read(self, addr, size):
        """Load ``size`` bytes from ``addr`` (a read fault maps the zero page)."""
        _check_int(addr, "addr")
        _check_int(size, "size")
        if size < 0:
            raise ValueError("size must not be negative")
        out = bytearray()
        self._access(addr, size, False, lambda page, off, lo, hi: out.extend(page.read(off, hi - lo)))
        self.machine._record(self, "read", (addr, size), None, [f"{size} byte(s)"])
        return bytes(out)

    @step
    def touch(self, addr, write=False):
        """Access one byte: a read, or a read-modify-write that stores the byte back
        unchanged (like an x86 ``lock or byte [addr], 0``: it faults as a write, before
        anything is read)."""
        _check_int(addr, "addr")
        if write:
            data = []
            self._access(addr, 1, True, lambda page, off, lo, hi: data.append(page.read(off, 1)))
            self._access(addr, 1, True, lambda page, off, lo, hi: page.write(off, data[0]))
            self.machine._record(self, "touch", (addr, True), None, ["read-modify-write of 1 byte"])
        else:
            self.read(addr, 1)

    def _access(self, addr, size, write, fn):
        self._check_alive()
        self.machine.current = self
        tlb_mod.task_enter(self._task())
        machine = self.machine
        addr &= ULONG_MAX           # a pointer: negative numbers wrap as in C
        pages = range(addr & PAGE_MASK, addr + size, PAGE_SIZE) if size else []
        # Simplification: an access refused on any of its pages changes nothing (the CPU
        # would have faulted the earlier pages in first); the call tree shows the refusing
        # fault alone.
        for page_addr in pages:   # refuse before changing anything
            if page_addr >= TASK_SIZE:
                # arch/x86/mm/fault.c: above TASK_SIZE_MAX is kernel space.
                raise SegmentationFault(max(page_addr, addr), SEGV_MAPERR,
                                        "write" if write else "read",
                                        "the address is outside user space")
            if tlb_mod.tlb_serves(machine, self.mm, page_addr, write):
                continue          # the TLB translates it, whatever the page table says
            pte = pgtable.get_pte(self.mm, page_addr)
            if not memory._hw_allows(pte, write):
                try:
                    memory.check_user_access(self.mm, max(page_addr, addr), write)
                except (SegmentationFault, BusError):
                    if trace.recording():     # the same refusal, as the kernel's path
                        memory.exc_page_fault(self.mm, max(page_addr, addr), write)
                    raise
        for page_addr in pages:
            try:
                page = tlb_mod.mmu_access(machine, self.mm, page_addr, write)
            except OutOfMemory as exc:
                raise OSError(12, f"out of memory while faulting {page_addr:#x}: {exc}") from None
            lo = max(addr, page_addr)
            hi = min(addr + size, page_addr + PAGE_SIZE)
            fn(page, lo - page_addr, lo - addr, hi - addr)

    # -- /proc ---------------------------------------------------------------------------------
    def proc_maps(self):
        """/proc/PID/maps text, formatted exactly as the kernel does."""
        from ..procfs import proc_maps
        return proc_maps(self.mm)

    def pagemap(self, addr, show_pfn=True):
        """/proc/PID/pagemap entry for the page holding ``addr``."""
        from ..procfs import pagemap_entry
        _check_int(addr, "addr")
        return pagemap_entry(self.mm, addr, show_pfn)

    # -- files ------------------------------------------------------------------------------------
    @step
    def open(self, path, flags=0):
        """open(2) on the machine's filesystem: ``O_RDONLY``, ``O_WRONLY`` or ``O_RDWR``
        (``os.O_*`` values; ``O_CREAT`` creates an empty file). Returns the fd."""
        if not isinstance(path, str):
            raise TypeError(f"path must be a str, not {type(path).__name__}")
        _check_int(flags, "flags")
        file = self.machine.files.get(path)
        if file is None:
            if not flags & _O_CREAT:
                raise syscall_error(ENOENT, "open", f"{path} does not exist")
            file = self.machine.create_file(path)
        # A new open file description (struct file) each time: VMAs mapped through two
        # open(2)s of one file never merge (is_mergeable_vma() compares vm_file).
        fd = self._alloc_fd(OpenFile(file, flags, {0: "r", 1: "w", 2: "rw"}.get(flags & 3, "r"),
                                     self.machine.next_file_serial()))
        self.machine._record(self, "open", (path, flags), fd, [f"fd {fd} -> {path}"])
        return fd

    def _alloc_fd(self, open_file):
        """fs/file.c: alloc_fd() + fd_install(): the lowest free fd (from 3: 0-2 are the
        standard streams) now refers to ``open_file``."""
        fd = 3
        while fd in self.files:
            fd += 1
        self.files[fd] = open_file
        return fd

    @step
    def dup(self, fd):
        """dup(2): a new fd for the same open file description (mappings made through
        either merge, as through one fd)."""
        _check_int(fd, "fd")
        if fd not in self.files:
            raise syscall_error(EBADF, "dup", f"fd {fd} is not open")
        new = self._alloc_fd(self.files[fd])
        self.machine._record(self, "dup", (fd,), new, [f"fd {new} -> {self.files[fd].path}"])
        return new

    @step
    def close(self, fd):
        """close(2). A mapping made from the fd stays valid."""
        _check_int(fd, "fd")
        if fd not in self.files:
            raise syscall_error(EBADF, "close", f"fd {fd} is not open")
        del self.files[fd]
        self.machine._record(self, "close", (fd,), 0, [])
        return 0

    # -- fork and exit ------------------------------------------------------------------------------
    @step
    def fork(self):
        """fork(2): a child process with a copy-on-write copy of this address space."""
        self._check_alive()
        from . import fork as fork_mod
        self.machine.current = self
        tlb_mod.task_enter(self._task(), "fork")

        def new_task():
            child = Process(self.machine, self.machine.next_pid(), self.root)
            child.files = dict(self.files)     # dup_fd(): the same open file descriptions
            return child

        try:
            # kernel/fork.c: a failed dup_mmap() tears the half-built mm down again.
            child, outcome = fork_mod.kernel_clone(self, new_task)
        except (OutOfMemory, ProcessKilled) as exc:
            if isinstance(exc, ProcessKilled):
                raise
            raise syscall_error(ENOMEM, "fork", "out of memory while copying the address "
                                "space") from None
        self.machine.processes.append(child)
        tlb_mod.place_task(child)
        self.machine._record(self, "fork", (), child.pid, outcome)
        return child

    @step
    def clone_thread(self, cpu=None):
        """clone(CLONE_VM | CLONE_THREAD ...): a new :class:`Thread` sharing this address
        space, on CPU ``cpu`` (default: the least loaded). It runs at once if that CPU is
        idle, else as soon as it is used (or scheduled with ``Machine.switch_to``)."""
        self._check_alive()
        if cpu is not None:
            cpu = self.machine._check_cpu(cpu)
        self.machine.current = self
        tlb_mod.task_enter(self._task(), "clone")
        thread = Thread(self, self.machine.next_pid())
        self.threads.append(thread)
        tlb_mod.place_task(thread, cpu)
        self.machine._record(self, "clone_thread", (cpu,), thread.tid,
                             [f"thread {thread.tid} on CPU {thread.cpu}"])
        return thread

    @step
    def exit(self):
        """exit(2): unmap everything; frames go back when no other process uses them."""
        self._check_alive()
        tlb_mod.task_enter(self._task(), "exit_group")
        self._teardown("exit", "exited")

    @step
    def kill(self, reason):
        """SIGKILL (the OOM killer uses this): the process exits at once."""
        self._check_alive()
        self.kill_reason = reason
        self._teardown("kill", reason)

    def _teardown(self, call, why):
        from . import fork as fork_mod
        outcome = fork_mod.do_exit(self)
        self.machine.processes.remove(self)
        self.alive = False
        for thread in self.threads:
            thread.alive = False
        self.threads = []
        self.files.clear()
        self.machine._record(self, call, (), 0, [why, outcome])

    def _check_alive(self):
        if not self.alive:
            raise ProcessLookupError(f"process {self.pid} has exited"
                                     + (f" ({self.kill_reason})" if self.kill_reason else ""))

    def __repr__(self):
        state = "" if self.alive else ", exited"
        return f"Process(pid={self.pid}, vmas={self.mm.map_count}{state})"

    def __trace__(self):
        return f"pid {self.pid}"


class Thread:
    """Another thread of a :class:`Process`: the same address space (``mm``), its own
    ``tid`` (from ``machine.next_pid()``) and its own CPU. It has the process's syscall and
    access methods; each runs on this thread's CPU (switching it in there if needed), so
    its accesses go through that CPU's TLB. ``exit()`` ends this thread only.

    Simplification: the threads of a process share its files; ``pid`` is the process id
    (the thread group), ``tid`` the thread's own."""

    def __init__(self, process, tid):
        self.process = process
        self.machine = process.machine
        self.tid = tid
        self.cpu = None
        self.alive = True

    @property
    def pid(self):
        return self.process.pid

    @property
    def mm(self):
        return self.process.mm

    def _do(self, call, *args, **kwargs):
        self._check_alive()
        proc = self.process
        saved, proc._acting = proc._acting, self
        try:
            return getattr(proc, call)(*args, **kwargs)
        finally:
            proc._acting = saved

    @step
    def mmap(self, addr, length, prot, flags, fd=-1, offset=0):
        """mmap(2) from this thread."""
        return self._do("mmap", addr, length, prot, flags, fd, offset)

    @step
    def munmap(self, addr, length):
        """munmap(2) from this thread."""
        return self._do("munmap", addr, length)

    @step
    def mprotect(self, addr, length, prot):
        """mprotect(2) from this thread."""
        return self._do("mprotect", addr, length, prot)

    @step
    def madvise(self, addr, length, advice):
        """madvise(2) from this thread."""
        return self._do("madvise", addr, length, advice)

    @step
    def mremap(self, old_addr, old_size, new_size, flags=0, new_addr=0):
        """mremap(2) from this thread."""
        return self._do("mremap", old_addr, old_size, new_size, flags, new_addr)

    @step
    def brk(self, addr):
        """brk(2) from this thread."""
        return self._do("brk", addr)

    @step
    def write(self, addr, data):
        """Store ``data`` at ``addr`` from this thread's CPU."""
        return self._do("write", addr, data)

    @step
    def read(self, addr, size):
        """Load ``size`` bytes at ``addr`` from this thread's CPU."""
        return self._do("read", addr, size)

    @step
    def touch(self, addr, write=False):
        """Access one byte from this thread's CPU (see :meth:`Process.touch`)."""
        return self._do("touch", addr, write)

    @step
    def open(self, path, flags=0):
        """open(2) from this thread (the process's file table)."""
        return self._do("open", path, flags)

    @step
    def close(self, fd):
        """close(2) from this thread."""
        return self._do("close", fd)

    @step
    def dup(self, fd):
        """dup(2) from this thread."""
        return self._do("dup", fd)

    @step
    def fork(self):
        """fork(2) from this thread: a new process with a copy of the address space."""
        return self._do("fork")

    @step
    def clone_thread(self, cpu=None):
        """Another thread of the same process (see :meth:`Process.clone_thread`)."""
        return self._do("clone_thread", cpu)

    @step
    def exit(self):
        """exit(2) of this thread alone: its CPU goes idle (lazy TLB); the address space
        stays with the other threads."""
        self._check_alive()
        tlb_mod.task_enter(self, "exit")
        cpu = tlb_mod.task_running_on(self)
        if cpu is not None:
            tlb_mod.context_switch(cpu, None)
        self.process.threads.remove(self)
        self.alive = False
        self.machine._record(self.process, "thread exit", (self.tid,), 0,
                             [f"thread {self.tid} exited"])

    def proc_maps(self):
        """/proc/PID/maps of the process."""
        return self.process.proc_maps()

    def pagemap(self, addr, show_pfn=True):
        """/proc/PID/pagemap entry of the process for ``addr``."""
        return self.process.pagemap(addr, show_pfn)

    def _check_alive(self):
        if not self.alive:
            raise ProcessLookupError(f"thread {self.tid} has exited")
        self.process._check_alive()

    def __repr__(self):
        state = "" if self.alive else ", exited"
        return f"Thread(tid={self.tid}, pid={self.pid}, cpu={self.cpu}{state})"

    def __trace__(self):
        return f"tid {self.tid}"


def _fd(fd):
    _check_int(fd, "fd")
    return fd


# -- the exec-time layout ---------------------------------------------------------------------

def _demo_binary():
    """A 4-page stand-in for an ELF executable: header, code, read-only data, data."""
    pages = [b"\x7fELF\x02\x01\x01" + bytes(9) + b"demo: a static PIE for vmwidgets",
             bytes.fromhex("f30f1efa554889e5") + b"\x90" * 24 + b"\xc3",
             b"Hello from .rodata\n",
             b"counter=0\n"]
    return b"".join(p.ljust(PAGE_SIZE, b"\0") for p in pages)


def _exec_layout(proc):
    """fs/binfmt_elf.c: load_elf_binary() + arch_setup_additional_pages() + setup_arg_pages(),
    without ASLR (as ``setarch -R``)."""
    mm = proc.mm
    machine = proc.machine
    mm.task_size = TASK_SIZE
    gap = min(max(RLIMIT_STACK + STACK_GUARD_GAP, MIN_GAP), TASK_SIZE // 6 * 5)
    mm.mmap_base = (STACK_TOP - gap) & PAGE_MASK
    # The exec'd file, opened once (do_open_execat()): all its segments share the struct file.
    binary = OpenFile(machine.binary, 0, "r", machine.next_file_serial())
    base = ELF_ET_DYN_BASE
    may = VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC
    segments = [(VM_READ, 0), (VM_READ | VM_EXEC, 1), (VM_READ, 2), (VM_READ | VM_WRITE, 3)]
    for flags, index in segments:
        start = base + index * PAGE_SIZE
        vm_flags = flags | may | (VM_ACCOUNT if flags & VM_WRITE else 0)
        vma = VmAreaStruct(mm, start, start + PAGE_SIZE, vm_flags, index, binary)
        mm.insert(vma)
        binary.mapping.i_mmap.add(vma)
    mm.start_code, mm.end_code = base + PAGE_SIZE, base + 2 * PAGE_SIZE
    mm.start_data, mm.end_data = base + 3 * PAGE_SIZE, base + 4 * PAGE_SIZE
    mm.start_brk = mm.brk = base + 4 * PAGE_SIZE
    # The vDSO block is placed like any mapping: top-down, just below mmap_base.
    specials = [("[vvar]", 4, VM_READ | VM_MAYREAD | VM_IO | VM_PFNMAP | VM_DONTDUMP),
                ("[vvar_vclock]", 2, VM_READ | VM_MAYREAD | VM_IO | VM_PFNMAP | VM_DONTDUMP),
                ("[vdso]", 2, VM_READ | VM_EXEC | may)]
    start = mm.mmap_base - sum(n for _, n, _ in specials) * PAGE_SIZE
    for name, npages, flags in specials:
        vma = VmAreaStruct(mm, start, start + npages * PAGE_SIZE, flags | VM_DONTEXPAND,
                           vm_ops=VmOps(name))
        mm.insert(vma)
        start += npages * PAGE_SIZE
    stack = VmAreaStruct(mm, STACK_TOP - INITIAL_STACK_BYTES, STACK_TOP, VM_STACK_FLAGS,
                         (STACK_TOP - INITIAL_STACK_BYTES) >> PAGE_SHIFT)
    mm.insert(stack)
    mm.start_stack = STACK_TOP - 0x200
    # exec copied argv and envp to the top of the stack.
    page, _ = memory.access_page(mm, STACK_TOP - PAGE_SIZE, True)
    page.write(PAGE_SIZE - 0x100, b"/usr/bin/demo\0PATH=/usr/bin\0")
    mmap_mod.sys_brk(proc, mm.start_brk + INITIAL_HEAP_BYTES)
