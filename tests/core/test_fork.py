"""fork, copy-on-write, exit and the anon_vma tree (core/fork.py, core/rmap.py).

The trees are drawn with ``anon_vma_tree_text``: ``*`` marks the VMA whose own anon_vma
it is (where its new pages go).
"""

import pytest

import vmwidgets as vw
from vmwidgets.core.page_alloc import RESERVED_FRAMES
from vmwidgets.core.rmap import anon_vma_tree_text
from tests.scenario import FIXED, RW, P, new_process, pg


def tree(m):
    return anon_vma_tree_text(m, pg(0))


def test_fork_shares_pages_write_protected_and_cow_copies():
    m, p = new_process()
    p.mmap(pg(0), 2 * P, RW, FIXED)
    p.write(pg(0), b"parent")
    c = p.fork()
    e_p, e_c = p.pagemap(pg(0)), c.pagemap(pg(0))
    assert e_p.pfn == e_c.pfn and not e_p.exclusive and not e_c.exclusive
    assert m.kpagecount(e_p.pfn) == 2
    c.write(pg(0), b"child!")
    assert (p.read(pg(0), 6), c.read(pg(0), 6)) == (b"parent", b"child!")
    e_p, e_c = p.pagemap(pg(0)), c.pagemap(pg(0))
    assert e_p.pfn != e_c.pfn and e_p.exclusive and e_c.exclusive
    assert m.kpagecount(e_p.pfn) == m.kpagecount(e_c.pfn) == 1
    vw.validate(m)


def test_parent_write_after_child_cow_reuses_without_copy():
    m, p = new_process()
    p.mmap(pg(0), P, RW, FIXED)
    p.write(pg(0), b"x")
    c = p.fork()
    c.write(pg(0), b"c")
    pfn = p.pagemap(pg(0)).pfn
    free = m.phys.nr_free
    p.write(pg(0), b"p")
    assert p.pagemap(pg(0)).pfn == pfn and m.phys.nr_free == free, "reused: refcount 1"
    assert m.events[-1].call == "write"


def test_zero_page_is_shared_by_fork_and_cow_gives_zeroed_page():
    m, p = new_process()
    p.mmap(pg(0), P, RW, FIXED)
    p.mmap(pg(1), P, RW, FIXED)
    p.write(pg(1), b"y")                 # the VMA gets an anon_vma, so fork copies PTEs
    p.read(pg(0), 1)                     # zero page
    c = p.fork()
    assert c.pagemap(pg(0)).present and m.kpageflags(c.pagemap(pg(0)).pfn) & (1 << vw.KPF_ZERO_PAGE)
    c.write(pg(0), b"z")
    assert c.read(pg(0), 2) == b"z\0" and p.read(pg(0), 1) == b"\0"
    vw.validate(m)


def test_unfaulted_vma_is_not_copied_at_fork():
    m, p = new_process()
    p.mmap(pg(0), 4 * P, RW, FIXED)
    p.read(pg(0), 1)                     # zero page, but no anon_vma
    c = p.fork()
    assert not c.pagemap(pg(0)).present, "copy_page_range skips VMAs without anon_vma"
    assert c.read(pg(0), 1) == b"\0"


def test_dontfork_and_wipeonfork():
    m, p = new_process()
    p.mmap(pg(0), 2 * P, RW, FIXED)
    p.mmap(pg(4), 2 * P, RW, FIXED)
    p.write(pg(0), b"keep")
    p.write(pg(4), b"wipe")
    p.madvise(pg(0), 2 * P, vw.MADV_DONTFORK)
    p.madvise(pg(4), 2 * P, vw.MADV_WIPEONFORK)
    c = p.fork()
    assert c.mm.vma_lookup(pg(0)) is None
    assert c.read(pg(4), 4) == bytes(4) and p.read(pg(4), 4) == b"wipe"
    vw.validate(m)


def test_forked_vma_refuses_merge_that_parent_accepts():
    # The child's VMA is a "fork child" (its chain has the parent's anon_vma too).
    m, p = new_process()
    p.mmap(pg(0), 4 * P, RW, FIXED)
    p.write(pg(0), b"x")
    c = p.fork()
    for proc in (p, c):
        proc.mmap(pg(4), 4 * P, RW, FIXED)
    assert len(p.mm.vmas_in(pg(0), pg(8))) == 1
    assert len(c.mm.vmas_in(pg(0), pg(8))) == 2
    vw.validate(m)


def test_anon_vma_tree_after_fork():
    m, p = new_process()
    p.mmap(pg(0), P, RW, FIXED)
    p.write(pg(0), b"x")
    c = p.fork()
    root, child = p.mm.find_vma(pg(0)).anon_vma, c.mm.find_vma(pg(0)).anon_vma
    assert child.parent is root and child.root is root
    assert tree(m) == "\n".join([
        f"anon_vma {root.id} (root) children=2 active=1",
        f"|-- pid 1 VMA {pg(0):#x} *",
        f"|-- pid 2 VMA {pg(0):#x}",
        f"`-- anon_vma {child.id} children=0 active=1",
        f"    `-- pid 2 VMA {pg(0):#x} *",
    ])
    c.write(pg(0), b"c")
    page = m.phys.pages[c.pagemap(pg(0)).pfn]
    assert page.mapping is child, "the child's COW copy belongs to the child's anon_vma"
    assert [(proc.pid, a) for proc, _, a in vw.rmap_walk(m, page.pfn)] == [(c.pid, pg(0))]
    old = m.phys.pages[p.pagemap(pg(0)).pfn]
    assert [proc.pid for proc, _, _ in vw.rmap_walk(m, old.pfn)] == [p.pid]


def test_anon_vma_reuse_down_a_fork_chain():
    # A faults, A forks B, A exits, B forks C, B exits, C forks D:
    # D reuses B's anon_vma (no VMA uses it any more and it has one child).
    m, a = new_process()
    a.mmap(pg(0), P, RW, FIXED)
    a.write(pg(0), b"A")
    av_a = a.mm.find_vma(pg(0)).anon_vma
    b = a.fork()
    av_b = b.mm.find_vma(pg(0)).anon_vma
    a.exit()
    c = b.fork()
    av_c = c.mm.find_vma(pg(0)).anon_vma
    assert av_c not in (av_a, av_b), "B's anon_vma is still in use by B: C gets its own"
    b.exit()
    before = set(m.anon_vmas)
    d = c.fork()
    assert set(m.anon_vmas) == before, "no new anon_vma was allocated for D"
    assert d.mm.find_vma(pg(0)).anon_vma is av_b
    assert tree(m) == "\n".join([
        f"anon_vma {av_a.id} (root) children=2 active=0",
        f"|-- pid {c.pid} VMA {pg(0):#x}",
        f"|-- pid {d.pid} VMA {pg(0):#x}",
        f"`-- anon_vma {av_b.id} children=1 active=1",
        f"    |-- pid {c.pid} VMA {pg(0):#x}",
        f"    |-- pid {d.pid} VMA {pg(0):#x} *",
        f"    `-- anon_vma {av_c.id} children=0 active=1",
        f"        |-- pid {c.pid} VMA {pg(0):#x} *",
        f"        `-- pid {d.pid} VMA {pg(0):#x}",
    ])
    for proc in (c, d):
        assert proc.read(pg(0), 1) == b"A"
    vw.validate(m)


def test_exit_frees_everything_only_when_the_last_user_goes():
    m, p = new_process()
    p.mmap(pg(0), 4 * P, RW, FIXED | vw.MAP_POPULATE)
    c = p.fork()
    p.exit()
    assert c.read(pg(0), 1) == b"\0"
    pfn = c.pagemap(pg(0)).pfn
    assert m.kpagecount(pfn) == 1
    c.exit()
    assert m.processes == [] and not m.anon_vmas
    assert m.phys.nr_free == m.phys.nr_pages - RESERVED_FRAMES, "every frame is back"
    vw.validate(m)
    with pytest.raises(ProcessLookupError):
        c.fork()
