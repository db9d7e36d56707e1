"""Each library scenario shows what its description says.

A claim test runs the scenario op by op (``start()``), keeps the objects it needs on the
way (the VMA that should survive a merge, a frame number), and asserts the whole
resulting state of the arena, as the kernel's tools/testing/vma tests do.
"""

import pytest

import vmwidgets as vw
from vmwidgets.core.flags import KPF_ZERO_PAGE, VM_ACCOUNT, VM_NORESERVE
from vmwidgets.scenarios import library

P = vw.PAGE_SIZE
BASE = library.ARENA


def pg(n):
    return BASE + n * P


def upto(run, n):
    """Run ops until the first ``n`` have run (op ``n`` is the next one)."""
    while run.index < n:
        run.step()
    return run


def arena(proc, pages=16):
    """``[(start page, end page, perms)]`` of the arena's VMAs."""
    return [((v.vm_start - BASE) // P, (v.vm_end - BASE) // P, v.perms())
            for v in proc.mm.vmas_in(BASE, pg(pages))]


def vma(proc, page):
    return proc.mm.vma_lookup(pg(page))


CLAIMS = {}


def claim(name):
    def register(fn):
        CLAIMS[name] = fn
        return fn
    return register


@claim("merge-prev")
def _(run):
    p = upto(run, 2).procs["p"]
    prev = vma(p, 0)
    run.finish()
    assert arena(p) == [(0, 6, "rw-p")]
    assert vma(p, 5) is prev


@claim("merge-next")
def _(run):
    p = upto(run, 2).procs["p"]
    nxt = vma(p, 4)
    assert nxt.vm_pgoff == pg(4) >> 12
    run.finish()
    assert arena(p) == [(2, 8, "rw-p")]
    assert vma(p, 2) is nxt and nxt.vm_pgoff == pg(2) >> 12


@claim("merge-both")
def _(run):
    p = upto(run, 3).procs["p"]
    prev, nxt = vma(p, 0), vma(p, 4)
    run.finish()
    assert arena(p) == [(0, 6, "rw-p")]
    assert vma(p, 5) is prev and nxt not in p.mm.mm_mt


@claim("merge-refused-flags")
def _(run):
    run.finish()
    p = run.procs["p"]
    assert arena(p) == [(0, 4, "r--p"), (4, 6, "rw-p"), (6, 8, "rw-p")]
    assert vma(p, 4).vm_flags ^ vma(p, 6).vm_flags == VM_NORESERVE | VM_ACCOUNT


@claim("merge-refused-anon-vma")
def _(run):
    p = upto(run, 5).procs["p"]
    left, right = vma(p, 0).anon_vma, vma(p, 5).anon_vma
    assert left is not None and right is not None and left is not right
    run.step()
    assert arena(p, 9) == [(0, 5, "rw-p"), (5, 9, "rw-p")], "the filled hole joins prev only"
    run.finish()
    assert arena(p, 9) == [(0, 5, "rw-p"), (5, 9, "rw-p")]
    assert vma(p, 0).vm_flags == vma(p, 5).vm_flags
    assert (vma(p, 0).anon_vma, vma(p, 5).anon_vma) == (left, right)


@claim("merge-refused-fork-child")
def _(run):
    run.finish()
    p, child = run.procs["p"], run.procs["child"]
    assert arena(p) == [(0, 8, "rw-p")]
    assert arena(child) == [(0, 4, "rw-p"), (4, 8, "rw-p")]
    assert len(vma(child, 0).anon_vma_chain) == 2, "the child's VMA is a fork child"
    assert vma(p, 0).vm_flags == vma(child, 0).vm_flags == vma(child, 4).vm_flags


@claim("merge-refused-pgoff")
def _(run):
    p = upto(run, 5).procs["p"]
    assert arena(p) == [(0, 3, "r--p")], "offset 2 pages continues pgoff 0 + 2 pages"
    grown = vma(p, 0)
    run.finish()
    assert arena(p) == [(0, 3, "r--p"), (3, 4, "r--p")]
    last = vma(p, 3)
    assert vma(p, 0) is grown
    assert (grown.vm_pgoff, last.vm_pgoff) == (0, 0)
    assert grown.vm_file is last.vm_file and grown.vm_flags == last.vm_flags
    lines = [l for l in p.proc_maps().splitlines() if l.startswith(f"{BASE:x}") or
             l.startswith(f"{pg(3):x}")]
    assert [l.split()[2] for l in lines] == ["00000000", "00000000"]


@claim("mprotect-merge-left-partial")
def _(run):
    p = upto(run, 3).procs["p"]
    a, b = vma(p, 0), vma(p, 4)
    run.finish()
    assert arena(p) == [(0, 6, "r--p"), (6, 8, "rw-p")]
    assert vma(p, 0) is a and vma(p, 6) is b
    assert b.vm_pgoff == pg(6) >> 12


@claim("mprotect-merge-right-partial")
def _(run):
    p = upto(run, 3).procs["p"]
    a, b = vma(p, 0), vma(p, 4)
    run.finish()
    assert arena(p) == [(0, 2, "rw-p"), (2, 8, "r--p")]
    assert vma(p, 0) is a and vma(p, 2) is b
    assert b.vm_pgoff == pg(2) >> 12


@claim("mprotect-merge-both")
def _(run):
    p = upto(run, 3).procs["p"]
    assert arena(p) == [(0, 2, "rw-p"), (2, 5, "r--p"), (5, 8, "rw-p")]
    prev, middle, nxt = vma(p, 0), vma(p, 2), vma(p, 5)
    run.finish()
    assert arena(p) == [(0, 8, "rw-p")]
    assert vma(p, 7) is prev
    assert middle not in p.mm.mm_mt and nxt not in p.mm.mm_mt


def _three(run):
    p = upto(run, 4).procs["p"]
    return p, vma(p, 0), vma(p, 4), vma(p, 8)


@claim("mprotect-merge-left-full")
def _(run):
    p, a, b, c = _three(run)
    run.finish()
    assert arena(p) == [(0, 8, "r--p"), (8, 12, "rwxp")]
    assert vma(p, 7) is a and vma(p, 8) is c and b not in p.mm.mm_mt


@claim("mprotect-merge-right-full")
def _(run):
    p, a, b, c = _three(run)
    run.finish()
    assert arena(p) == [(0, 4, "r--p"), (4, 12, "rwxp")]
    assert vma(p, 0) is a and vma(p, 4) is c and b not in p.mm.mm_mt
    assert c.vm_pgoff == pg(4) >> 12


@claim("split-munmap")
def _(run):
    upto(run, 2)
    p, m = run.procs["p"], run.machine
    assert all(p.pagemap(pg(i)).present for i in range(8))
    free = m.phys.nr_free
    run.finish()
    assert arena(p) == [(0, 2, "rw-p"), (5, 8, "rw-p")]
    assert m.phys.nr_free == free + 3
    assert [p.pagemap(pg(i)).present for i in range(8)] == [True] * 2 + [False] * 3 + [True] * 3


@claim("split-mprotect")
def _(run):
    p = upto(run, 2).procs["p"]
    original = vma(p, 0)
    run.finish()
    assert arena(p) == [(0, 2, "rw-p"), (2, 5, "r--p"), (5, 8, "rw-p")]
    assert vma(p, 2) is original


@claim("split-max-map-count")
def _(run):
    outcomes = run.finish()
    p = run.procs["p"]
    assert [o.error for o in outcomes] == [None, None, None, "ENOMEM", None]
    assert p.mm.map_count == 10 == run.machine.sysctl["vm.max_map_count"]
    assert arena(p) == [(1, 8, "rw-p")]


@claim("segv-accerr-maperr")
def _(run):
    outcomes = run.finish()
    assert [o.error for o in outcomes][4:6] == ["SEGV_ACCERR", "SEGV_MAPERR"]
    assert outcomes[-1].result == b"hi"
    assert arena(run.procs["p"]) == [(0, 2, "r--p")]


@claim("anon-vma-reuse-fork")
def _(run):
    m = upto(run, 4).machine
    av_a = vma(run.procs["a"], 0).anon_vma
    av_b = vma(run.procs["b"], 0).anon_vma
    assert av_b is not av_a and av_b.parent is av_a
    upto(run, 6)
    av_c = vma(run.procs["c"], 0).anon_vma
    assert av_c not in (av_a, av_b), "b still used its anon_vma: c got a new one"
    upto(run, 7)
    before = list(m.anon_vmas)
    run.step()
    d = run.procs["d"]
    assert list(m.anon_vmas) == before, "the fork of d allocated no anon_vma"
    assert vma(d, 0).anon_vma is av_b
    assert (av_b.num_active_vmas, av_b.num_children) == (1, 1)
    run.finish()


@claim("cow-chain")
def _(run):
    m = upto(run, 5).machine
    p = run.procs["p"]
    original = [p.pagemap(pg(i)).pfn for i in range(3)]
    run.finish()
    names = ["p", "child", "grandchild"]
    pfn = {n: [run.procs[n].pagemap(pg(i)).pfn for i in range(3)] for n in names}
    # page 0: nobody wrote it after the forks: one frame, three PTEs
    assert pfn["p"][0] == pfn["child"][0] == pfn["grandchild"][0] == original[0]
    assert m.kpagecount(original[0]) == 3
    # page 1: everybody wrote it; p's write came last and reused the original frame
    assert len({pfn[n][1] for n in names}) == 3 and pfn["p"][1] == original[1]
    assert all(m.kpagecount(pfn[n][1]) == 1 for n in names)
    # page 2: grandchild has a copy; p and child still share the original
    assert pfn["p"][2] == pfn["child"][2] == original[2] != pfn["grandchild"][2]
    assert m.kpagecount(original[2]) == 2 and m.kpagecount(pfn["grandchild"][2]) == 1
    data = {n: [run.procs[n].read(pg(i), 2) for i in range(3)] for n in names}
    assert data == {"p": [b"P0", b"Q1", b"P2"], "child": [b"P0", b"C1", b"P2"],
                    "grandchild": [b"P0", b"G1", b"G2"]}


@claim("zero-page-cow")
def _(run):
    m = upto(run, 4).machine
    p = run.procs["p"]
    e0, e1 = p.pagemap(pg(0)), p.pagemap(pg(1))
    assert e0.present and e0.pfn == e1.pfn == m.phys.zero_page.pfn
    assert m.kpageflags(e0.pfn) & (1 << KPF_ZERO_PAGE) and m.kpagecount(e0.pfn) == 0
    assert not e0.exclusive
    run.finish()
    e0, e1 = p.pagemap(pg(0)), p.pagemap(pg(1))
    assert e0.pfn != m.phys.zero_page.pfn and e0.exclusive and m.kpagecount(e0.pfn) == 1
    assert not m.kpageflags(e0.pfn) & (1 << KPF_ZERO_PAGE)
    assert e1.pfn == m.phys.zero_page.pfn


@claim("reclaim-rmap-swap")
def _(run):
    m = upto(run, 5).machine
    p, child = run.procs["p"], run.procs["child"]
    pfns = [p.pagemap(pg(i)).pfn for i in range(2)]
    assert [sorted(pr.pid for pr, _, _ in vw.rmap_walk(m, pfn)) for pfn in pfns] == \
        [[p.pid, child.pid]] * 2
    run.step()
    for i in range(2):
        ep, ec = p.pagemap(pg(i)), child.pagemap(pg(i))
        assert ep.swapped and ec.swapped and not ep.present
        assert ep.pfn == ec.pfn, "one swap entry (same offset) in both page tables"
    assert m.stats["pswpout"] >= 2
    run.finish()
    ep, ec = p.pagemap(pg(0)), child.pagemap(pg(0))
    assert ep.present and ec.present and ep.pfn == ec.pfn and m.kpagecount(ep.pfn) == 2
    assert p.pagemap(pg(1)).swapped and child.pagemap(pg(1)).swapped


def _flushes(run):
    return [(f.cpu, f.reason) for f in run.machine.last_step.tlb_flushes]


@claim("tlb-shootdown")
def _(run):
    m = upto(run, 4).machine
    run.step()
    assert _flushes(run) == [(0, "TLB_LOCAL_MM_SHOOTDOWN")], "one CPU: no IPI"
    upto(run, 8)
    t = run.procs["t"]
    assert t.tid != t.pid == run.procs["p"].pid and t.cpu == 1
    vpn = pg(0) >> 12
    assert [e.vpn for e in m.cpus[1].tlb].count(vpn) == 1, "CPU 1 caches page 0"
    run.step()
    assert _flushes(run) == [(0, "TLB_REMOTE_SEND_IPI"), (0, "TLB_LOCAL_MM_SHOOTDOWN"),
                             (1, "TLB_REMOTE_SHOOTDOWN")]
    assert all(e.vpn != vpn for cpu in m.cpus for e in cpu.tlb)
    outcomes = run.finish()
    assert outcomes[-1].error == "SEGV_MAPERR"


@claim("tlb-shootdown-skipped")
def _(run):
    m = upto(run, 6).machine
    p, t = run.procs["p"], run.procs["t"]
    frame = p.pagemap(pg(0)).pfn
    run.step()
    assert _flushes(run) == [] and not p.pagemap(pg(0)).present
    assert any(e.vpn == pg(0) >> 12 and e.pfn == frame for e in m.cpus[1].tlb)
    outcomes = run.finish()
    assert p.pagemap(pg(1)).pfn == frame, "the freed frame now holds p's page 1"
    assert outcomes[-1].result == b"secret"
    with pytest.raises(vw.ValidationError, match="CPU 1: stale TLB entry"):
        vw.validate(m)
    assert t.alive


VALIDATE_FAILS = {"tlb-shootdown-skipped"}


def test_every_library_scenario_has_a_claim_test():
    assert sorted(CLAIMS) == sorted(vw.scenarios.names())


@pytest.mark.parametrize("name", vw.scenarios.names())
def test_scenario_shows_what_it_says(name):
    sc = vw.scenarios.get(name)
    assert sc.title and len(sc.description) > 80, "each scenario says what it shows"
    run = sc.start()
    CLAIMS[name](run)
    assert run.done
    if name not in VALIDATE_FAILS:
        vw.validate(run.machine)
