"""narrate() and trace_view(): each scenario's narration names the path the kernel took,
the addresses involved, which VMA survives and why; trace_view cuts the tree at a depth.

Every test runs real steps and reads the narration of one of them; the key facts are
computed from the machine (addresses, PFNs, anon_vma ids), not written in by hand.
"""

import os

import pytest

import vmwidgets as vw
from vmwidgets.views.narration import narrate, op_text, trace_rows, trace_view

RW = vw.PROT_READ | vw.PROT_WRITE
ANON = vw.MAP_PRIVATE | vw.MAP_ANONYMOUS
PAGE = 4096


def told(m):
    """The narration of the machine's last step."""
    n = len(m.timeline)
    return narrate(m.last_step, m.timeline.state(n - 1), m.timeline.state(n))


def attempt(fn):
    try:
        fn()
    except (OSError, vw.SegmentationFault):
        return
    raise AssertionError("the call was expected to fail")


def r(start, end, perms=""):
    return f"[{start:#x}-{end:#x}" + (f" {perms}]" if perms else "")


@pytest.fixture
def mp():
    m = vw.Machine(ram="16M")
    return m, m.spawn()


def test_first_line_names_the_call_with_constants_and_result(mp):
    m, p = mp
    a = p.mmap(0, 2 * PAGE, RW, ANON)
    first = told(m).splitlines()[0]
    assert first == (f"Step 1: pid {p.pid}: mmap(0, 0x2000, PROT_READ|PROT_WRITE, "
                     f"MAP_PRIVATE|MAP_ANONYMOUS) = {a:#x}.")


def test_new_mapping_that_merges_with_nothing(mp):
    m, p = mp
    a = p.mmap(0, 2 * PAGE, RW, ANON)
    text = told(m)
    assert f"placed the new mapping at {r(a, a + 2 * PAGE)}]" in text
    assert f"A new VMA {r(a, a + 2 * PAGE, 'rw-p')} was created (__mmap_new_vma)" in text
    # the VMA above is [vvar]: a special mapping never merges
    assert "[vvar]] is a special mapping (VM_PFNMAP|VM_IO|VM_DONTEXPAND): no merge" in text
    assert "no previous VMA touches it" in text
    assert "In all: 1 VMA added." in text


def test_merge_with_next(mp):
    m, p = mp
    a = p.mmap(0, 2 * PAGE, RW, ANON)
    b = p.mmap(0, PAGE, RW, ANON)
    assert b == a - PAGE
    text = told(m)
    assert "No new VMA: vma_merge_new_range() merged the range into the next VMA" in text
    assert f"{r(a, a + 2 * PAGE, 'rw-p')}, which grew down to {r(b, a + 2 * PAGE, 'rw-p')}" in text
    assert "because they touch, have the same flags (rw-p), are both anonymous" in text
    assert "In all: 1 VMA changed." in text


def test_merge_with_prev(mp):
    m, p = mp
    a = p.mmap(0, 4 * PAGE, RW, ANON)
    p.munmap(a + 2 * PAGE, 2 * PAGE)        # leaves [a, a+2P), a hole above it
    p.mmap(a + 2 * PAGE, PAGE, RW, ANON | vw.MAP_FIXED)
    text = told(m)
    assert "MAP_FIXED put the mapping exactly at" in text
    assert (f"merged the range into the previous VMA {r(a, a + 2 * PAGE, 'rw-p')}, which grew "
            f"up to {r(a, a + 3 * PAGE, 'rw-p')}") in text


def test_merge_with_both_neighbours_removes_next(mp):
    m, p = mp
    a = p.mmap(0, 5 * PAGE, RW, ANON)
    p.munmap(a + 2 * PAGE, PAGE)
    p.mmap(a + 2 * PAGE, PAGE, RW, ANON | vw.MAP_FIXED)
    text = told(m)
    assert "merged the range with both neighbours" in text
    assert f"the previous VMA {r(a, a + 2 * PAGE, 'rw-p')} grew over it" in text
    assert f"the next VMA {r(a + 3 * PAGE, a + 5 * PAGE, 'rw-p')}, which was removed" in text
    assert f"the result is {r(a, a + 5 * PAGE, 'rw-p')}" in text
    assert "the range and both neighbours touch" in text


def test_refused_merge_names_the_different_permissions(mp):
    m, p = mp
    a = p.mmap(0, 2 * PAGE, RW, ANON)
    b = p.mmap(0, PAGE, vw.PROT_READ, ANON)
    text = told(m)
    assert f"A new VMA {r(b, a, 'r--p')} was created" in text
    assert f"the next VMA {r(a, a + 2 * PAGE, 'rw-p')} has other permissions (rw-p vs r--p)" in text


def test_refused_merge_because_of_different_anon_vmas(mp):
    m, p = mp
    a = p.mmap(0, 2 * PAGE, RW, ANON)
    p.munmap(a, PAGE)
    p.write(a + PAGE, b"x")                  # [a+P, a+2P) gets anon_vma #X
    b = p.mmap(a - PAGE, PAGE, RW, ANON | vw.MAP_FIXED)
    p.write(b, b"y")                         # [a-P, a) gets its own anon_vma #Y
    av_low = p.mm.vma_lookup(b).anon_vma.id
    av_high = p.mm.vma_lookup(a + PAGE).anon_vma.id
    assert av_low != av_high
    p.mmap(a, PAGE, RW, ANON | vw.MAP_FIXED)     # fills the hole between them
    text = told(m)
    # prev can take it (the range has no anon_vma), but not both: their anon_vmas differ
    assert "vma_merge_new_range() merged the range into the previous VMA" in text
    assert f"(the merged VMA keeps #{av_low})" in text


def test_munmap_in_the_middle_splits_and_frees(mp):
    m, p = mp
    a = p.mmap(0, 3 * PAGE, RW, ANON)
    p.write(a + PAGE, b"x")
    pfn = p.pagemap(a + PAGE).pfn
    p.munmap(a + PAGE, PAGE)
    text = told(m)
    assert f"__split_vma() cut {r(a, a + 3 * PAGE, 'rw-p')} at {a + PAGE:#x}, because the range starts inside" in text
    assert f"at {a + 2 * PAGE:#x}, because the range ends inside that VMA" in text
    assert f"Unmapped {r(a + PAGE, a + 2 * PAGE, 'rw-p')}." in text
    assert (f"What remains of the VMAs: {r(a, a + PAGE, 'rw-p')}, "
            f"{r(a + 2 * PAGE, a + 3 * PAGE, 'rw-p')}.") in text
    assert f"zap_pte_range() cleared 1 PTE; 1 frame went back to the free list ({pfn:#x})" in text


def test_munmap_of_nothing(mp):
    m, p = mp
    p.munmap(0x10000, PAGE)
    text = told(m)
    assert "Nothing was mapped in [0x10000-0x11000]; munmap succeeds anyway" in text


def test_mprotect_split_in_three(mp):
    m, p = mp
    a = p.mmap(0, 3 * PAGE, RW, ANON)
    p.mprotect(a + PAGE, PAGE, vw.PROT_READ)
    text = told(m)
    assert f"mprotect split {r(a, a + 3 * PAGE, 'rw-p')} in 3 (split_vma at {a + PAGE:#x}, {a + 2 * PAGE:#x})" in text
    assert f"{r(a + PAGE, a + 2 * PAGE, 'r--p')}" in text
    assert "the range is in the middle of the VMA, so it touches no neighbour" in text
    assert "no PTE had to change" in text


def test_mprotect_refused_merge_because_of_vm_account(mp):
    m, p = mp
    a = p.mmap(0, 2 * PAGE, vw.PROT_READ, ANON)      # read-only: not charged, no VM_ACCOUNT
    b = p.mmap(0, 3 * PAGE, RW, ANON)                 # writable private: VM_ACCOUNT
    assert b + 3 * PAGE == a
    p.write(b + 2 * PAGE, b"x")                       # an anon_vma: mprotect keeps the charge
    p.mprotect(b + PAGE, 2 * PAGE, vw.PROT_READ)
    text = told(m)
    assert f"mprotect split {r(b, b + 3 * PAGE, 'rw-p')} in 2 (split_vma at {b + PAGE:#x})" in text
    assert (f"No merge: the next VMA {r(a, a + 2 * PAGE, 'r--p')} has other flags "
            "(VM_ACCOUNT differ") in text
    # the present page's PTE lost its write bit
    assert f"change_protection() rewrote 1 present PTE (e.g. {b + 2 * PAGE:#x}: pfn" in text
    assert "rw dirty -> pfn" in text and "ro dirty" in text


def test_mprotect_upper_part_merges_with_next(mp):
    m, p = mp
    a = p.mmap(0, 2 * PAGE, vw.PROT_READ, ANON)
    b = p.mmap(0, 3 * PAGE, RW, ANON)       # just below a, not merged (perms differ)
    p.mprotect(b + PAGE, 2 * PAGE, vw.PROT_READ)   # no anon_vma: VM_ACCOUNT is dropped
    text = told(m)
    assert (f"mprotect changed {r(b + PAGE, b + 3 * PAGE)}] of {r(b, b + 3 * PAGE, 'rw-p')}: "
            f"vma_merge_existing_range() merged it with the next VMA {r(a, a + 2 * PAGE, 'r--p')}") in text
    assert "because under the new permissions they touch, have the same flags (r--p)" in text
    assert f"The merged VMA is {r(b + PAGE, a + 2 * PAGE, 'r--p')}" in text
    assert f"the rest of the old VMA stays {r(b, b + PAGE, 'rw-p')} (it shrank, no split was needed)" in text
    assert "no PTE had to change" in text


def test_mprotect_back_merges_both(mp):
    m, p = mp
    a = p.mmap(0, 3 * PAGE, RW, ANON)
    p.mprotect(a + PAGE, PAGE, vw.PROT_READ)
    p.mprotect(a + PAGE, PAGE, RW)
    text = told(m)
    assert "vma_merge_existing_range() merged it with both neighbours" in text
    assert f"The merged VMA is {r(a, a + 3 * PAGE, 'rw-p')}" in text
    assert "2 VMAs removed" in text


def test_mprotect_refused_merge_reason_at_the_edge(mp):
    m, p = mp
    a = p.mmap(0, 2 * PAGE, vw.PROT_READ | vw.PROT_EXEC, ANON)
    b = p.mmap(0, 2 * PAGE, RW, ANON)
    p.mprotect(b + PAGE, PAGE, vw.PROT_READ)
    text = told(m)
    assert f"mprotect split {r(b, b + 2 * PAGE, 'rw-p')} in 2 (split_vma at {b + PAGE:#x})" in text
    assert f"No merge: the next VMA {r(a, a + 2 * PAGE, 'r-xp')} has other permissions (r-xp vs r--p)" in text


def test_first_write_fault_creates_anon_vma(mp):
    m, p = mp
    a = p.mmap(0, 2 * PAGE, RW, ANON)
    p.write(a, b"hi")
    pfn = p.pagemap(a).pfn
    av = p.mm.vma_lookup(a).anon_vma.id
    text = told(m)
    assert f"A write fault at {a:#x} in {r(a, a + 2 * PAGE, 'rw-p')}: first touch of an anonymous page (do_anonymous_page)" in text
    assert f"__anon_vma_prepare() created anon_vma #{av}" in text
    assert f"pfn {pfn:#x}, was allocated" in text and f"(none -> pfn {pfn:#x} rw dirty)" in text
    assert "1 frame allocated; 1 page-table page allocated; 1 anon_vma created" in text


def test_read_fault_maps_the_zero_page(mp):
    m, p = mp
    a = p.mmap(0, PAGE, RW, ANON)
    p.read(a, 4)
    text = told(m)
    assert f"A read fault at {a:#x}" in text
    assert "mapped the shared zero page read-only (pfn 0x1); no frame is allocated" in text
    assert "frame allocated" not in text.replace("page-table page allocated", "")


def test_write_after_zero_page(mp):
    m, p = mp
    a = p.mmap(0, PAGE, RW, ANON)
    p.read(a, 1)
    p.write(a, b"x")
    text = told(m)
    assert "mapped the shared zero page read-only, which is never written" in text
    assert f"pfn {p.pagemap(a).pfn:#x}, mapped writable" in text
    assert "created anon_vma #" in text


def test_cow_copy_after_fork_and_reuse_after_exit(mp):
    m, p = mp
    a = p.mmap(0, PAGE, RW, ANON)
    p.write(a, b"x")
    old = p.pagemap(a).pfn
    child = p.fork()
    child.write(a, b"c")
    new = child.pagemap(a).pfn
    text = told(m)
    assert "copy-on-write" in text
    assert f"pfn {old:#x} is shared (refcount 2), so wp_page_copy() copied it" in text
    assert f"into a new frame, pfn {new:#x}" in text
    assert f"pfn {old:#x} is now mapped 1 time(s)" in text
    assert "local MM shootdown (1 page)" in text or "flushed 1 page locally" in text

    child2 = p.fork()
    child2.exit()
    p.write(a, b"p")
    text = told(m)
    assert f"wp_can_reuse_anon_folio() found pfn {old:#x} used by this process alone (refcount 1)" in text
    assert "wp_page_reuse() just made the PTE writable again: no copy" in text
    assert "frame allocated" not in text


def test_fork(mp):
    m, p = mp
    a = p.mmap(0, PAGE, RW, ANON)
    p.write(a, b"x")
    pfn = p.pagemap(a).pfn
    child = p.fork()
    text = told(m)
    assert f"= pid {child.pid}." in text.splitlines()[0]
    assert f"fork created pid {child.pid}: dup_mmap() copied {child.mm.map_count} VMAs of pid {p.pid}" in text
    new_avs = sorted(set(m.anon_vmas) - set(m.timeline.state(len(m.timeline) - 1).anon_vmas))
    assert "gave it a new anon_vma of its own (" + ", ".join(f"#{i}" for i in new_avs) + ")" in text
    assert f"{pfn:#x}" in text and "write-protected" in text
    assert "fork flushes the parent's whole address space (flush_tlb_mm)" in text


def test_exit_frees_private_frames_and_keeps_shared_ones(mp):
    m, p = mp
    a = p.mmap(0, 2 * PAGE, RW, ANON)
    p.write(a, b"shared")
    shared = p.pagemap(a).pfn
    child = p.fork()
    child.write(a + PAGE, b"own")
    own = child.pagemap(a + PAGE).pfn
    child.exit()
    text = told(m)
    assert f"pid {child.pid} exited: exit_mmap() unmapped all" in text
    assert f"went back to the free list ({own:#x})" in text
    assert f"pfn {shared:#x} mapcount 2 -> 1" in text
    assert "anon_vma #" in text and "freed" in text


def test_tlb_shootdown_on_two_cpus():
    m = vw.Machine(ram="16M", cpus=2)
    p = m.spawn()
    a = p.mmap(0, 4 * PAGE, RW, ANON)
    t = p.clone_thread(cpu=1)
    t.write(a, b"x")
    assert told(m).startswith(f"Step {len(m.timeline) - 1}: tid {t.tid} (pid {p.pid}): write(")
    p.write(a + PAGE, b"y")
    assert told(m).startswith(f"Step {len(m.timeline) - 1}: pid {p.pid}: write(")
    p.munmap(a, 4 * PAGE)
    text = told(m)
    assert "CPU 0 flushed 2 pages locally (local MM shootdown)" in text
    assert "CPU 0 sent a flush IPI (remote IPI send) to CPU 1, which flushed 2 pages (remote shootdown)" in text
    assert "CPU 1 was running this address space" in text and "TLB shootdown" in text


def test_clone_thread_result_is_the_thread():
    m = vw.Machine(ram="16M", cpus=2)
    p = m.spawn()
    t = p.clone_thread(cpu=1)
    text = told(m)
    assert f"= tid {t.tid}." in text.splitlines()[0]
    assert "shares pid 1's address space (CLONE_VM)" in text
    assert "CPU 1 switched to pid 1's address space" in text


def test_einval_with_reason(mp):
    m, p = mp
    attempt(lambda: p.munmap(0x10001, PAGE))
    text = told(m)
    assert text.splitlines()[0].endswith("failed: EINVAL.")
    assert "Why: address 0x10001 is not page aligned." in text
    assert "Nothing changed" in text


def test_enomem_from_max_map_count(mp):
    m, p = mp
    a = p.mmap(0, 3 * PAGE, RW, ANON)
    m.sysctl["vm.max_map_count"] = p.mm.map_count
    attempt(lambda: p.mprotect(a + PAGE, PAGE, vw.PROT_READ))
    text = told(m)
    assert "failed: ENOMEM." in text
    assert f"Why: splitting the VMA at {a + PAGE:#x} would exceed vm.max_map_count" in text


def test_sigsegv_maperr_and_accerr(mp):
    m, p = mp
    attempt(lambda: p.read(0x1000, 1))
    text = told(m)
    assert "failed: SIGSEGV." in text
    assert "The read at 0x1000 faulted and bad_area_nosemaphore() sent SIGSEGV with si_code SEGV_MAPERR" in text
    assert "no VMA maps that address" in text
    a = p.mmap(0, PAGE, vw.PROT_READ, ANON)
    attempt(lambda: p.write(a, b"x"))
    text = told(m)
    assert f"The write at {a:#x} faulted and bad_area_access_error() sent SIGSEGV with si_code SEGV_ACCERR" in text
    assert "r--p: not writable" in text


def test_file_faults(mp):
    m, p = mp
    m.create_file("/data", b"hello" * 3000)
    fd = p.open("/data", os.O_RDWR)
    f = p.mmap(0, 4 * PAGE, vw.PROT_READ, vw.MAP_PRIVATE, fd, 0)
    text = told(m)
    assert f"A new VMA {r(f, f + 4 * PAGE)} r--p /data] was created" in text
    p.read(f, 1)
    text = told(m)
    assert "do_read_fault() mapped the file's page from the page cache" in text
    assert "fault-around (do_fault_around) mapped 4 pages" in text
    g = p.mmap(0, PAGE, RW, vw.MAP_PRIVATE, fd, 0)
    p.write(g, b"x")
    assert "do_cow_fault() copied the file's page" in told(m)
    h = p.mmap(0, PAGE, RW, vw.MAP_SHARED, fd, 0)
    p.write(h, b"x")
    assert "do_shared_fault() mapped the file's page-cache page writable" in told(m)


def test_brk_grow_and_shrink(mp):
    m, p = mp
    old = p.mm.brk
    p.brk(old + 2 * PAGE)
    text = told(m)
    assert f"the break moved up from {old:#x} to {old + 2 * PAGE:#x}" in text
    assert "merged the range into the previous VMA" in text and "[heap]" in text
    p.brk(old + PAGE)
    text = told(m)
    assert f"the break moved down from {old + 2 * PAGE:#x} to {old + PAGE:#x}" in text
    assert f"Unmapped {r(old + PAGE, old + 2 * PAGE, 'rw-p')}" in text


def test_stack_growth(mp):
    m, p = mp
    low = p.mm.start_stack - 0x30000
    p.read(low, 1)
    text = told(m)
    assert "the stack VMA grew down to cover it (expand_downwards)" in text
    assert "Then the fault" in text and "zero page" in text


def test_madvise_dontneed_and_mremap_move(mp):
    m, p = mp
    a = p.mmap(0, 4 * PAGE, RW, ANON)
    p.write(a, b"a" * 2 * PAGE)
    p.madvise(a, 4 * PAGE, vw.MADV_DONTNEED)
    text = told(m)
    assert "madvise(" in text and "MADV_DONTNEED" in text
    assert "zap_pte_range() cleared 2 PTEs; 2 frames went back to the free list" in text
    b = p.mremap(a, 4 * PAGE, 8 * PAGE, vw.MREMAP_MAYMOVE)
    text = told(m)
    assert f"mremap moved {r(a, a + 4 * PAGE)}] to {r(b, b + 8 * PAGE)}]" in text


def test_access_without_fault(mp):
    m, p = mp
    a = p.mmap(0, PAGE, RW, ANON)
    p.write(a, b"x")
    p.write(a, b"y")
    text = told(m)
    assert "No page fault" in text
    assert f"Written into pfn {p.pagemap(a).pfn:#x}" in text


def test_spawn(mp):
    m, p = mp
    n = 1
    text = narrate(m.timeline.record(0), m.timeline.state(0), m.timeline.state(n))
    assert f"A new process, pid {p.pid}, as after exec: {p.mm.map_count} VMAs" in text


def test_bad_record_is_refused(mp):
    m, _ = mp
    with pytest.raises(TypeError, match="record must be a StepRecord"):
        narrate("step", m, m)
    with pytest.raises(TypeError, match="record must be a StepRecord"):
        trace_view(None)


def test_op_text_names_constants():
    from vmwidgets.core.timeline import Op
    assert op_text(Op(3, "mprotect", (0x1000, 0x2000, vw.PROT_READ | vw.PROT_EXEC))) == \
        "pid 3: mprotect(0x1000, 0x2000, PROT_READ|PROT_EXEC)"
    assert op_text(Op(1, "madvise", (0x1000, 0x1000, vw.MADV_FREE))) == \
        "pid 1: madvise(0x1000, 0x1000, MADV_FREE)"
    assert op_text(Op(1, "mmap", (0, 4096, vw.PROT_NONE, vw.MAP_SHARED | vw.MAP_FIXED, 3, 0))) == \
        "pid 1: mmap(0, 0x1000, PROT_NONE, MAP_SHARED|MAP_FIXED, 3, 0)"


# -- trace_view ------------------------------------------------------------------------------

def test_trace_view_full_matches_function_graph(mp):
    m, p = mp
    a = p.mmap(0, PAGE, RW, ANON)
    p.write(a, b"x")
    rec = m.last_step
    assert trace_view(rec) == rec.function_graph()


def test_trace_view_cut_at_depth(mp):
    m, p = mp
    a = p.mmap(0, PAGE, RW, ANON)
    p.write(a, b"x")
    rec = m.last_step
    text = trace_view(rec, depth=2, args=False)
    lines = text.splitlines()
    assert lines[0].endswith("write() {")
    assert lines[1].endswith("exc_page_fault() {")
    below = sum(1 for _ in rec.trace.find("do_user_addr_fault").walk()) - 1
    assert lines[2].endswith(f"do_user_addr_fault(); /* {below} calls below */")
    assert "handle_mm_fault" not in text
    with pytest.raises(ValueError, match="depth"):
        trace_view(rec, depth=0)


def test_trace_rows(mp):
    m, p = mp
    a = p.mmap(0, PAGE, RW, ANON)
    p.write(a, b"x")
    rows = trace_rows(m.last_step)
    funcs = [row[1] for row in rows]
    assert funcs[:3] == ["write", "exc_page_fault", "do_user_addr_fault"]
    dap = funcs.index("do_anonymous_page")
    depth, _, args, result, changes, hidden = rows[dap]
    assert args["address"] == f"{a:#x}" and result == "0" and hidden == 0
    assert any(c.startswith(f"pte {a:#x}: none -> pfn") for c in changes)
    cut = trace_rows(m.last_step, depth=1)
    assert [row[1] for row in cut] == ["write", "exc_page_fault"]
    assert cut[1][5] == len(rows) - 2


def test_without_trace():
    m = vw.Machine(ram="16M", trace=False)
    p = m.spawn()
    a = p.mmap(0, PAGE, RW, ANON)
    rec = m.last_step
    assert trace_view(rec).startswith("(no call tree")
    assert trace_rows(rec) == []
    text = narrate(rec, m.timeline.state(1), m)
    assert f"= {a:#x}." in text and "In all: 1 VMA added." in text


# -- every scenario of the library, every step -------------------------------------------

@pytest.mark.parametrize("name", vw.scenarios.names())
def test_every_library_scenario_narrates_every_step(name):
    m, _ = vw.scenarios.get(name).run()
    for i in range(len(m.timeline)):
        rec = m.timeline.record(i)
        text = narrate(rec, m.timeline.state(i), m.timeline.state(i + 1))
        first = text.splitlines()[0]
        assert first.startswith(f"Step {i}: "), first
        if rec.error:
            assert " failed: " in first
            assert len(text.splitlines()) >= 2          # the reason follows
        assert "?" not in text.replace("(?", "")        # no unparsed placeholders


def test_scenario_reclaim_names_rmap_and_swap_cache():
    m, _ = vw.scenarios.get("reclaim-rmap-swap").run()
    texts = [narrate(m.timeline.record(i), m.timeline.state(i), m.timeline.state(i + 1))
             for i in range(len(m.timeline))]
    reclaim = next(t for t in texts if "reclaim(" in t.splitlines()[0])
    assert "try_to_unmap() walked the reverse map (rmap_walk)" in reclaim
    assert "in 2 processes (pid 1, 2)" in reclaim and "went to swap" in reclaim
    swapins = [t for t in texts if "do_swap_page()" in t]
    assert "read the page back from swap" in swapins[0]
    assert "found the page still in the swap cache" in swapins[1]


def test_scenario_anon_vma_reuse_at_fork():
    m, _ = vw.scenarios.get("anon-vma-reuse-fork").run()
    last_fork = max(i for i in range(len(m.timeline)) if m.timeline.record(i).op.call == "fork")
    text = narrate(m.timeline.record(last_fork), m.timeline.state(last_fork),
                   m.timeline.state(last_fork + 1))
    assert "anon_vma_fork() reused an anon_vma that no VMA uses any more" in text
    assert "anon_vmas created" not in text


def test_scenario_skipped_flush_and_stale_tlb_hit():
    m, _ = vw.scenarios.get("tlb-shootdown-skipped").run()
    n = len(m.timeline)
    munmap = next(i for i in range(n) if m.timeline.record(i).op.call == "munmap")
    text = narrate(m.timeline.record(munmap), m.timeline.state(munmap), m.timeline.state(munmap + 1))
    assert "No TLB flush was made: the flush was skipped on purpose (inject_skip_flush)" in text
    text = narrate(m.timeline.record(n - 1), m.timeline.state(n - 1), m.timeline.state(n))
    assert "No page fault, but not because the page tables allow it" in text
    assert "CPU 1's TLB still mapped 0x100000000000 to pfn" in text
    assert "a frame now reused as another anon page" in text


def test_scenario_refused_merge_of_a_forked_vma():
    m, _ = vw.scenarios.get("merge-refused-fork-child").run()
    n = len(m.timeline)
    text = narrate(m.timeline.record(n - 1), m.timeline.state(n - 1), m.timeline.state(n))
    assert "was forked and still shares pages with its parent" in text


def test_merge_prev_but_not_next_because_of_anon_vmas():
    m, _ = vw.scenarios.get("merge-refused-anon-vma").run()
    i = 5                                    # the 4K mmap into the hole
    text = narrate(m.timeline.record(i), m.timeline.state(i), m.timeline.state(i + 1))
    assert "merged the range into the previous VMA" in text
    assert "it did not also merge with the next VMA [0x100000005000-0x100000009000 rw-p], which has another anon_vma" in text


# -- more paths ------------------------------------------------------------------------------

B = 0x100000000000


def test_map_fixed_over_the_middle_of_a_vma_merges_back(mp):
    m, p = mp
    p.mmap(B, 4 * PAGE, RW, ANON | vw.MAP_FIXED)
    p.mmap(B + PAGE, 2 * PAGE, RW, ANON | vw.MAP_FIXED)
    text = told(m)
    assert f"It replaced what was mapped there: {r(B, B + 4 * PAGE, 'rw-p')}" in text
    # the parts left of the old VMA on both sides are the neighbours the kernel merges with
    assert "merged the range with both neighbours" in text
    assert f"the previous VMA {r(B, B + PAGE, 'rw-p')} grew over it" in text
    assert f"the result is {r(B, B + 4 * PAGE, 'rw-p')}" in text


def test_mprotect_of_two_vmas_second_refusal_sees_the_first_changed(mp):
    m, p = mp
    p.mmap(B, 2 * PAGE, RW, ANON | vw.MAP_FIXED)
    p.write(B, b"a")
    p.mmap(B + 3 * PAGE, 2 * PAGE, RW, ANON | vw.MAP_FIXED)   # not adjacent: own anon_vma
    p.write(B + 3 * PAGE, b"b")
    p.mmap(B + 2 * PAGE, PAGE, RW, ANON | vw.MAP_FIXED)       # joins the lower one only
    av = [p.mm.vma_lookup(a).anon_vma.id for a in (B, B + 3 * PAGE)]
    assert av[0] != av[1] and len(p.mm.vmas_in(B, B + 5 * PAGE)) == 2
    p.mprotect(B, 5 * PAGE, vw.PROT_READ)
    text = told(m)
    first, second = [line for line in text.splitlines() if line.startswith("The whole VMA")]
    # the first VMA's next neighbour is still rw-p when the first is changed ...
    assert f"the next VMA {r(B + 3 * PAGE, B + 5 * PAGE, 'rw-p')} has other permissions (rw-p vs r--p)" in first
    # ... but when the second is changed, the first is already r--p: the anon_vmas differ
    assert f"the previous VMA {r(B, B + 3 * PAGE, 'r--p')} has another anon_vma (#{av[0]} vs #{av[1]})" in second


def test_madvise_dontfork_splits_and_sets_the_flag(mp):
    m, p = mp
    p.mmap(B, 4 * PAGE, RW, ANON | vw.MAP_FIXED)
    p.madvise(B, 2 * PAGE, vw.MADV_DONTFORK)
    text = told(m)
    assert f"madvise split {r(B, B + 4 * PAGE, 'rw-p')} in 2 (split_vma at {B + 2 * PAGE:#x})" in text
    assert f"The range {r(B, B + 2 * PAGE)}] now has vm_flags +VM_DONTCOPY." in text


def test_madvise_free_cleans_dirty_bits(mp):
    m, p = mp
    p.mmap(B, 2 * PAGE, RW, ANON | vw.MAP_FIXED)
    p.write(B, b"x")
    p.madvise(B, 2 * PAGE, vw.MADV_FREE)
    text = told(m)
    assert "MADV_FREE cleared the dirty bit of 1 PTE" in text
    assert "without writing them to swap" in text


def test_mremap_grow_in_place_and_shrink(mp):
    m, p = mp
    p.mmap(B, 4 * PAGE, RW, ANON | vw.MAP_FIXED)
    p.mremap(B, 4 * PAGE, 6 * PAGE, 0)
    text = told(m)
    assert f"mremap grew the mapping in place from {r(B, B + 4 * PAGE)}] to {r(B, B + 6 * PAGE)}]" in text
    p.write(B + 5 * PAGE, b"x")
    p.mremap(B, 6 * PAGE, 2 * PAGE, 0)
    text = told(m)
    assert f"the tail {r(B + 2 * PAGE, B + 6 * PAGE)}] was unmapped" in text
    assert "zap_pte_range() cleared 1 PTE; 1 frame went back to the free list" in text
    assert f"The mapping is now {r(B, B + 2 * PAGE, 'rw-p')}." in text


def test_mmap_hint_taken(mp):
    m, p = mp
    a = p.mmap(0x200000000000, PAGE, RW, ANON)
    assert a == 0x200000000000
    assert "The hint 0x200000000000 was free, so the kernel placed the mapping there" in told(m)


def test_brk_refused(mp):
    m, p = mp
    old = p.mm.brk
    assert p.brk(0x1000) == old
    text = told(m)
    assert f"refused to move the break to 0x1000 and returned the old break {old:#x}" in text


def test_oom_kill():
    m = vw.Machine(ram="160K")
    m.sysctl["vm.overcommit_memory"] = 1
    q = m.spawn()
    a = q.mmap(0, 64 * PAGE, RW, ANON)
    with pytest.raises(vw.ProcessKilled):
        for i in range(64):
            q.write(a + i * PAGE, b"x")
    text = told(m)
    assert "failed: the process was killed (SIGKILL)." in text
    assert "called the OOM killer (out_of_memory)" in text and f"(pid {q.pid})" in text
    assert "Its exit freed" in text


def test_accesses_without_call_tree():
    m = vw.Machine(ram="16M", trace=False)
    p = m.spawn()
    a = p.mmap(0, 2 * PAGE, RW, ANON)
    p.read(a, 1)
    assert f"At {a:#x}, a read fault mapped the shared zero page: none -> zero page ro." in told(m)
    p.write(a + PAGE, b"x")
    assert f"At {a + PAGE:#x}, a fault mapped a page: none -> pfn" in told(m)
    child = p.fork()
    child.write(a + PAGE, b"y")
    assert "a write fault copied the page (copy-on-write)" in told(m)


def test_kill(mp):
    m, p = mp
    q = m.spawn()
    nvmas = q.mm.map_count
    q.kill("test")
    text = told(m)
    assert f"pid {q.pid} was killed (SIGKILL: test): exit_mmap() unmapped all {nvmas} VMAs" in text
