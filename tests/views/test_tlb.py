"""The TLB view against each CPU's TLB."""

import vmwidgets as vw
from vmwidgets.core.tlb import GLOBAL
from vmwidgets.views import draw_tlb, step_changes, tlb_rows, tlb_text

from .scenes import ANON, RW, family


def test_rows_equal_each_cpus_tlb():
    m, p, c, a, f = family()
    rows = tlb_rows(m)
    assert [r.cpu for r in rows] == [cpu.number for cpu in m.cpus] == [0, 1]
    for r, cpu in zip(rows, m.cpus):
        assert [(e.address, e.pfn, e.writable, e.dirty) for e in r.entries] == [
            (e.address, e.pfn, e.writable, e.dirty) for e in cpu.tlb]
        assert [e.pcid for e in r.entries] == [None if e.pcid == GLOBAL else e.pcid for e in cpu.tlb]
        assert (r.hits, r.misses, r.size) == (cpu.tlb.hits, cpu.tlb.misses, cpu.tlb.size)
        assert r.last_flush == (str(cpu.last_flush) if cpu.last_flush else None)
    # The child ran on CPU 1 and wrote its COW copy there: the entry is the child's.
    mine = [e for e in rows[1].entries if e.address == a]
    assert mine and mine[0].pid == c.pid and mine[0].pfn == c.pagemap(a).pfn
    assert rows[1].current == c.pid


def test_pid_of_entries_without_pcid():
    m = vw.Machine(cpus=1, pcid=False)
    p = m.spawn()
    a = p.mmap(0, 4096, RW, ANON)
    p.write(a, b"x")
    entry = [e for e in tlb_rows(m)[0].entries if e.address == a][0]
    assert entry.pid == p.pid and entry.pcid == 0


def test_text_and_drawing_show_entries_and_last_flush():
    m, p, c, a, f = family()
    p.munmap(a, 4096)
    text = tlb_text(m)
    for r in tlb_rows(m):
        assert f"CPU {r.cpu}: " in text
        assert f"{r.hits} hits, {r.misses} misses" in text
        for e in r.entries:
            assert e.text() in text
    assert "reason:" in text and "munmap" in text
    ax = draw_tlb(m)
    blocks = {t.get_gid(): t.get_text() for t in ax.texts if t.get_gid()}
    assert set(blocks) == {"cpu-0", "cpu-1"}
    assert "munmap" in blocks["cpu-0"] and "last flush" in blocks["cpu-1"]


def test_changes_frame_the_cpu_and_list_the_flush():
    m, p, c, a, f = family()
    ax = draw_tlb(m)
    p.munmap(a, 4096)
    n = m.nr_steps
    ch = step_changes(m.timeline.state(n - 1), m.timeline.state(n))
    ax = draw_tlb(m, ax=ax, changes=ch)
    assert "flush in the last step:" in tlb_text(m, ch)
    frames = [x.get_linewidth() for x in ax.patches]
    assert len(frames) == 2 and frames[p.cpu] > 1
    assert len([t for t in ax.texts if t.get_gid()]) == 2       # redrawn, not stacked


def test_limit_shows_newest_entries():
    m = vw.Machine(cpus=1)
    p = m.spawn()
    a = p.mmap(0, 40 * 4096, RW, ANON)
    for i in range(40):
        p.write(a + i * 4096, b"x")
    ax = draw_tlb(m, limit=5)
    block = [t.get_text() for t in ax.texts if t.get_gid() == "cpu-0"][0]
    last = tlb_rows(m)[0].entries[-1]
    assert last.text() in block and "older entries" in block
