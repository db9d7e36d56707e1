"""CPUs, TLBs and TLB shootdowns (core/tlb.py): the flushes Linux 6.18 makes, with the
``tlb_flush`` tracepoint's reasons and page counts, what a TLB hit can still reach, and
``validate_tlb``. The page counts of the single-CPU cases are the ones the live kernel
printed for the same operations (tests/live/test_tlb_live.py compares them directly)."""

import random

import pytest

import vmwidgets as vw
from vmwidgets.core import tlb as tlb_mod

P = vw.PAGE_SIZE
RW = vw.PROT_READ | vw.PROT_WRITE
R = vw.PROT_READ
FIXED = vw.MAP_PRIVATE | vw.MAP_ANONYMOUS | vw.MAP_FIXED
#: A region far from everything (its own 512 GiB PGD slot), 2 MiB aligned.
A = 0x1000_0000_0000
SHORT = {"TLB_FLUSH_ON_TASK_SWITCH": "switch", "TLB_REMOTE_SHOOTDOWN": "remote",
         "TLB_LOCAL_SHOOTDOWN": "local", "TLB_LOCAL_MM_SHOOTDOWN": "local_mm",
         "TLB_REMOTE_SEND_IPI": "ipi", "TLB_REMOTE_WRONG_CPU": "wrong_cpu"}


def flushes(m, switches=False):
    """The last step's flushes as (cpu, reason, pages, cause)."""
    return [(f.cpu, SHORT[f.reason], f.pages, f.cause) for f in m.last_step.tlb_flushes
            if switches or f.reason != "TLB_FLUSH_ON_TASK_SWITCH"]


def machine(**kw):
    kw.setdefault("ram", "32M")
    m = vw.Machine(**kw)
    return m, m.spawn()


def touch_pages(task, addr, n, write=True):
    for i in range(n):
        task.touch(addr + i * P, write)


# -- configuration ------------------------------------------------------------------------------

@pytest.mark.parametrize("kw, exc, text", [
    ({"cpus": 0}, ValueError, "cpus"), ({"cpus": "2"}, TypeError, "cpus"),
    ({"tlb_entries": 0}, ValueError, "tlb_entries"), ({"tlb_policy": "lfu"}, ValueError, "lru"),
    ({"pcid": 1}, TypeError, "pcid"), ({"seed": 1.5}, TypeError, "seed")])
def test_bad_configuration_is_refused(kw, exc, text):
    with pytest.raises(exc, match=text):
        vw.Machine(**kw)


def test_defaults_one_cpu_and_bad_cpu_numbers():
    m, p = machine()
    assert len(m.cpus) == 1 and m.cpus[0].current is p and m.cpus[0].tlb.size == 64
    with pytest.raises(ValueError, match="cpu must be between 0 and 0"):
        p.clone_thread(cpu=1)
    with pytest.raises(ValueError, match="cause"):
        m.inject_skip_flush("typo")


# -- single CPU: the live kernel's figures ----------------------------------------------------------

@pytest.mark.parametrize("n, pages", [(1, 1), (10, 10), (33, 33), (34, -1), (40, -1)])
def test_munmap_of_faulted_pages_flushes_a_range_up_to_33_pages(n, pages):
    m, p = machine()
    p.mmap(A + 0x100000, P, RW, FIXED)         # a neighbour keeps every page table
    p.touch(A + 0x100000, True)
    p.mmap(A, n * P, RW, FIXED)
    touch_pages(p, A, n)
    p.munmap(A, n * P)
    assert flushes(m) == [(0, "local_mm", pages, "munmap")]


def test_munmap_of_untouched_pages():
    m, p = machine()
    p.mmap(A + 0x100000, P, RW, FIXED)
    p.touch(A + 0x100000, True)
    p.mmap(A, 8 * P, RW, FIXED)
    p.munmap(A, 8 * P)
    assert flushes(m) == []                    # nothing cleared, no table freed: no flush
    p.munmap(A + 0x100000, P)                  # alone in its 512 GiB slot: tables freed
    p.mmap(A, 8 * P, RW, FIXED)
    p.munmap(A, 8 * P)
    # the folded p4d level: the range grows by a page at the slot's base (pages:1)
    assert flushes(m) == [(0, "local_mm", 1, "munmap")]


def test_freed_page_tables_grow_the_range():
    m, p = machine()
    far = A + (64 << 30)
    p.mmap(far, 8 * P, RW, FIXED)
    p.touch(far, True)
    p.munmap(far, 8 * P)                       # PTE, PMD and PUD tables go: the range
    assert flushes(m) == [(0, "local_mm", -1, "munmap")]    # starts at the slot's base: full
    p.mmap(A + 0x400000, P, RW, FIXED)         # keeps the PMD table
    p.touch(A + 0x400000, True)
    p.mmap(A + 0x200000, 8 * P, RW, FIXED)
    p.touch(A + 0x200000 + 3 * P, True)
    p.munmap(A + 0x200000, 8 * P)              # the PTE table at its base + the 4th page
    assert flushes(m) == [(0, "local_mm", 4, "munmap")]
    p.mmap(A + 0x200000, 8 * P, RW, FIXED)
    p.touch(A + 0x200000, True)
    p.madvise(A + 0x200000, 8 * P, vw.MADV_DONTNEED)
    p.munmap(A + 0x200000, 8 * P)              # only a table freed: a 2 MiB stride, pages:0
    assert flushes(m) == [(0, "local_mm", 0, "munmap")]


def test_mprotect_flushes_the_ptes_whose_permission_changed():
    m, p = machine()
    p.mmap(A, 8 * P, RW, FIXED)
    touch_pages(p, A, 5)
    p.mprotect(A, 8 * P, R)
    assert flushes(m) == [(0, "local_mm", 5, "mprotect")]
    p.mprotect(A, 8 * P, RW)                   # RO -> RW flushes too (x86 pte_needs_flush)
    assert flushes(m) == [(0, "local_mm", 5, "mprotect")]
    p.mprotect(A, 8 * P, RW)
    assert flushes(m) == []


@pytest.mark.parametrize("advice", [vw.MADV_DONTNEED, vw.MADV_FREE, vw.MADV_COLD])
def test_madvise_flushes_what_it_cleared(advice):
    m, p = machine()
    p.mmap(A, 8 * P, RW, FIXED)
    touch_pages(p, A, 5)
    p.madvise(A, 8 * P, advice)
    assert flushes(m) == [(0, "local_mm", 5, "madvise")]


def test_mremap_move_flushes_the_moved_extent_then_the_freed_table():
    m, p = machine()
    p.mmap(A + 0x200000, 8 * P, RW, FIXED)
    touch_pages(p, A + 0x200000, 5)
    p.mremap(A + 0x200000, 8 * P, 8 * P, vw.MREMAP_MAYMOVE | vw.MREMAP_FIXED, A + 0x800000)
    assert flushes(m) == [(0, "local_mm", 8, "mremap"), (0, "local_mm", 0, "mremap")]


def test_fork_flushes_the_parent_and_cow_flushes_one_page_reuse_none():
    m, p = machine()
    p.mmap(A, 4 * P, RW, FIXED)
    touch_pages(p, A, 4)
    c = p.fork()
    assert flushes(m) == [(0, "local_mm", -1, "fork")]
    p.touch(A + P, True)
    assert flushes(m) == [(0, "local_mm", 1, "COW")]
    c.exit()
    p.touch(A + 2 * P, True)                   # reused in place: no flush on x86
    assert flushes(m) == []
    assert p.pagemap(A + 2 * P).exclusive


def test_exit_runs_lazily_and_leaves_for_init_mm():
    m, p = machine()
    c = p.fork()
    c.exit()
    fl = m.last_step.tlb_flushes
    # the child was switched in to exit; exit_mmap's full flush finds its CPU lazy: the
    # CPU switches to init_mm (a task-switch flush), nothing else
    assert [f.reason for f in fl][-1] == "TLB_FLUSH_ON_TASK_SWITCH" and fl[-1].cause == "exit"
    assert isinstance(m.cpus[0].loaded_mm, tlb_mod.InitMm) and m.cpus[0].current is None
    vw.validate(m)


# -- several CPUs ---------------------------------------------------------------------------------

def two_cpu():
    m, p = machine(cpus=2)
    p.mmap(A, 8 * P, RW, FIXED)
    p.mmap(A + 0x100000, P, RW, FIXED)
    p.touch(A + 0x100000, True)
    t = p.clone_thread(cpu=1)
    return m, p, t


def test_shootdown_reaches_a_cpu_running_the_mm():
    m, p, t = two_cpu()
    touch_pages(t, A, 3)
    assert m.cpus[1].current is t and m.cpus[0].current is p
    p.munmap(A, 3 * P)
    assert flushes(m) == [(0, "ipi", 3, "munmap"), (0, "local_mm", 3, "munmap"),
                          (1, "remote", 3, "munmap")]
    with pytest.raises(vw.SegmentationFault):
        t.read(A, 1)
    vw.validate(m)


def test_lazy_cpu_is_skipped_then_flushes_when_it_comes_back():
    m, p, t = two_cpu()
    t.write(A, b"x")
    m.switch_to(1, None)                       # idle: lazy TLB, the mm stays loaded
    assert m.cpus[1].is_lazy and m.cpus[1].loaded_mm is p.mm
    assert flushes(m, switches=True) == []     # enter_lazy_tlb flushes nothing
    p.munmap(A, P)
    assert flushes(m) == [(0, "ipi", 1, "munmap"), (0, "local_mm", 1, "munmap")]
    assert any(e.address == A for e in m.cpus[1].tlb)     # still cached on CPU 1...
    vw.validate(m)                                         # ...legally: its tlb_gen is behind
    m.switch_to(1, t)
    assert flushes(m, switches=True) == [(1, "switch", -1, "context switch")]
    assert not any(e.address == A for e in m.cpus[1].tlb)


def test_lazy_cpu_back_without_flush_when_nothing_changed():
    m, p, t = two_cpu()
    t.write(A, b"x")
    m.switch_to(1, None)
    m.switch_to(1, t)                          # same mm, tlb_gen unchanged: no tracepoint
    assert flushes(m, switches=True) == []
    hits = m.cpus[1].tlb.hits
    assert t.read(A, 1) == b"x" and m.cpus[1].tlb.hits == hits + 1


def test_freed_page_tables_reach_lazy_cpus_too():
    m, p, t = two_cpu()
    p.mmap(A + 0x4000_0000, P, RW, FIXED)      # alone in its own PMD table
    t.touch(A + 0x4000_0000, True)
    m.switch_to(1, None)
    p.munmap(A + 0x4000_0000, P)               # tables freed: the IPI goes to lazy CPUs
    assert flushes(m, switches=True) == [
        (0, "ipi", 1, "munmap"), (0, "local_mm", 1, "munmap"),
        (1, "switch", 0, "munmap")]            # CPU 1 leaves for init_mm (its slot is fresh)
    assert isinstance(m.cpus[1].loaded_mm, tlb_mod.InitMm)


def test_a_cpu_that_left_stays_in_mm_cpumask_until_trimmed():
    m, p, t = two_cpu()
    t.touch(A, True)
    q = m.spawn()
    m.switch_to(1, q)                          # CPU 1 runs another mm, not lazily
    assert p.mm.cpumask == {0, 1}              # 6.18 does not clear it at the switch
    p.munmap(A, P)
    assert flushes(m) == [(0, "ipi", 1, "munmap"), (0, "local_mm", 1, "munmap")]
    m.advance_time(1500)                       # more than a second: the next flush trims
    p.mmap(A, P, RW, FIXED)
    p.touch(A, True)
    p.munmap(A, P)
    assert flushes(m) == [(0, "ipi", 1, "munmap"), (0, "local_mm", 1, "munmap"),
                          (1, "wrong_cpu", 0, "munmap")]
    assert p.mm.cpumask == {0}
    p.mmap(A, P, RW, FIXED)
    p.touch(A, True)
    p.munmap(A, P)
    assert flushes(m) == [(0, "local_mm", 1, "munmap")]


def test_reclaim_flushes_at_once_or_batched():
    m, p = machine(swap="4M")
    p.mmap(A, P, RW, FIXED)
    p.touch(A, True)
    p.madvise(A, P, vw.MADV_PAGEOUT)           # one CPU: ptep_clear_flush
    assert flushes(m) == [(0, "local_mm", 1, "reclaim")]
    mm, pp = machine(cpus=2, swap="4M")
    pp.mmap(A, P, RW, FIXED)
    pp.touch(A, True)
    tt = pp.clone_thread(cpu=1)
    tt.touch(A, False)
    pp.madvise(A, P, vw.MADV_PAGEOUT)          # another CPU has the mm: batched, mm NULL
    assert flushes(mm) == [(0, "ipi", -1, "reclaim"), (0, "local", -1, "reclaim"),
                           (1, "remote", -1, "reclaim")]
    assert tt.read(A, 1) == b"\0" and pp.pagemap(A).present
    vw.validate(mm)


# -- the TLB itself ---------------------------------------------------------------------------------

def test_hits_misses_dirty_walks():
    m, p = machine()
    p.mmap(A, P, RW, FIXED)
    tlb = m.cpus[0].tlb
    base = tlb.stats.copy()
    p.read(A, 1)                               # miss (zero page, read-only)
    p.read(A, 1)                               # hit
    p.write(A, b"x")                           # a write through a read-only entry
    p.write(A, b"y")                           # hit (writable, dirty)
    d = {k: tlb.stats[k] - base[k] for k in ("miss", "hit", "permission_miss")}
    assert d == {"miss": 1, "hit": 2, "permission_miss": 1}
    p.mmap(A + P, P, RW, FIXED)
    p.write(A + P, b"z")
    p.madvise(A + P, P, vw.MADV_FREE)          # the PTE loses its dirty bit (and is flushed)
    p.read(A + P, 1)                           # refilled clean
    p.write(A + P, b"z")                       # writable but clean: a walk sets D
    assert tlb.stats["dirty_walk"] - base["dirty_walk"] == 1


def test_spurious_fault_on_a_cpu_with_a_read_only_entry():
    m, p, t = two_cpu()
    p.write(A, b"x")
    c = p.fork()                               # p's PTE is read-only now (COW)
    t.read(A, 1)                               # CPU 1 caches it read-only
    c.exit()
    p.write(A, b"y")                           # reuse: the PTE becomes writable, no flush
    assert flushes(m) == []
    vw.validate(m)                             # a less permissive entry is legal
    t.write(A, b"z")                           # CPU 1: permission miss, spurious fault
    assert m.cpus[1].tlb.stats["spurious_fault"] == 1
    assert m.last_step.trace.find("handle_pte_fault") is not None
    assert p.read(A, 1) == b"z"


@pytest.mark.parametrize("policy, kept", [("lru", {0, 2}), ("fifo", {1, 2})])
def test_replacement_policies(policy, kept):
    m, p = machine(tlb_entries=2, tlb_policy=policy)
    p.mmap(A, 3 * P, RW, FIXED)
    for i in (0, 1, 0, 2):                     # syscall-free accesses only
        p.touch(A + i * P, False)
    cached = {(e.address - A) // P for e in m.cpus[0].tlb}
    assert cached == kept


def test_random_replacement_is_seeded():
    def run(seed):
        m, p = machine(tlb_entries=4, tlb_policy="random", seed=seed)
        p.mmap(A, 16 * P, RW, FIXED)
        for i in range(16):
            p.touch(A + i * P, False)
        return sorted(e.vpn for e in m.cpus[0].tlb), m.cpus[0].tlb.stats["eviction"]
    assert run(1) == run(1)
    assert len({tuple(run(s)[0]) for s in range(6)}) > 1


def test_pcid_keeps_entries_across_switches_and_without_pcid_they_go():
    for pcid, pages, kept in ((True, 0, True), (False, -1, False)):
        m, p = machine(pcid=pcid)
        p.mmap(A, P, RW, FIXED)
        p.write(A, b"x")
        q = m.spawn()
        q.mmap(A, P, RW, FIXED)
        q.write(A, b"y")                       # switches CPU 0 to q
        hits = m.cpus[0].tlb.hits
        p.read(A, 1)                           # and back to p
        assert flushes(m, switches=True)[-1] == (0, "switch", pages, "context switch")
        assert (m.cpus[0].tlb.hits == hits + 1) == kept
        vw.validate(m)


def test_asid_slots_are_reused_round_robin():
    m, p = machine()
    p.mmap(A, P, RW, FIXED)
    p.write(A, b"x")
    others = [m.spawn() for _ in range(tlb_mod.TLB_NR_DYN_ASIDS)]
    for q in others:
        q.read(0x555555554000, 1)              # each takes the next ASID slot
    p.read(A, 1)                               # p's slot was taken: new slot, full flush
    assert flushes(m, switches=True)[-1] == (0, "switch", -1, "context switch")


def test_the_syscall_entry_page_is_a_global_entry_surviving_cr3_writes():
    m, p = machine(pcid=False)
    q = m.spawn()
    p.mmap(A, P, RW, FIXED)
    q.mmap(A, P, RW, FIXED)                    # a full flush on the switch (no PCID)...
    entry = m.cpus[0].tlb.peek(0, tlb_mod.ENTRY_TEXT >> 12)
    assert entry is not None and entry.pcid == tlb_mod.GLOBAL     # ...but this stays


# -- fault injection -------------------------------------------------------------------------------

def test_a_skipped_flush_leaves_a_stale_entry_into_a_reused_frame():
    m, p, t = two_cpu()
    p.write(A, b"secret")
    assert t.read(A, 6) == b"secret"           # CPU 1 caches the translation
    old_pfn = p.pagemap(A).pfn
    m.inject_skip_flush("munmap")
    p.munmap(A, P)
    assert flushes(m) == [] and m.phys.pages[old_pfn].kind == "free"
    with pytest.raises(vw.ValidationError, match=r"CPU 1: stale TLB entry: 0x100000000000 .* "
                                                 r"now a free frame, but the PTE is not present"):
        vw.validate(m)
    b = p.mmap(A + 2 * P, P, RW, FIXED)        # its page table is there already
    p.write(b, b"NEWDATA")                     # the freed frame is the next one handed out
    assert p.pagemap(b).pfn == old_pfn
    assert t.read(A, 7) == b"NEWDATA"          # through the stale entry: someone else's page
    with pytest.raises(vw.ValidationError, match="now an anon frame"):
        vw.validate(m)


def test_without_the_skip_the_frame_is_unreachable_and_freed_after_the_flush():
    m, p, t = two_cpu()
    p.write(A, b"secret")
    t.read(A, 6)
    p.munmap(A, P)
    tree = m.last_step.trace.find("tlb_flush_mmu")
    body = [getattr(x, "func", str(x)) for x in tree.body]
    first_free = next(i for i, x in enumerate(body) if x.startswith("page freed"))
    assert body.index("flush_tlb_mm_range") < first_free   # mmu_gather: flush, then free
    with pytest.raises(vw.SegmentationFault):
        t.read(A, 1)


def test_skipped_cow_flush_keeps_the_old_page_writable_elsewhere():
    m, p, t = two_cpu()
    p.write(A, b"a")
    c = p.fork()
    t.read(A, 1)
    m.inject_skip_flush("COW")
    p.write(A, b"b")                           # COW: p gets a new page
    assert t.read(A, 1) == b"a"                # CPU 1 still reads the old (shared) page
    with pytest.raises(vw.ValidationError, match="stale TLB entry"):
        vw.validate(m)
    del c


# -- timeline and random traces ------------------------------------------------------------------------

def test_timeline_replays_the_tlb_state():
    m = vw.Machine(ram="32M", cpus=3, checkpoint_every=7)
    p = m.spawn()
    p.mmap(A, 8 * P, RW, FIXED)
    t1 = p.clone_thread(cpu=1)
    t2 = p.clone_thread(cpu=2)
    states = [tlb_mod.tlb_state(m)]
    marks = [m.nr_steps]
    for i in range(20):
        [p, t1, t2][i % 3].touch(A + (i % 8) * P, i % 2 == 0)
        if i % 5 == 4:
            t1.munmap(A + (i % 8) * P, P)
            t2.mmap(A + (i % 8) * P, P, RW, FIXED)
            m.switch_to(2, None)
        states.append(tlb_mod.tlb_state(m))
        marks.append(m.nr_steps)
    for n, want in zip(marks, states):
        assert tlb_mod.tlb_state(m.timeline.state(n)) == want
    rec = m.timeline.record(marks[5] - 1)
    assert rec.op.target in (0, p.pid, t1.tid, t2.tid)


def test_task_finds_threads_and_threads_exit_alone():
    m, p, t = two_cpu()
    assert m.task(t.tid) is t and t.pid == p.pid
    t.exit()
    assert m.cpus[1].current is None and m.cpus[1].is_lazy
    with pytest.raises(ProcessLookupError):
        m.task(t.tid)
    with pytest.raises(ProcessLookupError):
        t.read(A, 1)
    p.exit()
    vw.validate(m)


@pytest.mark.parametrize("seed", range(6))
def test_random_multi_cpu_trace_never_leaves_a_stale_entry(seed):
    rng = random.Random(seed)
    ncpu = rng.choice([2, 3, 4])
    m = vw.Machine(ram="32M", swap="4M", cpus=ncpu, tlb_entries=rng.choice([4, 16, 64]),
                   tlb_policy=rng.choice(tlb_mod.POLICIES), seed=seed, history=False,
                   trace=False)
    m.spawn()
    for _ in range(200):
        tasks = [t for proc in m.processes for t in [proc] + proc.threads]
        if not tasks:
            m.spawn()
            continue
        task = rng.choice(tasks)
        page = A + rng.randrange(12) * P
        op = rng.random()
        try:
            if op < 0.30:
                task.touch(page, rng.random() < 0.6)
            elif op < 0.38:
                task.mmap(page, rng.randrange(1, 4) * P, RW, FIXED)
            elif op < 0.45:
                task.munmap(page, rng.randrange(1, 4) * P)
            elif op < 0.51:
                task.mprotect(page, rng.randrange(1, 4) * P, rng.choice([R, RW, vw.PROT_NONE]))
            elif op < 0.56:
                task.madvise(page, rng.randrange(1, 4) * P,
                             rng.choice([vw.MADV_DONTNEED, vw.MADV_FREE, vw.MADV_COLD,
                                         vw.MADV_PAGEOUT]))
            elif op < 0.60:
                task.mremap(page, P, P, vw.MREMAP_MAYMOVE | vw.MREMAP_FIXED,
                            A + rng.randrange(12, 20) * P)
            elif op < 0.67:
                m.switch_to(rng.randrange(ncpu), rng.choice(tasks + [None]))
            elif op < 0.71 and len(m.processes) < 4:
                task.fork()
            elif op < 0.75 and len(tasks) < 8:
                task.clone_thread(rng.choice([None, rng.randrange(ncpu)]))
            elif op < 0.78 and len(m.processes) > 1:
                task.exit()
            elif op < 0.81:
                m.reclaim(rng.randrange(1, 4))
            elif op < 0.83:
                m.advance_time(rng.choice([10, 600]))
            else:
                task.write(page, bytes([rng.randrange(256)]) * rng.randrange(1, 9))
        except (OSError, vw.SegmentationFault, ProcessLookupError):
            pass
        vw.validate(m)
    shootdowns = [f for f in m.tlb_log if f.reason != "TLB_FLUSH_ON_TASK_SWITCH"]
    assert len(shootdowns) >= 5, "the trace should exercise the flushes"
