"""Regressions in narrate(): reasons and wordings the lesson writers found wrong.

Each test builds the case on a real machine and checks the corrected sentence and the
absence of the wrong one.
"""

import vmwidgets as vw
from vmwidgets.views import narrate_step

RW = vw.PROT_READ | vw.PROT_WRITE
FIXED = vw.MAP_PRIVATE | vw.MAP_ANONYMOUS | vw.MAP_FIXED
B = 0x10000000
PAGE = 4096


def test_mprotect_refusal_reads_flags_after_vm_account():
    """rw-written | r-- | rw-written, mprotect the middle to rw: mprotect_fixup() adds
    VM_ACCOUNT before vma_modify_flags(), so the next VMA is refused for its other
    anon_vma, not for VM_ACCOUNT."""
    m = vw.Machine(ram="16M")
    p = m.spawn()
    p.mmap(B, PAGE, RW, FIXED)
    p.write(B, b"x")
    p.mmap(B + PAGE, PAGE, vw.PROT_READ, FIXED)
    p.mmap(B + 2 * PAGE, PAGE, RW, FIXED)
    p.write(B + 2 * PAGE, b"y")
    prev_av = p.mm.vma_lookup(B).anon_vma.id
    next_av = p.mm.vma_lookup(B + 2 * PAGE).anon_vma.id
    p.mprotect(B + PAGE, PAGE, RW)
    text = narrate_step(m)
    assert (f"it did not also merge with the next VMA [{B + 2 * PAGE:#x}-{B + 3 * PAGE:#x} "
            f"rw-p], which has another anon_vma (#{next_av} vs #{prev_av})") in text
    assert "VM_ACCOUNT differ" not in text


def test_mprotect_merge_counts_the_ranges_own_anon_vma():
    """A range whose VMA has an anon_vma merges into a neighbour without one: not
    "neither has an anon_vma"."""
    m = vw.Machine(ram="16M")
    p = m.spawn()
    p.mmap(B + PAGE, PAGE, RW, FIXED)
    p.write(B + PAGE, b"x")
    p.mprotect(B + PAGE, PAGE, vw.PROT_READ)
    p.mmap(B, PAGE, RW, FIXED)
    av = p.mm.vma_lookup(B + PAGE).anon_vma.id
    assert p.mm.vma_lookup(B).anon_vma is None
    p.mprotect(B + PAGE, PAGE, RW)
    assert p.mm.vma_lookup(B).vm_end == B + 2 * PAGE
    assert p.mm.vma_lookup(B).anon_vma.id == av
    text = narrate_step(m)
    assert "neither has an anon_vma" not in text
    assert (f"the neighbour has no anon_vma while the range's VMA has #{av}, which is "
            f"compatible: the merged VMA takes over #{av}") in text


def test_in_place_change_then_absorbing_the_next_vma():
    """One mprotect changes [A] in place, then merges [B] into it: the first sentence
    tells A's own new range, then the absorption, in the call tree's order."""
    m = vw.Machine(ram="16M")
    p = m.spawn()
    p.mmap(B, PAGE, vw.PROT_READ, FIXED)
    p.mmap(B + PAGE, PAGE, RW, FIXED)
    p.mprotect(B, 2 * PAGE, vw.PROT_READ | vw.PROT_EXEC)
    text = narrate_step(m)
    assert f"changed in place to [{B:#x}-{B + 2 * PAGE:#x}" not in text
    first = text.splitlines()[1]
    assert first.startswith(f"The whole VMA [{B:#x}-{B + PAGE:#x} r--p] changed its flags "
                            f"in place to [{B:#x}-{B + PAGE:#x} r-xp].")
    assert (f"Then it absorbed the next VMA [{B + PAGE:#x}-{B + 2 * PAGE:#x} rw-p], as told "
            f"next, and ended as [{B:#x}-{B + 2 * PAGE:#x} r-xp].") in first


# -- TLB records ------------------------------------------------------------------------


def test_task_switch_without_flush_says_nothing_was_flushed():
    """pages:0 on a task switch: the PCID slot was up to date, nothing was flushed."""
    m = vw.Machine(ram="16M", cpus=2)
    p = m.spawn()
    q = m.spawn()
    m.switch_to(0, p)
    m.switch_to(0, q)
    m.switch_to(0, p)
    assert [f.pages for f in m.last_step.tlb_flushes] == [0]
    text = narrate_step(m)
    assert "flushed that PCID's stale entries" not in text
    assert (f"TLB: CPU 0 switched to pid {p.pid}'s address space and kept its PCID's "
            "entries: nothing was flushed (flush on task switch, pages:0)") in text


def test_task_switch_with_flush_says_why():
    """pages:-1 on a task switch: a new PCID slot, or one whose tlb_gen fell behind."""
    m = vw.Machine(ram="16M", cpus=2)
    p = m.spawn()
    q = m.spawn()
    m.switch_to(0, p)
    m.switch_to(0, q)
    assert [f.pages for f in m.last_step.tlb_flushes] == [-1]
    text = narrate_step(m)
    assert "flushed that PCID's stale entries" not in text
    assert ("flushed the entries of the PCID it uses (flush on task switch, pages:-1): no "
            "PCID slot on this CPU held this address space") in text


def _lazy_cpu_machine():
    m = vw.Machine(ram="16M", cpus=2)
    p = m.spawn()
    a = p.mmap(0, PAGE, RW, vw.MAP_PRIVATE | vw.MAP_ANONYMOUS)
    m.switch_to(0, p)
    t = p.clone_thread(cpu=1)
    t.write(a, b"x")
    m.switch_to(1, None)                 # CPU 1 goes idle: lazy TLB, p's mm stays loaded
    return m, p, t, a


def test_lazy_cpu_is_skipped_not_sent_an_ipi():
    m, p, t, a = _lazy_cpu_machine()
    p.mprotect(a, PAGE, vw.PROT_READ)
    reasons = [f.reason for f in m.last_step.tlb_flushes]
    assert "TLB_REMOTE_SEND_IPI" in reasons and "TLB_REMOTE_SHOOTDOWN" not in reasons
    text = narrate_step(m)
    assert "an IPI went to the other CPUs" not in text
    assert ("the remote IPI send tracepoint fired, but CPU 1 is in lazy-TLB mode, so "
            "should_flush_tlb() skipped it: no IPI was received; it will flush when it "
            "switches back to this address space") in text
    m.switch_to(1, t)                    # and so it does
    assert [f.pages for f in m.last_step.tlb_flushes] == [-1]
    assert "its tlb_gen moved on" in narrate_step(m)


def test_full_flush_names_only_the_pcids_entries():
    m = vw.Machine(ram="16M")
    p = m.spawn()
    n = 40
    b = p.mmap(0, n * PAGE, RW, vw.MAP_PRIVATE | vw.MAP_ANONYMOUS)
    p.write(b, b"y" * n * PAGE)
    p.mprotect(b, n * PAGE, vw.PROT_READ)
    assert -1 in [f.pages for f in m.last_step.tlb_flushes]
    text = narrate_step(m)
    assert "flushed all its entries" not in text
    assert (f"CPU 0 flushed all pid {p.pid}'s entries (its PCID's non-global entries; "
            "global kernel entries and other processes' entries, under other PCIDs, stay) "
            "locally") in text


def test_reclaim_flush_names_every_process_whose_ptes_were_cleared():
    from vmwidgets.views.narration import narrate
    m, _ = vw.scenarios.get("reclaim-rmap-swap").run()
    i = next(i for i in range(len(m.timeline)) if m.timeline.record(i).op.call == "reclaim")
    rec = m.timeline.record(i)
    assert {f.pid for f in rec.tlb_flushes} == {1}
    text = narrate(rec, m.timeline.state(i), m.timeline.state(i + 1))
    assert "TLB: reclaim changed pid 1's translations" not in text
    assert ("TLB: reclaim cleared PTEs of pid 1 and pid 2, but only CPUs that had pid 1's "
            "address space loaded needed a flush (pid 2 was loaded on no CPU)") in text


def test_two_opens_of_one_file_refuse_with_that_reason():
    """Two open(2)s of one file, mapped at continuing offsets: two VMAs (is_mergeable_vma
    compares the struct file), and the narration says so instead of 'could not merge'."""
    import os
    m = vw.Machine(ram="16M")
    p = m.spawn()
    m.create_file("/d", b"x" * 16384)
    f1, f2 = p.open("/d", os.O_RDONLY), p.open("/d", os.O_RDONLY)
    p.mmap(0x10000000, 0x2000, vw.PROT_READ, vw.MAP_PRIVATE | vw.MAP_FIXED, f1, 0)
    p.mmap(0x10002000, 0x2000, vw.PROT_READ, vw.MAP_PRIVATE | vw.MAP_FIXED, f2, 0x2000)
    text = vw.views.narrate_step(m)
    assert "maps /d through another open file description" in text
    assert "could not merge" not in text
