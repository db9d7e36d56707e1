"""The TLB of each CPU: its cached translations, hit/miss counters and the last flush
with its reason (arch/x86/mm/tlb.c; the ``tlb_flush`` tracepoint's reasons).

>>> import vmwidgets as vw
>>> m = vw.Machine(cpus=2); p = m.spawn()
>>> a = p.mmap(0, 4096, vw.PROT_READ | vw.PROT_WRITE, vw.MAP_PRIVATE | vw.MAP_ANONYMOUS)
>>> p.write(a, b"x")
>>> cpu0 = tlb_rows(m)[0]
>>> [(e.address == a, e.pid) for e in cpu0.entries if e.address == a]
[(True, 1)]
"""

from dataclasses import dataclass

from ..core.tlb import GLOBAL, _mm_name
from . import _style
from ._changes import tlb_changed


@dataclass(frozen=True)
class TlbRow:
    """One TLB entry: page ``address`` -> ``pfn``, its ``pcid`` (``None`` for a global
    entry), ``writable``/``dirty`` as cached, and the ``pid`` whose address space the PCID
    belongs to (None if unknown, e.g. init_mm)."""

    address: int
    pfn: int
    pcid: int | None
    writable: bool
    dirty: bool
    pid: int | None

    def text(self):
        tag = "global" if self.pcid is None else f"pcid {self.pcid}"
        who = f"pid {self.pid}" if self.pid is not None else "kernel"
        return (f"{self.address:#x} -> pfn {self.pfn:#x} {'rw' if self.writable else 'ro'}"
                f"{' dirty' if self.dirty else ''} ({tag}, {who})")


@dataclass(frozen=True)
class CpuTlb:
    """One CPU: what runs (``current``, a tid or None when idle), the address space
    loaded (``loaded``) and its ``asid``, ``lazy`` TLB mode, the TLB's ``size``, policy,
    ``hits``/``misses``, ``last_flush`` (the tracepoint line, or None) and ``entries``
    (:class:`TlbRow`, oldest first as the replacement policy sees them)."""

    cpu: int
    current: int | None
    loaded: str
    asid: int
    lazy: bool
    size: int
    policy: str
    hits: int
    misses: int
    last_flush: str | None
    entries: tuple


def _mm_owner(mm):
    owner = getattr(mm, "owner", None)
    return owner.pid if owner is not None else None


def tlb_rows(machine):
    """One :class:`CpuTlb` per CPU of ``machine``."""
    _style.check_machine(machine)
    by_ctx = {p.mm.context.ctx_id: p.pid for p in machine.processes
              if getattr(p.mm, "context", None) is not None}
    out = []
    for cpu in machine.cpus:
        loaded_pid = _mm_owner(cpu.loaded_mm)
        entries = []
        for e in cpu.tlb:
            if e.pcid == GLOBAL:
                pid = None
            elif machine.pcid:
                pid = by_ctx.get(cpu.ctxs[e.pcid - 1][0]) if 0 < e.pcid <= len(cpu.ctxs) else None
            else:
                pid = loaded_pid
            entries.append(TlbRow(e.address, e.pfn, None if e.pcid == GLOBAL else e.pcid,
                                  e.writable, e.dirty, pid))
        out.append(CpuTlb(cpu.number, None if cpu.current is None else cpu.current.tid,
                          _mm_name(cpu.loaded_mm), cpu.loaded_mm_asid, cpu.is_lazy,
                          cpu.tlb.size, cpu.tlb.policy, cpu.tlb.hits, cpu.tlb.misses,
                          None if cpu.last_flush is None else str(cpu.last_flush),
                          tuple(entries)))
    return out


def _cpu_lines(c, limit=None):
    now = "idle" if c.current is None else f"runs tid {c.current}"
    lines = [f"CPU {c.cpu}: {now}, {c.loaded} loaded (ASID {c.asid}){', lazy' if c.lazy else ''}",
             f"  {len(c.entries)}/{c.size} entries ({c.policy}), {c.hits} hits, {c.misses} misses",
             f"  last flush: {c.last_flush or 'none'}"]
    shown = c.entries if limit is None else c.entries[-limit:]
    if limit is not None and len(c.entries) > limit:
        lines.append(f"  ... {len(c.entries) - limit} older entries")
    lines += ["  " + e.text() for e in shown]
    return lines


def tlb_text(machine, changes=None):
    """The text alternative of :func:`draw_tlb`: every CPU and every entry."""
    lines = []
    for c in tlb_rows(machine):
        block = _cpu_lines(c)
        if tlb_changed(changes, c.cpu):
            block[0] += "  <- changed by the last step"
        lines += block
    if changes is not None:
        lines += [f"flush in the last step: {f}" for f in changes.tlb_flushes]
    return "\n".join(lines)


def draw_tlb(machine, ax=None, changes=None, limit=24):
    """One column per CPU, each a monospace block (gid ``"cpu-N"``): the loaded address
    space, hits/misses, the last flush and the newest ``limit`` entries. A CPU whose TLB
    the last step changed gets a red frame. Returns the Axes."""
    from matplotlib.patches import Rectangle

    rows = tlb_rows(machine)
    n = max(1, len(rows))
    ax = _style.new_axes(ax, (4.5 * min(n, 4), 3.2))
    for i, c in enumerate(rows):
        changed = tlb_changed(changes, c.cpu)
        ax.add_patch(Rectangle((i + 0.02, 0.02), 0.96, 0.96, facecolor="#fbfbfb",
                               edgecolor=_style.HIGHLIGHT if changed else "#bdbdbd",
                               lw=2.0 if changed else 0.6))
        t = _style.text(ax, i + 0.05, 0.95, "\n".join(_cpu_lines(c, limit)), ha="left", va="top",
                    fontsize=_style.FONT_SIZE - 1, family=_style.MONO, gid=f"cpu-{c.cpu}")
    ax.set_xlim(0, n)
    ax.set_ylim(0, 1)
    _style.finish(ax, f"TLBs of {len(rows)} CPU{'s' if len(rows) != 1 else ''}")
    return ax
