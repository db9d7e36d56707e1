"""What one step changed: VMAs, PTEs, frames, anon_vmas and their chains, TLBs.

:func:`step_changes` compares two machines, usually the states before and after one step
of a timeline (``m.timeline.state(i)`` and ``m.timeline.state(i + 1)``), and returns a
:class:`Changes` that views query to highlight what moved (``changes.vma_changed(pid,
start, end)``, ``changes.frame_changed(pfn)`` ...) and that narration reads.

Objects are matched by the identity the model gives them: a process by pid, a VMA by its
``id`` (``vma->id`` stands in for the pointer the kernel would compare), an anon_vma by its
``id``, an anon_vma_chain by the ``(vma id, anon_vma id)`` pair it links, a PTE by ``(pid,
address)``, a frame by its PFN. The two machines may be different copies (a timeline
rebuilds each state by unpickling), so nothing is compared by Python identity.

>>> import vmwidgets as vw
>>> from vmwidgets.views.diff import step_changes
>>> m = vw.Machine(ram="16M")
>>> p = m.spawn()
>>> a = p.mmap(0, 2 * 4096, vw.PROT_READ | vw.PROT_WRITE, vw.MAP_PRIVATE | vw.MAP_ANONYMOUS)
>>> p.write(a, b"x")
>>> ch = step_changes(m.timeline.state(2), m.timeline.state(3))
>>> [c.kinds for c in ch.vma_list]      # the first write gave the VMA its anon_vma
[('anon_vma', 'chain')]
>>> ch.vma_changed(p.pid, a, a + 4096), ch.pte_changed(p.pid, a), ch.pte_changed(p.pid, a + 4096)
(True, True, False)
>>> pfn = p.pagemap(a).pfn
>>> ch.frame_changed(pfn), ch.frame_change(pfn).kind
(True, 'allocated')
"""

from dataclasses import dataclass, field

from ..core.flags import PAGE_SHIFT, PAGE_SIZE
from ..core.pgtable import pte_pfn, pte_text

__all__ = ["Changes", "PidVmaChanges", "VmaState", "VmaChange", "PteChange", "FrameState",
           "FrameChange", "TlbChange", "step_changes", "vma_state", "frame_state"]


@dataclass(frozen=True)
class VmaState:
    """A VMA as the diff sees it (plain values, comparable across machine copies)."""

    id: int
    start: int
    end: int
    perms: str           # the rwxp column of /proc/PID/maps
    flags: int           # vm_flags
    pgoff: int
    file: str            # the file's path, a special mapping's name ([vdso]) or ""
    anon_vma: int        # the id of vma->anon_vma, or 0
    chain: tuple         # the anon_vma ids of its anon_vma_chains, newest first

    @property
    def pages(self):
        return (self.end - self.start) >> PAGE_SHIFT

    def __str__(self):
        name = f" {self.file}" if self.file else ""
        return f"[{self.start:#x}-{self.end:#x} {self.perms}{name}]"


def vma_state(vma):
    """The :class:`VmaState` of a ``VmAreaStruct``."""
    if vma.vm_file is not None:
        name = vma.vm_file.path
    elif vma.vm_ops is not None:
        name = vma.vm_ops.name
    else:
        name = ""
    return VmaState(vma.id, vma.vm_start, vma.vm_end, vma.perms(), vma.vm_flags, vma.vm_pgoff,
                    name, vma.anon_vma.id if vma.anon_vma is not None else 0,
                    tuple(avc.anon_vma.id for avc in vma.anon_vma_chain))


#: The aspects of a VMA a step can change, in the order :attr:`VmaChange.kinds` lists them.
VMA_KINDS = ("added", "removed", "resized", "reprotected", "flags", "pgoff", "anon_vma", "chain",
             "file")


@dataclass(frozen=True)
class VmaChange:
    """One VMA of process ``pid`` that appeared, went away or changed: ``before`` /
    ``after`` are its :class:`VmaState` (``None`` when it did not exist). ``kinds`` names
    what changed: ``added``, ``removed``, or some of ``resized`` (start or end),
    ``reprotected`` (the rwxp permissions), ``flags`` (any vm_flags bit), ``pgoff``,
    ``anon_vma``, ``chain`` (its anon_vma_chains), ``file``. ``start``/``end`` are its
    range now (before the step for a removed VMA)."""

    pid: int
    before: VmaState = None
    after: VmaState = None
    kinds: tuple = ()

    @property
    def id(self):
        return (self.after or self.before).id

    @property
    def start(self):
        return (self.after or self.before).start

    @property
    def end(self):
        return (self.after or self.before).end

    def overlaps(self, start, end):
        return any(s is not None and s.start < end and start < s.end
                   for s in (self.before, self.after))

    def __str__(self):
        if self.before is None:
            return f"pid {self.pid}: VMA {self.after} added"
        if self.after is None:
            return f"pid {self.pid}: VMA {self.before} removed"
        return f"pid {self.pid}: VMA {self.before} -> {self.after} ({', '.join(self.kinds)})"


@dataclass(frozen=True)
class PteChange:
    """A page-table entry of ``pid`` for the page at ``address``: ``old`` and ``new`` are
    the raw x86 PTE values (0 for none)."""

    pid: int
    address: int
    old: int
    new: int

    @property
    def old_pfn(self):
        return pte_pfn(self.old) if self.old else None

    @property
    def new_pfn(self):
        return pte_pfn(self.new) if self.new else None

    def __str__(self):
        return (f"pid {self.pid}: pte {self.address:#x}: "
                f"{pte_text(self.old)} -> {pte_text(self.new)}")


@dataclass(frozen=True)
class FrameState:
    """A physical frame as the diff sees it. ``mapping`` is ``"anon_vma:ID"``,
    ``"file:PATH"`` or ``""``; ``data`` the bytes written so far (``b""`` for zeroes)."""

    pfn: int
    kind: str
    refcount: int
    mapcount: int
    mapping: str
    index: int
    anon_exclusive: bool
    dirty: bool
    swap: int            # the swap slot's offset while in the swap cache, else 0
    data: bytes


def frame_state(page):
    """The :class:`FrameState` of a ``Page``."""
    mapping = page.mapping
    if mapping is None:
        owner = ""
    elif hasattr(mapping, "host"):
        owner = f"file:{mapping.host.path}"
    else:
        owner = f"anon_vma:{mapping.id}"
    return FrameState(page.pfn, page.kind, page.refcount, page.mapcount, owner, page.index,
                      page.anon_exclusive, page.dirty,
                      page.swap.offset if page.swap is not None else 0,
                      bytes(page.data) if page.data else b"")


@dataclass(frozen=True)
class FrameChange:
    """One frame whose state changed: ``kind`` is ``allocated`` (it was free),
    ``freed`` (it is free now) or ``changed``; ``fields`` names what differs."""

    pfn: int
    kind: str
    before: FrameState
    after: FrameState
    fields: tuple = ()

    def __str__(self):
        a, b = self.before, self.after
        if self.kind == "allocated":
            return f"pfn {self.pfn:#x} allocated ({b.kind})"
        if self.kind == "freed":
            return f"pfn {self.pfn:#x} freed ({a.kind})"
        parts = []
        for name in self.fields:
            if name == "data":
                parts.append("contents written")
            else:
                parts.append(f"{name} {getattr(a, name)!r} -> {getattr(b, name)!r}")
        return f"pfn {self.pfn:#x} ({b.kind}): " + ", ".join(parts)


@dataclass(frozen=True)
class TlbChange:
    """The TLB of one CPU: translations that appeared (``filled``) and went away
    (``dropped``) as ``(pcid, address)`` pairs, and how many flushes it ran."""

    cpu: int
    filled: tuple
    dropped: tuple
    flushes: int

    def __str__(self):
        return (f"CPU {self.cpu}: TLB +{len(self.filled)} -{len(self.dropped)} entries, "
                f"{self.flushes} flush(es)")


class PidVmaChanges(list):
    """The :class:`VmaChange` records of one process, in address order, with the lists a
    view outlines: :attr:`added`, :attr:`removed`, :attr:`resized`, :attr:`reprotected`
    (a VMA that was resized and re-protected is in both)."""

    def _of(self, kind):
        return [c for c in self if kind in c.kinds]

    @property
    def added(self):
        return self._of("added")

    @property
    def removed(self):
        return self._of("removed")

    @property
    def resized(self):
        return self._of("resized")

    @property
    def reprotected(self):
        return self._of("reprotected")

    @property
    def changed(self):
        """Kept VMAs that changed in any way (range, flags, pgoff, anon_vma, chain)."""
        return [c for c in self if c.before is not None and c.after is not None]


class _ByPid(dict):
    """``{pid: PidVmaChanges}``; a pid without changes reads as an empty one (not stored)."""

    def __missing__(self, pid):
        return PidVmaChanges()


@dataclass
class Changes:
    """Everything that differs between two machines (see :func:`step_changes`).

    ``vmas`` maps each pid with a VMA change to its :class:`PidVmaChanges` (``.added``,
    ``.removed``, ``.resized``, ``.reprotected``; ``vmas[pid]`` of another pid is empty);
    ``vma_list`` holds all of them, by pid then address. Lists, in a stable order:
    ``ptes`` (:class:`PteChange`, by pid then address), ``frames`` (:class:`FrameChange`,
    by PFN), ``anon_vmas_added`` / ``anon_vmas_removed`` (ids), ``avcs_added`` /
    ``avcs_removed`` (``(pid, vma id, anon_vma id)``), ``pids_added`` / ``pids_removed``,
    ``tlb`` (:class:`TlbChange` per CPU whose TLB changed), ``tlb_flushes`` (the step's
    ``TlbFlush`` records, when known), ``swap_added`` / ``swap_removed`` (slot offsets) and
    ``brk`` (``{pid: (old, new)}``).
    """

    vma_list: list = field(default_factory=list)
    ptes: list = field(default_factory=list)
    frames: list = field(default_factory=list)
    anon_vmas_added: list = field(default_factory=list)
    anon_vmas_removed: list = field(default_factory=list)
    avcs_added: list = field(default_factory=list)
    avcs_removed: list = field(default_factory=list)
    pids_added: list = field(default_factory=list)
    pids_removed: list = field(default_factory=list)
    tlb: list = field(default_factory=list)
    tlb_flushes: list = field(default_factory=list)
    swap_added: list = field(default_factory=list)
    swap_removed: list = field(default_factory=list)
    brk: dict = field(default_factory=dict)

    def __post_init__(self):
        self._index()

    def _index(self):
        self.vmas = _ByPid()
        for c in self.vma_list:
            self.vmas.setdefault(c.pid, PidVmaChanges()).append(c)
        self._vma_ids = {(c.pid, c.id) for c in self.vma_list}
        self._ptes = {(c.pid, c.address): c for c in self.ptes}
        self._frames = {c.pfn: c for c in self.frames}
        self._av = set(self.anon_vmas_added) | set(self.anon_vmas_removed)
        self._avc = {(v, a) for _, v, a in self.avcs_added + self.avcs_removed}

    # -- queries for views ------------------------------------------------------------------
    def vma_changes(self, pid):
        """The :class:`VmaChange` records of process ``pid``, in address order."""
        return list(self.vmas.get(pid, ()))

    def vma_change(self, pid, start, end):
        """The first change of ``pid`` whose VMA (before or after) overlaps ``[start, end)``,
        or ``None``."""
        for c in self.vmas.get(pid, ()):
            if c.overlaps(start, end):
                return c
        return None

    def vma_changed(self, pid, start, end=None, vma_id=None):
        """Did a VMA of ``pid`` overlapping ``[start, end)`` (``end`` defaults to one page
        further) appear, go or change? With ``vma_id``, also true for a change of that VMA."""
        if vma_id is not None and (pid, vma_id) in self._vma_ids:
            return True
        if end is None:
            end = start + PAGE_SIZE
        return self.vma_change(pid, start, end) is not None

    def pte_change(self, pid, address):
        return self._ptes.get((pid, address & ~(PAGE_SIZE - 1)))

    def pte_changed(self, pid, address):
        """Did the PTE of ``pid`` for the page holding ``address`` change?"""
        return (pid, address & ~(PAGE_SIZE - 1)) in self._ptes

    def ptes_in(self, pid, start, end):
        """The PTE changes of ``pid`` in ``[start, end)``."""
        return [c for c in self.ptes if c.pid == pid and start <= c.address < end]

    def frame_change(self, pfn):
        return self._frames.get(pfn)

    def frame_changed(self, pfn):
        """Was frame ``pfn`` allocated, freed or changed (counts, owner, contents ...)?"""
        return pfn in self._frames

    def anon_vma_changed(self, anon_vma_id):
        """Was the anon_vma ``anon_vma_id`` created or freed?"""
        return anon_vma_id in self._av

    def avc_changed(self, vma_id, anon_vma_id):
        """Was the anon_vma_chain linking these two created or freed?"""
        return (vma_id, anon_vma_id) in self._avc

    def pid_changed(self, pid):
        """Did process ``pid`` appear, go, or have a VMA or PTE change?"""
        return (pid in self.pids_added or pid in self.pids_removed or pid in self.vmas
                or any(c.pid == pid for c in self.ptes))

    def tlb_changed(self, cpu):
        return any(c.cpu == cpu for c in self.tlb)

    @property
    def frames_allocated(self):
        return [c.pfn for c in self.frames if c.kind == "allocated"]

    @property
    def frames_freed(self):
        return [c.pfn for c in self.frames if c.kind == "freed"]

    @property
    def frames_changed(self):
        """Frames in use before and after whose state changed."""
        return [c.pfn for c in self.frames if c.kind == "changed"]

    def vma_marks(self, pid):
        """``{vm_start: "added" | "resized" | "re-protected" | "changed"}`` for the VMAs
        ``pid`` has after the step (for outlining them)."""
        marks = {}
        for c in self.vmas.get(pid, ()):
            if c.after is None:
                continue
            marks[c.after.start] = ("added" if "added" in c.kinds else
                                    "resized" if "resized" in c.kinds else
                                    "re-protected" if "reprotected" in c.kinds else "changed")
        return marks

    def ranges_unmapped(self, pid):
        """``[(start, end)]``: addresses of ``pid`` mapped before the step and not after
        (whatever happened to the VMA structs: a split keeps parts under new ids)."""
        return _subtract([(c.before.start, c.before.end) for c in self.vmas.get(pid, ())
                          if c.before is not None],
                         [(c.after.start, c.after.end) for c in self.vmas.get(pid, ())
                          if c.after is not None])

    def ranges_mapped(self, pid):
        """``[(start, end)]``: addresses of ``pid`` mapped after the step and not before."""
        return _subtract([(c.after.start, c.after.end) for c in self.vmas.get(pid, ())
                          if c.after is not None],
                         [(c.before.start, c.before.end) for c in self.vmas.get(pid, ())
                          if c.before is not None])

    def vmas_removed(self, pid):
        """``[(start, end)]`` of the VMAs of ``pid`` the step removed (as they were)."""
        return [(c.before.start, c.before.end) for c in self.vmas.get(pid, ())
                if c.after is None]

    def __bool__(self):
        return bool(self.vma_list or self.ptes or self.frames or self.anon_vmas_added
                    or self.anon_vmas_removed or self.avcs_added or self.avcs_removed
                    or self.pids_added or self.pids_removed or self.tlb or self.tlb_flushes
                    or self.swap_added or self.swap_removed or self.brk)

    def lines(self):
        """The changes as short lines of text (the text alternative of a highlight)."""
        out = [f"process {pid} created" for pid in self.pids_added]
        out += [f"process {pid} gone" for pid in self.pids_removed]
        out += [str(c) for c in self.vma_list]
        out += [f"anon_vma #{i} created" for i in self.anon_vmas_added]
        out += [f"anon_vma #{i} freed" for i in self.anon_vmas_removed]
        out += [f"pid {p}: anon_vma_chain vma#{v} -> anon_vma #{a} added"
                for p, v, a in self.avcs_added]
        out += [f"pid {p}: anon_vma_chain vma#{v} -> anon_vma #{a} removed"
                for p, v, a in self.avcs_removed]
        out += [f"pid {pid}: brk {old:#x} -> {new:#x}" for pid, (old, new) in self.brk.items()]
        out += [str(c) for c in self.ptes]
        out += [str(c) for c in self.frames]
        out += [f"swap slot {s:#x} used" for s in self.swap_added]
        out += [f"swap slot {s:#x} freed" for s in self.swap_removed]
        out += [f"tlb_flush {f}" for f in self.tlb_flushes]
        out += [str(c) for c in self.tlb]
        return out

    def __str__(self):
        return "\n".join(self.lines()) or "no change"


def _subtract(ranges, minus):
    """The parts of ``ranges`` that no range of ``minus`` covers, merged and sorted.
    (Unchanged VMAs never overlap a changed one's old or new range, so the changed ones
    are enough.)"""
    out = []
    for start, end in sorted(ranges):
        pieces = [(start, end)]
        for ms, me in minus:
            pieces = [p for a, b in pieces
                      for p in ((a, min(b, ms)), (max(a, me), b)) if p[0] < p[1]]
        out.extend(pieces)
    merged = []
    for a, b in sorted(out):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


# -- the diff ---------------------------------------------------------------------------------

def step_changes(before, after, record=None):
    """What changed from machine ``before`` to machine ``after``.

    :param before: a ``Machine`` (e.g. ``m.timeline.state(i)``).
    :param after: a later ``Machine`` of the same run (e.g. ``m.timeline.state(i + 1)``).
    :param record: the ``StepRecord`` of the step between them, if known: its
        ``tlb_flushes`` become :attr:`Changes.tlb_flushes`. Without it the flushes are
        taken from ``after.tlb_log`` (those of steps ``>= before.nr_steps``), which a state
        rebuilt from a checkpoint may not hold.
    :returns: a :class:`Changes`.
    """
    for name, m in (("before", before), ("after", after)):
        if not hasattr(m, "processes") or not hasattr(m, "phys"):
            raise TypeError(f"{name} must be a Machine (e.g. m.timeline.state(i)), "
                            f"not {type(m).__name__}")
    ch = Changes()
    procs_a = {p.pid: p for p in before.processes}
    procs_b = {p.pid: p for p in after.processes}
    ch.pids_added = sorted(procs_b.keys() - procs_a.keys())
    ch.pids_removed = sorted(procs_a.keys() - procs_b.keys())
    for pid in sorted(procs_a.keys() | procs_b.keys()):
        pa, pb = procs_a.get(pid), procs_b.get(pid)
        _diff_vmas(ch, pid, pa, pb)
        _diff_ptes(ch, pid, pa, pb)
        if pa is not None and pb is not None and pa.mm.brk != pb.mm.brk:
            ch.brk[pid] = (pa.mm.brk, pb.mm.brk)
    ids_a, ids_b = set(before.anon_vmas), set(after.anon_vmas)
    ch.anon_vmas_added = sorted(ids_b - ids_a)
    ch.anon_vmas_removed = sorted(ids_a - ids_b)
    _diff_frames(ch, before.phys.pages, after.phys.pages)
    slots_a, slots_b = set(before.swap.slots), set(after.swap.slots)
    ch.swap_added = sorted(slots_b - slots_a)
    ch.swap_removed = sorted(slots_a - slots_b)
    _diff_tlbs(ch, before, after)
    if record is not None:
        ch.tlb_flushes = list(record.tlb_flushes)
    else:
        ch.tlb_flushes = [f for f in after.tlb_log
                          if before.nr_steps <= f.step < after.nr_steps]
    ch._index()
    return ch


def _same_vma(a, b):
    """Do two VMA objects (of two machine copies) hold the same state? Compares in place:
    this runs for every VMA of every process at each step, so it allocates nothing."""
    if (a.vm_start != b.vm_start or a.vm_end != b.vm_end or a.vm_flags != b.vm_flags
            or a.vm_pgoff != b.vm_pgoff):
        return False
    fa, fb = a.vm_file, b.vm_file
    if (fa is None) != (fb is None) or (fa is not None and fa.path != fb.path):
        return False
    oa, ob = a.vm_ops, b.vm_ops
    if (oa is None) != (ob is None) or (oa is not None and oa.name != ob.name):
        return False
    va, vb = a.anon_vma, b.anon_vma
    if (va is None) != (vb is None) or (va is not None and va.id != vb.id):
        return False
    ca, cb = a.anon_vma_chain, b.anon_vma_chain
    if len(ca) != len(cb):
        return False
    for x, y in zip(ca, cb):
        if x.anon_vma.id != y.anon_vma.id:
            return False
    return True


def _diff_vmas(ch, pid, pa, pb):
    va = {v.id: v for v in pa.mm.mm_mt} if pa is not None else {}
    vb = {v.id: v for v in pb.mm.mm_mt} if pb is not None else {}
    found = []
    for vid in va.keys() | vb.keys():
        a, b = va.get(vid), vb.get(vid)
        if a is not None and b is not None and _same_vma(a, b):
            continue
        sa = vma_state(a) if a is not None else None
        sb = vma_state(b) if b is not None else None
        if sa is None:
            kinds = ("added",)
        elif sb is None:
            kinds = ("removed",)
        else:
            kinds = tuple(k for k, differs in (
                ("resized", (sa.start, sa.end) != (sb.start, sb.end)),
                ("reprotected", sa.perms != sb.perms),
                ("flags", sa.flags != sb.flags),
                ("pgoff", sa.pgoff != sb.pgoff),
                ("anon_vma", sa.anon_vma != sb.anon_vma),
                ("chain", sa.chain != sb.chain),
                ("file", sa.file != sb.file)) if differs)
        found.append(VmaChange(pid, sa, sb, kinds))
        chain_a = set(sa.chain) if sa else set()
        chain_b = set(sb.chain) if sb else set()
        ch.avcs_added.extend((pid, vid, av) for av in sorted(chain_b - chain_a))
        ch.avcs_removed.extend((pid, vid, av) for av in sorted(chain_a - chain_b))
    found.sort(key=lambda c: ((c.after or c.before).start, c.after is None, c.id))
    ch.vma_list.extend(found)


def _pte_tables(proc):
    """``{base address of a PTE table: its entries}`` of one process."""
    if proc is None:
        return {}
    pages = proc.machine.phys.pages
    out = {}
    stack = [proc.mm.pgd]
    while stack:
        table = stack.pop()
        if table.level == 3:
            out[table.base] = table.entries
        else:
            stack.extend(pages[pte_pfn(e)].table for e in table.entries.values())
    return out


def _diff_ptes(ch, pid, pa, pb):
    ta, tb = _pte_tables(pa), _pte_tables(pb)
    empty = {}
    for base in sorted(ta.keys() | tb.keys()):
        ea, eb = ta.get(base, empty), tb.get(base, empty)
        if ea == eb:
            continue
        for i in sorted(ea.keys() | eb.keys()):
            old, new = ea.get(i, 0), eb.get(i, 0)
            if old != new:
                ch.ptes.append(PteChange(pid, base + (i << PAGE_SHIFT), old, new))


_FRAME_FIELDS = ("kind", "refcount", "mapcount", "mapping", "index", "anon_exclusive",
                 "dirty", "swap", "data")


def _same_mapping(a, b):
    if a is None or b is None:
        return a is b
    ha, hb = getattr(a, "host", None), getattr(b, "host", None)
    if ha is not None or hb is not None:
        return ha is not None and hb is not None and ha.path == hb.path
    return a.id == b.id


def _same_page(a, b):
    """Do two Page objects (of two machine copies) hold the same state? Cheap fields first;
    allocates nothing (it runs for every frame in use at each step)."""
    return (a.kind == b.kind and a.refcount == b.refcount and a.mapcount == b.mapcount
            and a.anon_exclusive == b.anon_exclusive and a.dirty == b.dirty
            and a.index == b.index and a.data == b.data
            and (a.swap is None) == (b.swap is None)
            and (a.swap is None or a.swap.offset == b.swap.offset)
            and _same_mapping(a.mapping, b.mapping))


def _diff_frames(ch, pages_a, pages_b):
    # Frames never used have no Page object yet: they are free on that side.
    for pfn in sorted(pages_a.keys() | pages_b.keys()):
        a = dict.get(pages_a, pfn)
        b = dict.get(pages_b, pfn)
        if a is not None and b is not None and _same_page(a, b):
            continue
        free_a = a is None or a.kind == "free"
        free_b = b is None or b.kind == "free"
        if free_a and free_b:
            continue
        sa = frame_state(a) if a is not None else _free_state(pfn)
        sb = frame_state(b) if b is not None else _free_state(pfn)
        kind = "allocated" if free_a else "freed" if free_b else "changed"
        fields = tuple(f for f in _FRAME_FIELDS if getattr(sa, f) != getattr(sb, f))
        ch.frames.append(FrameChange(pfn, kind, sa, sb, fields))


def _free_state(pfn):
    return FrameState(pfn, "free", 0, 0, "", 0, False, False, 0, b"")


def _diff_tlbs(ch, before, after):
    for ca, cb in zip(before.cpus, after.cpus):
        ka, kb = ca.tlb.entries, cb.tlb.entries
        flushes = (cb.tlb.stats["flush_all"] + cb.tlb.stats["flush_page"]
                   - ca.tlb.stats["flush_all"] - ca.tlb.stats["flush_page"])
        same = ka.keys() == kb.keys() and all(
            _same_entry(ka[k], kb[k]) for k in ka)
        if same and not flushes:
            continue
        filled = tuple(sorted((pcid, vpn << PAGE_SHIFT) for pcid, vpn in kb.keys() - ka.keys()))
        dropped = tuple(sorted((pcid, vpn << PAGE_SHIFT) for pcid, vpn in ka.keys() - kb.keys()))
        # An entry refilled with another frame or permission counts as dropped and filled.
        for k in sorted(ka.keys() & kb.keys()):
            if not _same_entry(ka[k], kb[k]):
                filled += ((k[0], k[1] << PAGE_SHIFT),)
                dropped += ((k[0], k[1] << PAGE_SHIFT),)
        ch.tlb.append(TlbChange(cb.number, filled, dropped, flushes))


def _same_entry(a, b):
    return a.pfn == b.pfn and a.writable == b.writable and a.dirty == b.dirty
