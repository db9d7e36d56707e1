"""CPUs, their TLBs and TLB shootdowns (arch/x86/mm/tlb.c, arch/x86/include/asm/tlbflush.h,
mm/mmu_gather.c, include/asm-generic/tlb.h, arch/x86/include/asm/tlb.h; Linux 6.18, x86-64
with PCID and without PTI, as on the machine the live tests run on).

Every CPU has a TLB: a small cache of translations, one entry per 4 KiB page, tagged with a
PCID (the ASID slot of the address space + 1) or global (kernel pages). Every user access
goes through the TLB of the CPU its task runs on (:func:`mmu_access`): a hit takes the
frame from the entry, *not* from the page table, so an entry that should have been flushed
is observable. A miss walks the page table and fills an entry.

When the kernel changes a PTE that a TLB may hold, it flushes: the generation
``mm->context.tlb_gen`` goes up (``inc_mm_tlb_gen``), the CPU itself flushes
(TLB_LOCAL_MM_SHOOTDOWN) and CPUs running the address space get an IPI
(TLB_REMOTE_SEND_IPI, then TLB_REMOTE_SHOOTDOWN on each). A CPU in lazy-TLB mode (idle, with
the old address space still loaded) gets no IPI unless page tables were freed; it catches
up when it switches back (``switch_mm_irqs_off`` compares its slot's ``tlb_gen``).
Each flush is a :class:`TlbFlush` record, as the ``tlb_flush`` tracepoint prints it, kept
in ``machine.tlb_log`` and in the step's record (``m.step_record(i).tlb_flushes``).

>>> import vmwidgets as vw
>>> m = vw.Machine(cpus=2)
>>> p = m.spawn()                        # runs on CPU 0
>>> a = p.mmap(0, 4 * 4096, vw.PROT_READ | vw.PROT_WRITE, vw.MAP_PRIVATE | vw.MAP_ANONYMOUS)
>>> t = p.clone_thread(cpu=1)            # a second thread of the process, on CPU 1
>>> t.write(a, b"hi")                    # CPU 1 caches the translation
>>> p.munmap(a, 4 * 4096)
0
>>> [str(f) for f in m.last_step.tlb_flushes]         # doctest: +NORMALIZE_WHITESPACE
['CPU 0: pages:1 reason:remote IPI send (4) [munmap, pid 1]',
 'CPU 0: pages:1 reason:local MM shootdown (3) [munmap, pid 1]',
 'CPU 1: pages:1 reason:remote shootdown (1) [munmap, pid 1]']
>>> vw.validate(m)

Simplifications: one fully associative TLB per CPU (no separate iTLB/dTLB or STLB, no
huge pages, no paging-structure caches); no INVLPGB / global ASIDs (the live CPU has
none); ``tlb_flush`` is recorded as the model runs, so remote shootdowns appear right
after the IPI is sent (the kernel's are asynchronous). Time passes only through
``Machine.advance_time`` (jiffies, HZ = 250), which is what trims ``mm_cpumask``.
"""

import random
from collections import Counter, OrderedDict
from dataclasses import dataclass

from . import pgtable
from .flags import (_PAGE_ACCESSED, _PAGE_DIRTY, _PAGE_GLOBAL, _PAGE_NX, _PAGE_PRESENT,
                    _PAGE_RW, _PAGE_SAVED_DIRTY, _PAGE_SPECIAL, _PAGE_USER, PAGE_SHIFT,
                    PAGE_SIZE, PGDIR_SHIFT, PMD_SHIFT, PUD_SHIFT)
from .. import trace
from ..trace import note, traced

#: CONFIG_HZ of the live kernel (jiffies per second).
HZ = 250
#: arch/x86/include/asm/tlbflush.h: TLB_NR_DYN_ASIDS, the ASID slots of each CPU.
TLB_NR_DYN_ASIDS = 6
#: arch/x86/mm/tlb.c: tlb_single_page_flush_ceiling: more pages than this -> full flush.
TLB_SINGLE_PAGE_FLUSH_CEILING = 33
#: include/linux/mm_types.h: TLB_FLUSH_ALL (the tracepoint prints it as pages:-1).
TLB_FLUSH_ALL = -1
#: P4D_SHIFT with 4-level paging (the p4d level is folded into the pgd).
P4D_SHIFT = PGDIR_SHIFT

#: include/linux/mm_types.h: enum tlb_flush_reason, and the tracepoint's text for each.
REASONS = ("TLB_FLUSH_ON_TASK_SWITCH", "TLB_REMOTE_SHOOTDOWN", "TLB_LOCAL_SHOOTDOWN",
           "TLB_LOCAL_MM_SHOOTDOWN", "TLB_REMOTE_SEND_IPI", "TLB_REMOTE_WRONG_CPU")
REASON_TEXT = {"TLB_FLUSH_ON_TASK_SWITCH": "flush on task switch",
               "TLB_REMOTE_SHOOTDOWN": "remote shootdown",
               "TLB_LOCAL_SHOOTDOWN": "local shootdown",
               "TLB_LOCAL_MM_SHOOTDOWN": "local MM shootdown",
               "TLB_REMOTE_SEND_IPI": "remote IPI send",
               "TLB_REMOTE_WRONG_CPU": "remote wrong CPU"}
#: What made the kernel flush (the model's label for a TlbFlush; not a kernel enum).
CAUSES = ("munmap", "mmap", "brk", "mprotect", "madvise", "mremap", "COW", "fork", "exit",
          "context switch", "reclaim")
POLICIES = ("lru", "fifo", "random")

#: A kernel text page every syscall runs through (entry_SYSCALL_64): a global TLB entry.
#: Simplification: one reserved frame stands for the kernel's entry text.
ENTRY_TEXT = 0xffffffff81e00000
ENTRY_TEXT_PFN = 3
GLOBAL = -1                  # the "PCID" key of global entries


# -- configuration ----------------------------------------------------------------------------

def check_config(cpus, tlb_entries, tlb_policy, pcid, seed):
    """Validate ``Machine(cpus=..., tlb_entries=..., tlb_policy=..., pcid=..., seed=...)``."""
    for name, value in (("cpus", cpus), ("tlb_entries", tlb_entries), ("seed", seed)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not 1 <= cpus <= 64:
        raise ValueError(f"cpus must be between 1 and 64, got {cpus}")
    if not 1 <= tlb_entries <= 65536:
        raise ValueError(f"tlb_entries must be between 1 and 65536, got {tlb_entries}")
    if tlb_policy not in POLICIES:
        raise ValueError(f"tlb_policy must be one of {', '.join(map(repr, POLICIES))}, "
                         f"got {tlb_policy!r}")
    if not isinstance(pcid, bool):
        raise TypeError(f"pcid must be True or False, not {type(pcid).__name__}")


class MmContext:
    """``mm_context_t`` (arch/x86/include/asm/mmu.h): the TLB side of an address space."""

    __slots__ = ("ctx_id", "tlb_gen", "next_trim_cpumask")

    def __init__(self, ctx_id, jiffies=0):
        self.ctx_id = ctx_id
        self.tlb_gen = 0
        self.next_trim_cpumask = jiffies + HZ

    def __repr__(self):
        return f"MmContext(ctx_id={self.ctx_id}, tlb_gen={self.tlb_gen})"


class InitMm:
    """``init_mm``: the kernel's own address space (no user mappings), loaded by CPUs that
    left a user address space (``leave_mm``). Its ctx_id is 1 (``last_mm_ctx_id`` starts there)."""

    def __init__(self):
        self.context = MmContext(1)
        self.cpumask = set()
        self.owner = None

    def __repr__(self):
        return "init_mm"

    def __trace__(self):
        return "init_mm"


class TlbEntry:
    """One cached translation: page ``vpn`` -> frame ``pfn``, tagged with ``pcid``
    (:data:`GLOBAL` for a global entry), with the write permission and dirty bit the CPU
    saw when it filled it."""

    __slots__ = ("vpn", "pcid", "pfn", "writable", "dirty")

    def __init__(self, vpn, pcid, pfn, writable, dirty):
        self.vpn = vpn
        self.pcid = pcid
        self.pfn = pfn
        self.writable = writable
        self.dirty = dirty

    @property
    def address(self):
        return self.vpn << PAGE_SHIFT

    def __repr__(self):
        tag = "global" if self.pcid == GLOBAL else f"pcid={self.pcid}"
        return (f"TlbEntry({self.address:#x} -> pfn {self.pfn:#x}, {tag}, "
                f"{'rw' if self.writable else 'ro'}{', dirty' if self.dirty else ''})")


class Tlb:
    """The TLB of one CPU: at most ``size`` entries, replaced ``policy``-wise ("lru",
    "fifo" or "random", drawing from the machine's seeded ``rng``). ``stats`` counts hits,
    misses, permission misses, dirty-bit walks, spurious faults, evictions and flushes.

    Simplification: fully associative, 4 KiB pages only."""

    def __init__(self, size, policy, rng):
        self.size = size
        self.policy = policy
        self.rng = rng
        self.entries = OrderedDict()         # (pcid, vpn) -> TlbEntry, oldest first
        self.stats = Counter()

    @property
    def hits(self):
        return self.stats["hit"]

    @property
    def misses(self):
        return self.stats["miss"]

    def peek(self, pcid, vpn):
        """The entry the CPU would use for ``vpn`` under ``pcid`` (no state change)."""
        entry = self.entries.get((pcid, vpn))
        return entry if entry is not None else self.entries.get((GLOBAL, vpn))

    def lookup(self, pcid, vpn):
        entry = self.peek(pcid, vpn)
        if entry is not None and self.policy == "lru":
            self.entries.move_to_end((entry.pcid, vpn))
        return entry

    def fill(self, entry):
        key = (entry.pcid, entry.vpn)
        if key in self.entries:
            del self.entries[key]
        elif len(self.entries) >= self.size:
            if self.policy == "random":
                victim = self.rng.choice(list(self.entries))
            else:
                victim = next(iter(self.entries))
            del self.entries[victim]
            self.stats["eviction"] += 1
        self.entries[key] = entry

    def drop(self, entry):
        self.entries.pop((entry.pcid, entry.vpn), None)

    def flush_pcid(self, pcid):
        """A CR3 write without NOFLUSH (or INVPCID single-context): every non-global entry
        of ``pcid`` goes. Returns how many."""
        keys = [k for k in self.entries if k[0] == pcid]
        for k in keys:
            del self.entries[k]
        self.stats["flush_all"] += 1
        return len(keys)

    def flush_one(self, pcid, vpn):
        """INVLPG: the entry of ``vpn`` under ``pcid`` and a global one for ``vpn``."""
        self.stats["flush_page"] += 1
        return (self.entries.pop((pcid, vpn), None) is not None) + (
            self.entries.pop((GLOBAL, vpn), None) is not None)

    def __len__(self):
        return len(self.entries)

    def __iter__(self):
        return iter(list(self.entries.values()))

    def __repr__(self):
        return f"Tlb({len(self.entries)}/{self.size} entries, {self.policy})"


class Cpu:
    """One CPU: its TLB, the task it runs (``current``, ``None`` when idle) and its
    ``cpu_tlbstate``: the loaded address space and ASID, lazy-TLB mode, the ASID slots
    (``ctxs[asid] = [ctx_id, tlb_gen]``) and ``next_asid``."""

    def __init__(self, number, machine, tlb_entries, tlb_policy, pcid):
        self.number = number
        self.machine = machine
        self.tlb = Tlb(tlb_entries, tlb_policy, machine.rng)
        self._pcid_on = pcid
        self.current = None
        # arch/x86/mm/tlb.c: initialize_tlbstate_and_flush(): init_mm in ASID 0.
        self.loaded_mm = machine.init_mm
        self.loaded_mm_asid = 0
        self.is_lazy = False
        self.next_asid = 1
        self.ctxs = [[0, 0] for _ in range(TLB_NR_DYN_ASIDS)]
        self.ctxs[0] = [machine.init_mm.context.ctx_id, 0]
        self.last_flush = None

    def pcid(self, asid=None):
        """kern_pcid(): the PCID of ``asid`` (the loaded one by default); 0 without PCID."""
        asid = self.loaded_mm_asid if asid is None else asid
        return asid + 1 if self._pcid_on else 0

    def __repr__(self):
        what = "idle" if self.current is None else f"tid {self.current.tid}"
        lazy = ", lazy" if self.is_lazy else ""
        return f"Cpu({self.number}, {what}, loaded={_mm_name(self.loaded_mm)}{lazy})"


@dataclass
class TlbFlush:
    """One hit of the ``tlb_flush`` tracepoint: ``reason`` (an enum tlb_flush_reason name),
    ``pages`` (-1 = TLB_FLUSH_ALL), the ``cpu`` it ran on, the model's ``cause``, the pid
    owning the address space (0 for none) and the ``step`` it belongs to."""

    step: int
    cpu: int
    reason: str
    pages: int
    cause: str
    pid: int

    @property
    def code(self):
        return REASONS.index(self.reason)

    def tracepoint(self):
        """The text ``tlb_flush`` prints: ``pages:%ld reason:%s (%d)``."""
        return f"pages:{self.pages} reason:{REASON_TEXT[self.reason]} ({self.code})"

    def __str__(self):
        return f"CPU {self.cpu}: {self.tracepoint()} [{self.cause}, pid {self.pid}]"


def setup(machine, cpus, tlb_entries, tlb_policy, pcid, seed):
    """Give ``machine`` its CPUs (called by ``Machine.__init__``)."""
    check_config(cpus, tlb_entries, tlb_policy, pcid, seed)
    machine.seed = seed                # kept so that the machine can be described again
    machine.rng = random.Random(seed)
    machine.pcid = pcid
    machine.jiffies = 0
    machine.init_mm = InitMm()
    machine.cpus = []
    for n in range(cpus):
        machine.cpus.append(Cpu(n, machine, tlb_entries, tlb_policy, pcid))
    machine.this_cpu = 0
    machine.tlb_batch = set()          # arch_tlbflush_unmap_batch.cpumask
    machine.tlb_inject = None          # [cause or None, remaining] of inject_skip_flush
    machine.syscall_name = None


def init_new_context(mm):
    """arch/x86/include/asm/mmu_context.h: init_new_context(): a new ctx_id, tlb_gen 0,
    an empty mm_cpumask; the cpumask may be trimmed a second from now."""
    machine = mm.machine
    mm.context = MmContext(machine.new_id("mm_ctx") + 1, machine.jiffies)
    mm.cpumask = set()
    mm.tlb_gather = None


# -- scheduling -----------------------------------------------------------------------------------

def select_cpu(machine):
    """Where a new task goes: the CPU with the fewest live tasks assigned, the lowest number
    on a tie (a deterministic stand-in for select_task_rq_fair())."""
    load = Counter(t.cpu for t in all_tasks(machine))
    return min(range(len(machine.cpus)), key=lambda c: (load[c], c))


def all_tasks(machine):
    for proc in machine.processes:
        if proc.alive:
            yield proc
            yield from proc.threads


def place_task(task, cpu=None):
    """wake_up_new_task(): put a new task on ``cpu`` (or :func:`select_cpu`); it starts
    running at once if that CPU is idle, else when it is next used or scheduled."""
    machine = task.machine
    task.cpu = select_cpu(machine) if cpu is None else cpu
    if machine.cpus[task.cpu].current is None:
        context_switch(machine.cpus[task.cpu], task)


def task_running_on(task):
    for cpu in task.machine.cpus:
        if cpu.current is task:
            return cpu
    return None


def task_enter(task, syscall=None):
    """The task is about to run an operation: it must be running on its CPU (if it is not,
    the scheduler switches it in there: an implicit context switch). A syscall also runs
    through the kernel's entry text (a global TLB entry). Sets ``machine.this_cpu``."""
    machine = task.machine
    cpu = machine.cpus[task.cpu]
    if cpu.current is not task:
        # The scheduler ran before the operation: not part of the operation's call tree
        # (its tlb_flush records still belong to the step).
        previous = trace.pause()
        try:
            other = task_running_on(task)
            if other is not None:
                context_switch(other, None)
            context_switch(cpu, task)
        finally:
            trace.resume(previous)
    machine.this_cpu = cpu.number
    machine.syscall_name = syscall
    if syscall is not None:
        kernel_text_access(cpu)


def kernel_text_access(cpu):
    """The CPU fetches the syscall entry code: a global TLB entry, kept across CR3 writes."""
    vpn = ENTRY_TEXT >> PAGE_SHIFT
    entry = cpu.tlb.lookup(GLOBAL, vpn)
    if entry is not None:
        cpu.tlb.stats["hit"] += 1
        return
    cpu.tlb.stats["miss"] += 1
    cpu.tlb.fill(TlbEntry(vpn, GLOBAL, ENTRY_TEXT_PFN, False, False))


# kernel/sched/core.c: context_switch() (6.18): a task with an mm -> switch_mm_irqs_off();
# a kernel thread or the idle task -> enter_lazy_tlb(), keeping the old mm loaded.
@traced(hide=("cpu",), result=lambda r: None)
def context_switch(cpu, next_task):
    """Switch ``cpu`` to ``next_task`` (``None``: the idle task)."""
    prev = cpu.current
    cpu.current = next_task
    if next_task is None:
        if trace._active is not None:
            note(f"CPU {cpu.number}: {_who(prev)} -> idle")
        enter_lazy_tlb(cpu)
        return
    if trace._active is not None:
        note(f"CPU {cpu.number}: {_who(prev)} -> tid {next_task.tid}")
    next_task.cpu = cpu.number
    switch_mm_irqs_off(cpu, next_task.mm, next_task)


def _who(task):
    return "idle" if task is None else f"tid {task.tid}"


@traced(hide=("cpu",), result=lambda r: None)
def enter_lazy_tlb(cpu):
    """arch/x86/mm/tlb.c: enter_lazy_tlb(): keep the old mm loaded, but stop taking flush
    IPIs for it (unless page tables are freed); catch up at the next switch_mm."""
    if isinstance(cpu.loaded_mm, InitMm):
        return
    cpu.is_lazy = True
    if trace._active is not None:
        note(f"CPU {cpu.number}: lazy TLB, {_mm_name(cpu.loaded_mm)} stays loaded")


@traced(hide=("cpu", "task", "cause"), result=lambda r: None)
def switch_mm_irqs_off(cpu, next_mm, task=None, cause="context switch"):
    """arch/x86/mm/tlb.c: switch_mm_irqs_off() (6.18): load ``next_mm`` on ``cpu``.

    The same mm again: nothing to do, unless the CPU was lazy and the mm's ``tlb_gen``
    moved on meanwhile (then flush). Another mm: the CPU joins its ``mm_cpumask`` (and stays
    in the old one's: 6.18 trims it lazily, see :func:`flush_tlb_func`), then
    :func:`choose_new_asid` picks a PCID slot, flushing it unless the slot is up to date."""
    machine = cpu.machine
    prev = cpu.loaded_mm
    prev_asid = cpu.loaded_mm_asid
    was_lazy = cpu.is_lazy
    cpu.is_lazy = False
    if prev is next_mm:
        if not was_lazy:
            return
        next_gen = next_mm.context.tlb_gen
        if cpu.ctxs[prev_asid][1] == next_gen:
            return
        asid, need_flush = prev_asid, True        # it went stale while we were lazy
    else:
        if not isinstance(next_mm, InitMm):
            next_mm.cpumask.add(cpu.number)
        next_gen = next_mm.context.tlb_gen
        asid, need_flush = choose_new_asid(cpu, next_mm, next_gen)
    if need_flush and _skip_flush(machine, "context switch", next_mm):
        need_flush = False
        cpu.ctxs[asid] = [next_mm.context.ctx_id, next_gen]
    if need_flush:
        cpu.ctxs[asid] = [next_mm.context.ctx_id, next_gen]
        gone = cpu.tlb.flush_pcid(cpu.pcid(asid))
        if trace._active is not None:
            note(f"CPU {cpu.number}: CR3 <- {_mm_name(next_mm)}, PCID {cpu.pcid(asid)} "
                 f"flushed ({gone} entr{'y' if gone == 1 else 'ies'})")
        _tlb_flush(machine, cpu, "TLB_FLUSH_ON_TASK_SWITCH", TLB_FLUSH_ALL, cause, next_mm)
    else:
        if trace._active is not None:
            note(f"CPU {cpu.number}: CR3 <- {_mm_name(next_mm)}, PCID {cpu.pcid(asid)} "
                 "kept (NOFLUSH)")
        _tlb_flush(machine, cpu, "TLB_FLUSH_ON_TASK_SWITCH", 0, cause, next_mm)
    cpu.loaded_mm = next_mm
    cpu.loaded_mm_asid = asid


@traced(hide=("cpu", "next_mm", "next_gen"), result=lambda r: r[0])
def choose_new_asid(cpu, next_mm, next_gen):
    """arch/x86/mm/tlb.c: choose_new_asid(): the slot already holding ``next_mm``'s ctx_id
    (flush only if its tlb_gen is behind), else the next slot round-robin (flush).
    Returns ``(asid, need_flush)``."""
    if not cpu._pcid_on:
        return 0, True
    ctx_id = next_mm.context.ctx_id
    for asid, (slot_ctx, slot_gen) in enumerate(cpu.ctxs):
        if slot_ctx == ctx_id:
            return asid, slot_gen < next_gen
    asid = cpu.next_asid
    cpu.next_asid += 1
    if asid >= TLB_NR_DYN_ASIDS:
        asid = 0
        cpu.next_asid = 1
    return asid, True


def leave_mm(cpu):
    """arch/x86/mm/tlb.c: leave_mm(): switch a lazy CPU to init_mm."""
    if isinstance(cpu.loaded_mm, InitMm):
        return
    switch_mm_irqs_off(cpu, cpu.machine.init_mm, None)


# -- the flushes ----------------------------------------------------------------------------------

class FlushTlbInfo:
    """``struct flush_tlb_info`` (transient: lives during one flush)."""

    __slots__ = ("mm", "start", "end", "stride_shift", "freed_tables", "new_tlb_gen",
                 "initiating_cpu", "trim_cpumask", "cause")

    def __init__(self, mm, start, end, stride_shift, freed_tables, new_tlb_gen,
                 initiating_cpu, cause):
        # arch/x86/mm/tlb.c: get_flush_tlb_info(): past the ceiling, flush everything.
        if end != TLB_FLUSH_ALL and (end - start) >> stride_shift > TLB_SINGLE_PAGE_FLUSH_CEILING:
            start, end = 0, TLB_FLUSH_ALL
        self.mm = mm
        self.start = start
        self.end = end
        self.stride_shift = stride_shift
        self.freed_tables = freed_tables
        self.new_tlb_gen = new_tlb_gen
        self.initiating_cpu = initiating_cpu
        self.trim_cpumask = False
        self.cause = cause

    def __trace__(self):
        rng = "all" if self.end == TLB_FLUSH_ALL else f"{self.start:#x}-{self.end:#x}"
        return f"info[{rng}]"


def inc_mm_tlb_gen(mm):
    """arch/x86/include/asm/tlbflush.h: inc_mm_tlb_gen(): the PTE changes are done; every
    CPU whose slot has an older tlb_gen must flush before using the mm again."""
    mm.context.tlb_gen += 1
    return mm.context.tlb_gen


@traced(hide=("stride_shift", "cause"), result=lambda r: None)
def flush_tlb_mm_range(mm, start, end, stride_shift=PAGE_SHIFT, freed_tables=False,
                       cause=None):
    """arch/x86/mm/tlb.c: flush_tlb_mm_range() (6.18): bump the generation, then flush
    ``[start, end)`` (``end == -1``: everything) on this CPU and, by IPI, on the others of
    ``mm_cpumask`` (once a second also on CPUs that only linger there: the trim)."""
    machine = mm.machine
    if _skip_flush(machine, cause, mm):
        return
    this = machine.this_cpu
    new_gen = inc_mm_tlb_gen(mm)
    info = FlushTlbInfo(mm, start, end, stride_shift, freed_tables, new_gen, this, cause)
    if trace._active is not None:
        rng = ("all" if info.end == TLB_FLUSH_ALL else
               f"{(info.end - info.start) >> info.stride_shift} page(s)")
        note(f"flush_tlb_mm_range: {rng} of {_mm_name(mm)} (tlb_gen {new_gen}); "
             f"mm_cpumask {sorted(mm.cpumask)}, this CPU {this}")
    if mm.cpumask - {this}:
        info.trim_cpumask = should_trim_cpumask(mm)
        native_flush_tlb_multi(machine, sorted(mm.cpumask), info)
    elif machine.cpus[this].loaded_mm is mm:
        flush_tlb_func(machine.cpus[this], info)


def should_trim_cpumask(mm):
    """arch/x86/mm/tlb.c: should_trim_cpumask(): at most once a second per mm."""
    machine = mm.machine
    if machine.jiffies > mm.context.next_trim_cpumask:
        mm.context.next_trim_cpumask = machine.jiffies + HZ
        return True
    return False


def should_flush_tlb(cpu, info):
    """arch/x86/mm/tlb.c: should_flush_tlb(): lazy CPUs are skipped (they flush at their
    next switch); CPUs running the mm get the IPI; others only when trimming."""
    if cpu.is_lazy:
        return False
    if info.mm is None:
        return True
    if cpu.loaded_mm is info.mm:
        return True
    return info.trim_cpumask


@traced(hide=("machine", "info"), result=lambda r: None)
def native_flush_tlb_multi(machine, cpumask, info):
    """arch/x86/mm/tlb.c: native_flush_tlb_multi(): trace the IPI, then run
    :func:`flush_tlb_func` on the CPUs of ``cpumask`` that need it: all of them when page
    tables were freed (a lazy CPU could walk into a freed table), else those
    :func:`should_flush_tlb` picks. This CPU runs it directly, the others by IPI."""
    this = machine.cpus[info.initiating_cpu]
    pages = TLB_FLUSH_ALL if info.end == TLB_FLUSH_ALL else (info.end - info.start) >> PAGE_SHIFT
    _tlb_flush(machine, this, "TLB_REMOTE_SEND_IPI", pages, info.cause, info.mm)
    targets = [machine.cpus[c] for c in cpumask]
    if not info.freed_tables:
        targets = [c for c in targets if should_flush_tlb(c, info)]
    if trace._active is not None:
        note(f"IPI to CPU {[c.number for c in targets if c is not this]}"
             + ("" if info.freed_tables else " (lazy CPUs skipped)"))
    if this in targets:
        flush_tlb_func(this, info)
    for cpu in targets:
        if cpu is not this:
            flush_tlb_func(cpu, info)


@traced(hide=("info",), result=lambda r: None)
def flush_tlb_func(cpu, info):
    """arch/x86/mm/tlb.c: flush_tlb_func() (6.18), on one CPU. A CPU that no longer runs
    the mm leaves its mm_cpumask (TLB_REMOTE_WRONG_CPU); a lazy one switches to init_mm;
    otherwise flush the range (INVLPG each page) if this is exactly the next generation and
    not past the ceiling, else the whole PCID, and catch the slot up to the mm's tlb_gen."""
    machine = cpu.machine
    local = cpu.number == info.initiating_cpu
    loaded = cpu.loaded_mm
    if info.mm is not None and info.mm is not loaded:
        info.mm.cpumask.discard(cpu.number)
        if trace._active is not None:
            note(f"CPU {cpu.number} leaves mm_cpumask of {_mm_name(info.mm)}")
        _tlb_flush(machine, cpu, "TLB_REMOTE_WRONG_CPU", 0, info.cause, info.mm)
        return
    if isinstance(loaded, InitMm):
        return
    if cpu.is_lazy:
        switch_mm_irqs_off(cpu, machine.init_mm, None, info.cause)
        return
    asid = cpu.loaded_mm_asid
    local_gen = cpu.ctxs[asid][1]
    if info.new_tlb_gen is not None and info.new_tlb_gen <= local_gen:
        return
    mm_gen = loaded.context.tlb_gen
    reason = ("TLB_REMOTE_SHOOTDOWN" if not local else
              "TLB_LOCAL_SHOOTDOWN" if info.mm is None else "TLB_LOCAL_MM_SHOOTDOWN")
    if local_gen == mm_gen:
        _tlb_flush(machine, cpu, reason, 0, info.cause, info.mm or loaded)
        return
    pcid = cpu.pcid()
    if (info.end != TLB_FLUSH_ALL and info.new_tlb_gen == local_gen + 1
            and info.new_tlb_gen == mm_gen):
        nr = (info.end - info.start) >> info.stride_shift
        gone = 0
        for addr in range(info.start, info.end, 1 << info.stride_shift):
            gone += cpu.tlb.flush_one(pcid, addr >> PAGE_SHIFT)
        detail = f"{nr} page(s) invalidated ({gone} cached)"
    else:
        nr = TLB_FLUSH_ALL
        gone = cpu.tlb.flush_pcid(pcid)
        detail = f"PCID {pcid} flushed ({gone} entries)"
    cpu.ctxs[asid][1] = mm_gen
    if trace._active is not None:
        note(f"CPU {cpu.number}: {detail}; tlb_gen {local_gen} -> {mm_gen}")
    _tlb_flush(machine, cpu, reason, nr, info.cause, info.mm or loaded)


def flush_tlb_page(vma, address, cause):
    """arch/x86/include/asm/tlbflush.h: flush_tlb_page(): one page."""
    flush_tlb_mm_range(vma.vm_mm, address, address + PAGE_SIZE, PAGE_SHIFT, False, cause)


def flush_tlb_range(vma, start, end, cause):
    """arch/x86/include/asm/tlbflush.h: flush_tlb_range()."""
    flush_tlb_mm_range(vma.vm_mm, start, end, PAGE_SHIFT, False, cause)


def flush_tlb_mm(mm, cause):
    """arch/x86/include/asm/tlbflush.h: flush_tlb_mm(): everything, as if page tables were
    freed (``flush_tlb_mm_range(mm, 0, TLB_FLUSH_ALL, 0, true)``)."""
    flush_tlb_mm_range(mm, 0, TLB_FLUSH_ALL, PAGE_SHIFT, True, cause)


def pte_needs_flush(oldpte, newpte):
    """arch/x86/include/asm/tlbflush.h: pte_needs_flush() / pte_flags_need_flush() (6.18):
    a non-present PTE was never cached; a new PFN, a cleared (hardware) dirty or present
    bit, or any change of the permission bits (RW, USER, NX, GLOBAL/PROTNONE; even
    RO -> RW) needs a flush. The accessed bit and the software bits (SPECIAL,
    SAVED_DIRTY) never do: the CPU does not cache them."""
    if not oldpte & _PAGE_PRESENT:
        return False
    if pgtable.pte_pfn(oldpte) != pgtable.pte_pfn(newpte):
        return True
    diff = (oldpte ^ newpte) & ~(_PAGE_ACCESSED | _PAGE_SPECIAL | _PAGE_SAVED_DIRTY)
    if diff & oldpte & (_PAGE_DIRTY | _PAGE_PRESENT):
        return True
    return bool(diff & (_PAGE_RW | _PAGE_USER | _PAGE_GLOBAL | _PAGE_NX))


def ptep_clear_flush(vma, address, table, index, cause):
    """mm/pgtable-generic.c: ptep_clear_flush(): clear the PTE, then flush it from every
    TLB if it was present (x86 pte_accessible()). Returns the old PTE."""
    pte = table.entries.get(index, 0)
    pgtable.set_pte(table, index, 0)
    if pte & _PAGE_PRESENT:
        flush_tlb_page(vma, address, cause)
    return pte


# -- mmu_gather -----------------------------------------------------------------------------------

class MmuGather:
    """``struct mmu_gather`` (include/asm-generic/tlb.h): what an unmap has cleared and
    what it will free once the TLBs are flushed. ``start``/``end`` grow with each cleared
    present PTE and each freed page table (at the table's base); ``pages`` are the page
    references and ``tables`` the page-table frames to release after the flush.

    Simplification: the gather being built is ``mm.tlb_gather`` (the kernel passes it down
    the call chain on its stack); its page batch never fills up (no early flush)."""

    def __init__(self, mm, cause, fullmm=False):
        self.mm = mm
        self.cause = cause
        self.fullmm = fullmm
        self.pages = []
        self.tables = []
        self._reset_range()

    def _reset_range(self):
        self.start = self.end = None
        self.freed_tables = False
        self.cleared_ptes = self.cleared_pmds = self.cleared_puds = self.cleared_p4ds = False

    def adjust_range(self, address, size):
        """__tlb_adjust_range()."""
        self.start = address if self.start is None else min(self.start, address)
        self.end = address + size if self.end is None else max(self.end, address + size)

    def __trace__(self):
        return f"tlb[{_mm_name(self.mm)}{', fullmm' if self.fullmm else ''}]"


@traced(hide=("cause",))
def tlb_gather_mmu(mm, cause, fullmm=False):
    """mm/mmu_gather.c: tlb_gather_mmu() / tlb_gather_mmu_fullmm(): start gathering."""
    tlb = MmuGather(mm, cause, fullmm)
    mm.tlb_gather = tlb
    return tlb


def current_gather(mm):
    return getattr(mm, "tlb_gather", None)


def tlb_remove_tlb_entry(tlb, address):
    """include/asm-generic/tlb.h: tlb_remove_tlb_entry(): a present PTE was cleared."""
    tlb.adjust_range(address, PAGE_SIZE)
    tlb.cleared_ptes = True


def tlb_flush_pte_range(tlb, address, size):
    """include/asm-generic/tlb.h: tlb_flush_pte_range() (mprotect, MADV_FREE, MADV_COLD)."""
    tlb.adjust_range(address, size)
    tlb.cleared_ptes = True


def tlb_remove_page(tlb, page):
    """__tlb_remove_folio_pages(): drop the page's reference only after the flush."""
    tlb.pages.append(page)


def free_table_tlb(tlb, table):
    """pte_free_tlb() / pmd_free_tlb() / pud_free_tlb(): the range grows by a page at the
    table's base, and the stride by the level (a lone freed PTE table flushes with a
    2 MiB stride: the tracepoint's ``pages`` is then 0); the frame is freed after the flush."""
    tlb.adjust_range(table.base, PAGE_SIZE)
    tlb.freed_tables = True
    if table.level == 3:
        tlb.cleared_pmds = True
    elif table.level == 2:
        tlb.cleared_puds = True
    else:
        tlb.cleared_p4ds = True
    tlb.tables.append(table.page)


def p4d_free_tlb(tlb, base):
    """include/asm-generic/tlb.h: p4d_free_tlb() with the p4d folded into the pgd (4-level
    paging): nothing is freed, but the range grows by a page at the 512 GiB slot's base
    and freed_tables is set, with no cleared_* level (the stride stays 4 KiB).
    The live kernel shows it: munmap of an untouched mapping alone in its 512 GiB slot
    flushes ``pages:1``."""
    tlb.adjust_range(base, PAGE_SIZE)
    tlb.freed_tables = True


def tlb_get_unmap_shift(tlb):
    """include/asm-generic/tlb.h: tlb_get_unmap_shift()."""
    if tlb.cleared_ptes:
        return PAGE_SHIFT
    if tlb.cleared_pmds:
        return PMD_SHIFT
    if tlb.cleared_puds:
        return PUD_SHIFT
    if tlb.cleared_p4ds:
        return P4D_SHIFT
    return PAGE_SHIFT


def tlb_flush_mmu_tlbonly(tlb):
    """include/asm-generic/tlb.h: tlb_flush_mmu_tlbonly(): flush only if something was
    cleared or freed; x86 tlb_flush() flushes the gathered range (everything for a fullmm
    gather, as at exit)."""
    if not (tlb.freed_tables or tlb.cleared_ptes or tlb.cleared_pmds or tlb.cleared_puds
            or tlb.cleared_p4ds):
        return
    if tlb.fullmm:
        start, end = 0, TLB_FLUSH_ALL
    else:
        start, end = tlb.start, tlb.end
    flush_tlb_mm_range(tlb.mm, start, end, tlb_get_unmap_shift(tlb), tlb.freed_tables,
                       tlb.cause)
    tlb._reset_range()


@traced(hide=("tlb",), result=lambda r: None)
def tlb_finish_mmu(tlb):
    """mm/mmu_gather.c: tlb_finish_mmu(): the last :func:`tlb_flush_mmu`; the gather ends."""
    tlb_flush_mmu(tlb)
    if tlb.mm.tlb_gather is tlb:
        tlb.mm.tlb_gather = None


@traced(hide=("tlb",), result=lambda r: None)
def tlb_flush_mmu(tlb):
    """mm/mmu_gather.c: tlb_flush_mmu(): flush the TLBs (tlb_flush_mmu_tlbonly), then free
    the gathered pages and page tables (tlb_flush_mmu_free): never the other way round, or
    another CPU could still reach a frame that is already someone else's."""
    mm = tlb.mm
    tlb_flush_mmu_tlbonly(tlb)
    phys = mm.machine.phys
    for page in tlb.pages:
        phys.put_page(page)
    for page in tlb.tables:
        phys.free_page(page)
    if trace._active is not None and (tlb.pages or tlb.tables):
        note(f"tlb_flush_mmu_free: {len(tlb.pages)} page reference(s) dropped, "
             f"{len(tlb.tables)} page table(s) freed")
    tlb.pages, tlb.tables = [], []


# -- reclaim: batched flushes ---------------------------------------------------------------------

def should_defer_flush(mm):
    """mm/rmap.c: should_defer_flush() with x86 arch_tlbbatch_should_defer(): reclaim
    (TTU_BATCH_FLUSH) batches the flush when another CPU is in mm_cpumask."""
    return bool(mm.cpumask - {mm.machine.this_cpu})


def set_tlb_ubc_flush_pending(mm):
    """mm/rmap.c: set_tlb_ubc_flush_pending() -> arch_tlbbatch_add_pending(): bump the
    generation now, remember the CPUs to flush later."""
    inc_mm_tlb_gen(mm)
    mm.machine.tlb_batch |= mm.cpumask


def try_to_unmap_flush(machine):
    """mm/rmap.c: try_to_unmap_flush(): the batched flush, if one is pending."""
    if machine.tlb_batch:
        arch_tlbbatch_flush(machine)


@traced(hide=("machine",), result=lambda r: None)
def arch_tlbbatch_flush(machine):
    """arch/x86/mm/tlb.c: arch_tlbbatch_flush(): a full flush with no mm (TLB_LOCAL_SHOOTDOWN
    here, TLB_REMOTE_SHOOTDOWN by IPI) on every CPU the batch collected."""
    batch = sorted(machine.tlb_batch)
    machine.tlb_batch = set()
    if _skip_flush(machine, "reclaim", None):
        return
    this = machine.this_cpu
    info = FlushTlbInfo(None, 0, TLB_FLUSH_ALL, 0, False, None, this, "reclaim")
    if set(batch) - {this}:
        native_flush_tlb_multi(machine, batch, info)
    elif this in batch:
        flush_tlb_func(machine.cpus[this], info)


# -- the MMU --------------------------------------------------------------------------------------

def tlb_serves(machine, mm, addr, write):
    """Would the running CPU's TLB serve this access without a page walk? (No change.)"""
    cpu = machine.cpus[machine.this_cpu]
    entry = cpu.tlb.peek(cpu.pcid(), addr >> PAGE_SHIFT)
    return entry is not None and (not write or (entry.writable and entry.dirty))


def mmu_access(machine, mm, addr, write):
    """The CPU translates one user access to the page holding ``addr``; returns the Page.

    A hit uses the entry's frame (the page table is not read). A write through a read-only
    entry drops it and faults (the kernel finds nothing to do if the PTE already allows it:
    a spurious fault); a write through an entry whose dirty bit is clear walks the table to
    set it. A miss walks the table (faulting if needed) and fills an entry."""
    from . import memory
    cpu = machine.cpus[machine.this_cpu]
    assert cpu.loaded_mm is mm and not cpu.is_lazy, (cpu, mm)
    tlb = cpu.tlb
    pcid = cpu.pcid()
    vpn = addr >> PAGE_SHIFT
    entry = tlb.lookup(pcid, vpn)
    if entry is not None:
        if write and not entry.writable:
            tlb.stats["permission_miss"] += 1
            tlb.drop(entry)
            if memory._hw_allows(pgtable.get_pte(mm, addr), True):
                tlb.stats["spurious_fault"] += 1
                memory.exc_page_fault(mm, addr, True)
        elif write and not entry.dirty:
            tlb.stats["dirty_walk"] += 1
            tlb.drop(entry)
        else:
            tlb.stats["hit"] += 1
            return machine.phys.pages[entry.pfn]
    else:
        tlb.stats["miss"] += 1
    page, pte = memory.access_page(mm, addr, write)
    # The entry caches the hardware bits: RW and D (never _PAGE_SAVED_DIRTY, a software bit:
    # a write-protected PTE caches as clean, and the write fault makes it RW and D again).
    tlb.fill(TlbEntry(vpn, pcid, pgtable.pte_pfn(pte), bool(pte & _PAGE_RW),
                      bool(pte & _PAGE_DIRTY)))
    return page


# -- fault injection and tracepoint ---------------------------------------------------------------

def _skip_flush(machine, cause, mm):
    """An injected skip (``Machine.inject_skip_flush``) swallows this flush entirely."""
    inject = machine.tlb_inject
    if inject is None or (inject[0] is not None and inject[0] != cause):
        return False
    inject[1] -= 1
    if inject[1] <= 0:
        machine.tlb_inject = None
    from .machine import Event
    pid = mm.owner.pid if mm is not None and mm.owner is not None else 0
    machine._add_event(Event(0, pid, "tlb_flush skipped", (cause,), None, 0,
                             [f"injected fault: the {cause} TLB flush was skipped"]))
    if trace._active is not None:
        note(f"INJECTED: {cause} TLB flush skipped; stale entries may remain")
    return True


def _tlb_flush(machine, cpu, reason, pages, cause, mm):
    """The tlb_flush tracepoint."""
    pid = mm.owner.pid if mm is not None and getattr(mm, "owner", None) is not None else 0
    step = machine._step.index if machine._step is not None else machine.nr_steps
    rec = TlbFlush(step, cpu.number, reason, pages, cause, pid)
    cpu.last_flush = rec
    machine.tlb_log.append(rec)
    if machine._step is not None:
        machine._step.tlb_flushes.append(rec)
    if trace._active is not None:
        note(f"tlb_flush: {rec}")


def _mm_name(mm):
    if mm is None:
        return "no mm"
    if isinstance(mm, InitMm):
        return "init_mm"
    owner = getattr(mm, "owner", None)
    return f"mm of pid {owner.pid}" if owner is not None else "mm"


# -- the state, for views and tests ---------------------------------------------------------------

def tlb_state(machine):
    """A plain summary of every CPU (comparable across a timeline replay)."""
    out = []
    for cpu in machine.cpus:
        out.append({
            "cpu": cpu.number,
            "current": None if cpu.current is None else cpu.current.tid,
            "loaded_mm": _mm_name(cpu.loaded_mm),
            "asid": cpu.loaded_mm_asid,
            "lazy": cpu.is_lazy,
            "ctxs": [tuple(c) for c in cpu.ctxs],
            "entries": [(e.pcid, e.vpn, e.pfn, e.writable, e.dirty) for e in cpu.tlb],
            "stats": dict(cpu.tlb.stats),
            "last_flush": None if cpu.last_flush is None else str(cpu.last_flush),
        })
    return out


def exit_tasks(proc):
    """kernel/exit.c: exit_mm() for every thread of an exiting process: current->mm = NULL
    and enter_lazy_tlb(), so its CPU keeps the mm loaded, lazily, while exit_mmap() runs
    (the task then leaves the CPU idle). Simplification: all threads at once."""
    for task in [proc] + list(proc.threads):
        cpu = task_running_on(task)
        if cpu is not None:
            cpu.current = None
            enter_lazy_tlb(cpu)
