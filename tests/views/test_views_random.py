"""Seeded random runs: after every step, each view agrees with the model (the views'
invariants, as validate() is the model's), and the rmap layout keeps unchanged nodes."""

import random

import pytest

import vmwidgets as vw
from vmwidgets import views

from .scenes import ANON, RW

PROTS = [vw.PROT_NONE, vw.PROT_READ, RW]


def random_step(rng, m, procs):
    p = rng.choice([q for q in procs if q.alive])
    vmas = [v for v in p.mm.mm_mt if v.vm_start < 0x7ffff0000000 and v.vm_start >= 0x10000000]
    kind = rng.choice(["mmap", "mmap", "write", "write", "read", "mprotect", "munmap", "fork"])
    try:
        if kind == "mmap" or not vmas:
            p.mmap(0, rng.randint(1, 6) * 4096, rng.choice(PROTS[1:]), ANON)
        elif kind == "fork" and len(procs) < 3:
            procs.append(p.fork())
        else:
            v = rng.choice(vmas)
            addr = v.vm_start + rng.randrange(v.pages()) * 4096
            if kind == "write":
                p.write(addr, b"w")
            elif kind == "read":
                p.read(addr, 1)
            elif kind == "mprotect":
                p.mprotect(addr, 4096, rng.choice(PROTS))
            else:
                p.munmap(addr, 4096)
    except (OSError, vw.SegmentationFault):
        pass
    return p


def check(m):
    g = views.rmap_graph(m)
    for proc in m.processes:
        text = views.address_space_text(m, proc.pid)
        segs = [s for s in views.address_space_layout(proc.mm) if s.kind == "vma"]
        assert [(s.start, s.end) for s in segs] == [(v.vm_start, v.vm_end) for v in proc.mm.mm_mt]
        for v in proc.mm.mm_mt:
            assert f"{v.vm_start:#x}-{v.vm_end:#x} {v.perms()}" in text
            vid = f"vma:{proc.pid}:{v.vm_start:#x}"
            assert {c for c in g.successors(vid) if g.nodes[c]["kind"] == "avc"} == {
                f"avc:{proc.pid}:{v.vm_start:#x}:{x.anon_vma.id}" for x in v.anon_vma_chain}
    for r in views.frame_rows(m):
        assert r.kpagecount == m.kpagecount(r.pfn)
        if r.kind in ("anon", "file"):
            assert r.mapcount == len(r.mappers)
            maps = {(g.nodes[u]["pid"], a) for u, _v, a in g.in_edges(f"page:{r.pfn:#x}", data="address")
                    if a is not None}
            assert maps == set(r.mappers) == {(q.pid, a) for q, _v, a in vw.rmap_walk(m, r.pfn)}
    for row, cpu in zip(views.tlb_rows(m), m.cpus):
        assert [(e.address, e.pfn) for e in row.entries] == [(e.address, e.pfn) for e in cpu.tlb]
    return g


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_views_agree_with_the_model_after_every_step(seed):
    rng = random.Random(seed)
    m = vw.Machine(ram="16M", cpus=2, seed=seed)
    procs = [m.spawn()]
    pos = views.rmap_layout(check(m))
    for _ in range(60):
        p = random_step(rng, m, procs)
        g = check(m)
        new = views.rmap_layout(g, previous=pos)
        assert all(new[n] == pos[n] for n in set(new) & set(pos))
        cols = {}
        for x, y in new.values():
            cols.setdefault(x, []).append(y)
        for ys in cols.values():                 # no two nodes closer than one slot
            ys.sort()
            assert all(b - a >= 1 for a, b in zip(ys, ys[1:]))
        pos = new
        if p.alive:
            v = next(iter(p.mm.mm_mt))
            w = views.walk(m, p.pid, v.vm_start)
            e = p.pagemap(v.vm_start)
            assert w.pfn == (e.pfn if e.present else None)
    n = m.nr_steps
    ch = views.step_changes(m.timeline.state(n - 1), m.timeline.state(n))
    for proc in m.processes:
        views.draw_address_space(m, proc.pid, changes=ch)
    views.draw_rmap(m, changes=ch, previous=pos)
    views.draw_frames(m, changes=ch)
    views.draw_tlb(m, changes=ch)
