"""step_changes: what one step changed, checked against what the step is known to do.

Addresses are those of the model's top-down mmap area (no ASLR), so each test maps its
own region first and reads the addresses back from the machine.
"""

import pytest

import vmwidgets as vw
from vmwidgets.views.diff import PidVmaChanges, step_changes

RW = vw.PROT_READ | vw.PROT_WRITE
ANON = vw.MAP_PRIVATE | vw.MAP_ANONYMOUS
PAGE = 4096


def last(m):
    """The changes of the machine's last step (timeline states before and after it)."""
    n = len(m.timeline)
    return step_changes(m.timeline.state(n - 1), m.timeline.state(n), m.last_step)


def machine(**kw):
    m = vw.Machine(ram="16M", **kw)
    return m, m.spawn()


def test_no_step_no_change():
    m, p = machine()
    ch = step_changes(m.timeline.state(1), m.timeline.state(1))
    assert not ch
    assert str(ch) == "no change"
    assert ch.vma_list == [] and ch.vmas == {} and ch.frames == []


def test_bad_input_is_refused():
    m, _ = machine()
    with pytest.raises(TypeError, match="before must be a Machine"):
        step_changes(None, m)
    with pytest.raises(TypeError, match="after must be a Machine"):
        step_changes(m, "m")


def test_mmap_adds_one_vma_and_nothing_else():
    m, p = machine()
    a = p.mmap(0, 4 * PAGE, RW, ANON)
    ch = last(m)
    [c] = ch.vma_list
    assert c.kinds == ("added",) and c.pid == p.pid and c.before is None
    assert (c.after.start, c.after.end, c.after.perms) == (a, a + 4 * PAGE, "rw-p")
    assert ch.vmas[p.pid].added == [c] and ch.vmas[p.pid].removed == []
    assert ch.vma_changed(p.pid, a) and ch.vma_changed(p.pid, a + 3 * PAGE, a + 4 * PAGE)
    assert not ch.vma_changed(p.pid, a + 4 * PAGE)
    assert not ch.vma_changed(p.pid + 1, a)
    assert ch.vma_marks(p.pid) == {a: "added"}
    assert ch.ranges_mapped(p.pid) == [(a, a + 4 * PAGE)] and ch.ranges_unmapped(p.pid) == []
    assert ch.ptes == [] and ch.frames == [] and ch.anon_vmas_added == []


def test_mmap_merging_with_prev_resizes_it():
    m, p = machine()
    a = p.mmap(0, 2 * PAGE, RW, ANON)
    old_id = p.mm.vma_lookup(a).id
    b = p.mmap(0, 2 * PAGE, RW, ANON)        # top-down: just below a, merges
    assert b == a - 2 * PAGE
    ch = last(m)
    [c] = ch.vma_list
    assert c.id == old_id and "resized" in c.kinds and "added" not in c.kinds
    assert (c.before.start, c.before.end) == (a, a + 2 * PAGE)
    assert (c.after.start, c.after.end) == (b, a + 2 * PAGE)
    assert ch.vma_marks(p.pid) == {b: "resized"}
    assert ch.ranges_mapped(p.pid) == [(b, a)]


def test_munmap_in_the_middle_splits():
    m, p = machine()
    a = p.mmap(0, 3 * PAGE, RW, ANON)
    p.munmap(a + PAGE, PAGE)
    ch = last(m)
    pv = ch.vmas[p.pid]
    # As in 6.18: vms_gather_munmap_vmas() splits with new_below=1, so the original struct
    # ends up as the unmapped middle and is removed; both outer parts are new structs.
    assert [(c.before.start, c.before.end) for c in pv.removed] == [(a, a + 3 * PAGE)]
    assert sorted((c.after.start, c.after.end) for c in pv.added) == [
        (a, a + PAGE), (a + 2 * PAGE, a + 3 * PAGE)]
    assert ch.vmas_removed(p.pid) == [(a, a + 3 * PAGE)]
    assert set(ch.vma_marks(p.pid)) == {a, a + 2 * PAGE}
    assert ch.vma_changed(p.pid, a + PAGE)          # the old VMA covered the hole
    assert ch.ranges_unmapped(p.pid) == [(a + PAGE, a + 2 * PAGE)]
    assert ch.ranges_mapped(p.pid) == []


def test_munmap_whole_vma_removes_it_and_frees_its_pages():
    m, p = machine()
    a = p.mmap(0, 2 * PAGE, RW, ANON)
    p.write(a, b"data")
    pfn = p.pagemap(a).pfn
    av = p.mm.vma_lookup(a).anon_vma.id
    p.munmap(a, 2 * PAGE)
    ch = last(m)
    [c] = ch.vma_list
    assert c.kinds == ("removed",) and (c.before.start, c.before.end) == (a, a + 2 * PAGE)
    assert ch.vmas_removed(p.pid) == [(a, a + 2 * PAGE)]
    assert ch.vma_marks(p.pid) == {}
    assert pfn in ch.frames_freed
    assert ch.frame_change(pfn).before.kind == "anon" and ch.frame_change(pfn).after.kind == "free"
    [pte] = ch.ptes
    assert pte.address == a and pte.old_pfn == pfn and pte.new == 0
    assert ch.anon_vmas_removed == [av]
    assert ch.avcs_removed == [(p.pid, c.id, av)]
    assert ch.avc_changed(c.id, av) and ch.anon_vma_changed(av)


def test_mprotect_middle_reprotects_one_part():
    m, p = machine()
    a = p.mmap(0, 3 * PAGE, RW, ANON)
    p.mprotect(a + PAGE, PAGE, vw.PROT_READ)
    ch = last(m)
    pv = ch.vmas[p.pid]
    assert [(c.after.start, c.after.perms) for c in pv.reprotected] == [(a + PAGE, "r--p")]
    assert len(pv.added) == 2          # two new structs: the middle and one outer part
    assert sorted(ch.vma_marks(p.pid)) == [a, a + PAGE, a + 2 * PAGE]


def test_first_write_fault():
    m, p = machine()
    a = p.mmap(0, 2 * PAGE, RW, ANON)
    vma_id = p.mm.vma_lookup(a).id
    p.write(a + 5, b"hi")
    ch = last(m)
    page = p.mm.machine.phys.pages[p.pagemap(a).pfn]
    [c] = ch.vma_list
    assert c.id == vma_id and c.kinds == ("anon_vma", "chain")
    [av] = ch.anon_vmas_added
    assert c.after.anon_vma == av and ch.avcs_added == [(p.pid, vma_id, av)]
    [pte] = ch.ptes
    assert pte.address == a and pte.old == 0 and pte.new_pfn == page.pfn
    assert ch.pte_changed(p.pid, a + 100) and not ch.pte_changed(p.pid, a + PAGE)
    fc = ch.frame_change(page.pfn)
    assert fc.kind == "allocated" and fc.after.kind == "anon"
    assert fc.after.mapping == f"anon_vma:{av}" and fc.after.mapcount == 1
    assert fc.after.data == b"\0" * 5 + b"hi"
    assert page.pfn in ch.frames_allocated
    # the PTE page (and perhaps upper tables) are new frames too
    assert any(f.after.kind == "pgtable" for f in ch.frames if f.kind == "allocated")


def test_read_fault_maps_the_zero_page_and_allocates_no_data_frame():
    m, p = machine()
    a = p.mmap(0, PAGE, RW, ANON)
    p.read(a, 1)
    ch = last(m)
    [pte] = ch.ptes
    assert pte.new_pfn == 1 and "zero page" in str(pte)
    assert not [f for f in ch.frames if f.kind == "allocated" and f.after.kind == "anon"]
    assert ch.vma_list == []          # no anon_vma for the zero page


def test_second_write_to_same_page_changes_contents_only():
    m, p = machine()
    a = p.mmap(0, PAGE, RW, ANON)
    p.write(a, b"a")
    pfn = p.pagemap(a).pfn
    p.write(a, b"b")
    ch = last(m)
    assert ch.vma_list == [] and ch.ptes == []
    [fc] = ch.frames
    assert fc.pfn == pfn and fc.kind == "changed" and fc.fields == ("data",)
    assert ch.frames_changed == [pfn]


def test_fork_and_cow():
    m, p = machine()
    a = p.mmap(0, PAGE, RW, ANON)
    p.write(a, b"x")
    pfn = p.pagemap(a).pfn
    child = p.fork()
    ch = last(m)
    assert ch.pids_added == [child.pid] and ch.pids_removed == []
    assert all(c.kinds == ("added",) for c in ch.vmas[child.pid])
    assert len(ch.vmas[child.pid]) == child.mm.map_count
    fc = ch.frame_change(pfn)
    assert fc.kind == "changed" and (fc.before.mapcount, fc.after.mapcount) == (1, 2)
    assert "anon_exclusive" in fc.fields
    assert len(ch.anon_vmas_added) >= 1          # the child's anon_vma for the VMA
    # the parent's PTE is write-protected
    parent_pte = ch.pte_change(p.pid, a)
    assert parent_pte is not None and "ro" in str(parent_pte).split("->")[1]
    assert ch.pid_changed(child.pid) and ch.pid_changed(p.pid)

    child.write(a, b"y")                           # COW: the child copies
    ch = last(m)
    new = child.pagemap(a).pfn
    assert new != pfn
    assert ch.frame_change(new).kind == "allocated"
    assert ch.frame_change(pfn).after.mapcount == 1
    assert [c.pid for c in ch.ptes if c.address == a] == [child.pid]


def test_exit_removes_the_process():
    m, p = machine()
    q = m.spawn()
    a = q.mmap(0, PAGE, RW, ANON)
    q.write(a, b"z")
    pfn = q.pagemap(a).pfn
    q.exit()
    ch = last(m)
    assert ch.pids_removed == [q.pid]
    assert {c.pid for c in ch.vma_list} == {q.pid}
    assert all(c.kinds == ("removed",) for c in ch.vma_list)
    assert pfn in ch.frames_freed
    assert not ch.vmas.get(p.pid) and ch.vmas[p.pid].removed == []


def test_tlb_shootdown_on_two_cpus():
    m, p = machine(cpus=2)
    a = p.mmap(0, 4 * PAGE, RW, ANON)
    t = p.clone_thread(cpu=1)
    t.write(a, b"hi")
    ch = last(m)
    assert [c.cpu for c in ch.tlb] == [1]
    assert any(addr == a for _, addr in ch.tlb[0].filled)
    p.munmap(a, 4 * PAGE)
    ch = last(m)
    assert sorted({f.cpu for f in ch.tlb_flushes}) == [0, 1]
    assert {f.reason for f in ch.tlb_flushes} >= {"TLB_REMOTE_SEND_IPI", "TLB_REMOTE_SHOOTDOWN"}
    assert ch.tlb_changed(1)
    cpu1 = next(c for c in ch.tlb if c.cpu == 1)
    assert any(addr == a for _, addr in cpu1.dropped) and cpu1.flushes >= 1


def test_flushes_from_the_live_log_without_a_record():
    m, p = machine(cpus=2)
    a = p.mmap(0, PAGE, RW, ANON)
    t = p.clone_thread(cpu=1)
    t.write(a, b"hi")
    before = m.timeline.state(len(m.timeline))   # the live machine, pickled copy below
    import pickle
    before = pickle.loads(pickle.dumps(before))
    p.munmap(a, PAGE)
    ch = step_changes(before, m)
    assert [str(f) for f in ch.tlb_flushes] == [str(f) for f in m.last_step.tlb_flushes]


def test_brk_and_errors_change_nothing_but_brk():
    m, p = machine()
    old = p.mm.brk
    p.brk(old + 2 * PAGE)
    ch = last(m)
    assert ch.brk == {p.pid: (old, old + 2 * PAGE)}
    assert ch.vmas[p.pid].resized           # the heap VMA grew
    with pytest.raises(OSError):
        p.munmap(1, PAGE)                   # EINVAL: unaligned
    assert not last(m)


def test_lines_are_the_text_alternative():
    m, p = machine()
    a = p.mmap(0, PAGE, RW, ANON)
    p.write(a, b"x")
    text = str(last(m))
    assert f"pte {a:#x}: none -> pfn" in text
    assert "anon_vma #" in text and "created" in text
    assert "allocated (anon)" in text


# -- seeded random runs: the diff agrees with both machines, narration never breaks -----------

def _random_run(seed, steps=60):
    import random
    from vmwidgets.core.errors import BusError, ProcessKilled
    rng = random.Random(seed)
    m = vw.Machine(ram="8M", swap="1M", cpus=2)
    procs = [m.spawn()]
    for _ in range(steps):
        procs = [p for p in procs if p.alive]
        if not procs:
            procs.append(m.spawn())
        p = rng.choice(procs)
        vmas = [v for v in p.mm.mm_mt if v.vm_start >= 0x100000000000 and v.vm_end < 0x100001000000]
        v = rng.choice(vmas) if vmas else None
        base = 0x100000000000 + rng.randrange(64) * PAGE
        what = rng.choice(["mmap", "mmap", "mmap", "write", "write", "read", "munmap",
                           "mprotect", "madvise", "fork", "exit", "reclaim", "mremap", "brk"])
        try:
            if what == "mmap":
                prot = rng.choice([vw.PROT_READ, RW, RW, vw.PROT_READ | vw.PROT_EXEC])
                p.mmap(base, rng.randrange(1, 6) * PAGE, prot, ANON | vw.MAP_FIXED)
            elif what in ("write", "read") and v is not None:
                addr = rng.randrange(v.vm_start, v.vm_end)
                p.write(addr, b"w") if what == "write" else p.read(addr, 1)
            elif what == "munmap":
                p.munmap(base, rng.randrange(1, 8) * PAGE)
            elif what == "mprotect":
                p.mprotect(base, rng.randrange(1, 8) * PAGE, rng.choice([vw.PROT_READ, RW]))
            elif what == "madvise" and v is not None:
                p.madvise(v.vm_start, v.vm_end - v.vm_start, rng.choice([vw.MADV_DONTNEED, vw.MADV_FREE]))
            elif what == "fork" and len(procs) < 3:
                procs.append(p.fork())
            elif what == "exit" and len(procs) > 1:
                p.exit()
            elif what == "reclaim":
                m.reclaim(rng.randrange(1, 8))
            elif what == "mremap" and v is not None:
                p.mremap(v.vm_start, v.vm_end - v.vm_start, (v.vm_end - v.vm_start) + PAGE,
                         vw.MREMAP_MAYMOVE)
            elif what == "brk":
                p.brk(p.mm.brk + rng.choice([-1, 1, 2]) * PAGE)
        except (OSError, vw.SegmentationFault, BusError, ProcessKilled):
            pass
    return m


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_runs_diff_agrees_with_both_states(seed):
    from vmwidgets.core import pgtable
    from vmwidgets.views.narration import narrate
    m = _random_run(seed)
    before = m.timeline.state(0)
    for i in range(len(m.timeline)):
        after = m.timeline.state(i + 1)
        rec = m.timeline.record(i)
        ch = step_changes(before, after, rec)
        for pid in {p.pid for p in before.processes} | {p.pid for p in after.processes}:
            ids_a = {v.id for p in before.processes if p.pid == pid for v in p.mm.mm_mt}
            ids_b = {v.id for p in after.processes if p.pid == pid for v in p.mm.mm_mt}
            pv = ch.vmas.get(pid, PidVmaChanges())
            assert ids_b == (ids_a - {c.id for c in pv.removed}) | {c.id for c in pv.added}, (i, rec)
            pages_a = {a for p in before.processes if p.pid == pid for v in p.mm.mm_mt
                       for a in range(v.vm_start, v.vm_end, PAGE)}
            pages_b = {a for p in after.processes if p.pid == pid for v in p.mm.mm_mt
                       for a in range(v.vm_start, v.vm_end, PAGE)}
            got_un = {a for s, e in ch.ranges_unmapped(pid) for a in range(s, e, PAGE)}
            got_map = {a for s, e in ch.ranges_mapped(pid) for a in range(s, e, PAGE)}
            assert got_un == pages_a - pages_b and got_map == pages_b - pages_a, (i, rec)
            for c in pv:
                if c.after is not None:
                    proc = next(p for p in after.processes if p.pid == pid)
                    vma = proc.mm.vma_lookup(c.after.start)
                    assert (vma.id, vma.vm_end, vma.perms()) == (c.id, c.after.end, c.after.perms)
        for c in ch.ptes:
            proc = next((p for p in after.processes if p.pid == c.pid), None)
            assert pgtable.get_pte(proc.mm, c.address) == c.new if proc else c.new == 0
        for f in ch.frames:
            kind = after.phys.pages[f.pfn].kind
            assert (kind == "free") == (f.kind == "freed"), (i, f)
        assert [str(x) for x in ch.tlb_flushes] == [str(x) for x in rec.tlb_flushes]
        text = narrate(rec, before, after, ch)
        assert text.startswith(f"Step {i}: ")
        before = after
