"""A step told in plain words, and its kernel call tree as a view.

:func:`narrate` reads what a step did from three sources and says it in a few sentences:
the step's kernel call tree (``record.trace``: which paths ran, e.g. ``vma_merge_new_range``
returning a VMA, ``__split_vma``, ``do_anonymous_page``, ``wp_page_copy``,
``flush_tlb_mm_range``), its result or error (``record.error``, ``record.reason``) and the
state diff (:func:`~vmwidgets.views.diff.step_changes`: which VMAs, PTEs and frames
changed). The reasons it gives for merges that did or did not happen are worked out
from the VMAs involved with the kernel's rules (mm/vma.c: ``is_mergeable_vma``,
``is_mergeable_anon_vma``, contiguous ``vm_pgoff``, ``VM_SPECIAL``).

>>> import vmwidgets as vw
>>> from vmwidgets.views.narration import narrate
>>> m = vw.Machine(ram="16M")
>>> p = m.spawn()
>>> a = p.mmap(0, 2 * 4096, vw.PROT_READ | vw.PROT_WRITE, vw.MAP_PRIVATE | vw.MAP_ANONYMOUS)
>>> b = p.mmap(0, 4096, vw.PROT_READ | vw.PROT_WRITE, vw.MAP_PRIVATE | vw.MAP_ANONYMOUS)
>>> n = len(m.timeline)
>>> print(narrate(m.last_step, m.timeline.state(n - 1), m))   # doctest: +NORMALIZE_WHITESPACE
Step 2: pid 1: mmap(0, 0x1000, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS) = 0x7ffff7ff4000.
The kernel placed the new mapping at [0x7ffff7ff4000-0x7ffff7ff5000] (top-down search
below mmap_base).
No new VMA: vma_merge_new_range() merged the range into the next VMA
[0x7ffff7ff5000-0x7ffff7ff7000 rw-p], which grew down to [0x7ffff7ff4000-0x7ffff7ff7000
rw-p], because they touch, have the same flags (rw-p), are both anonymous, and neither
has an anon_vma yet.
In all: 1 VMA changed.

``trace_view(record, depth)`` renders the call tree as ftrace's function_graph does, cut
at ``depth`` levels; :func:`trace_rows` gives the same tree as rows for a widget.

Simplification: the narration describes the model's steps; it names the paths the model
traced and does not claim more than the call tree and the diff show.
"""

import re

from ..core import flags as F
from ..core.pgtable import pte_dirty, pte_text
from ..core.tlb import REASON_TEXT, TLB_SINGLE_PAGE_FLUSH_CEILING
from .diff import step_changes
from ..trace.graph import calls_below, function_graph

__all__ = ["narrate", "trace_view", "trace_rows", "op_text"]

PAGE = F.PAGE_SIZE
_VMA_RE = re.compile(r"vma\[(0x[0-9a-f]+)-(0x[0-9a-f]+) ([-rwxsp]{4})\]")
_PFN_RE = re.compile(r"pfn (0x[0-9a-f]+|\d+)")
_ANON_VMA_RE = re.compile(r"anon_vma#(\d+)")


# -- small helpers -----------------------------------------------------------------------------

def _h(value):
    return f"{value:#x}"


def _rng(start, end, perms=None, name=None):
    tail = (f" {perms}" if perms else "") + (f" {name}" if name else "")
    return f"[{start:#x}-{end:#x}{tail}]"


def _vma_text(v, name=None):
    """A VmaState or VmAreaStruct as ``[start-end perms name]``."""
    if hasattr(v, "vm_start"):
        from ..procfs import vma_name
        return _rng(v.vm_start, v.vm_end, v.perms(), name if name is not None else vma_name(v))
    return _rng(v.start, v.end, v.perms, name if name is not None else (v.file or None))


def _parse_vma(text):
    m = _VMA_RE.search(text or "")
    if m is None:
        return None
    return int(m.group(1), 16), int(m.group(2), 16), m.group(3)


def _parse_pfn(text):
    m = _PFN_RE.search(text or "")
    return int(m.group(1), 0) if m else None


def _int(text):
    try:
        return int(text, 0)
    except (TypeError, ValueError):
        return None


def _plural(n, word, many=None):
    return f"{n} {word if n == 1 else (many or word + 's')}"


def _pfns(pfns, limit=6):
    pfns = list(pfns)
    shown = ", ".join(_h(p) for p in pfns[:limit])
    return shown + (f" and {len(pfns) - limit} more" if len(pfns) > limit else "")


def _names(value, prefix, exclusive=()):
    """``PROT_READ|PROT_WRITE`` for a bit mask of the ``prefix`` constants."""
    if value == 0:
        zero = [k for k, v in vars(F).items() if k.startswith(prefix) and v == 0]
        return zero[0] if zero else "0"
    out, rest = [], value
    for name, bit in sorted(((k, v) for k, v in vars(F).items()
                             if k.startswith(prefix) and isinstance(v, int) and v
                             and k not in exclusive and v & (v - 1) == 0),
                            key=lambda kv: kv[1]):
        if rest & bit:
            out.append(name)
            rest &= ~bit
    if rest:
        out.append(_h(rest))
    return "|".join(out)


def _map_flags(flags):
    kind = {F.MAP_SHARED: "MAP_SHARED", F.MAP_PRIVATE: "MAP_PRIVATE",
            F.MAP_SHARED_VALIDATE: "MAP_SHARED_VALIDATE"}.get(flags & F.MAP_TYPE)
    rest = flags & ~F.MAP_TYPE
    parts = [kind] if kind else ([_h(flags & F.MAP_TYPE)] if flags & F.MAP_TYPE else [])
    if rest:
        parts.append(_names(rest, "MAP_", exclusive=("MAP_ANON",)))
    return "|".join(parts) or "0"


def _madv_name(advice):
    for k, v in vars(F).items():
        if k.startswith("MADV_") and v == advice:
            return k
    return str(advice)


def op_text(op):
    """A step's call with its constants named: ``pid 1: mmap(0, 0x2000, PROT_READ|PROT_WRITE,
    MAP_PRIVATE|MAP_ANONYMOUS)``."""
    args = list(op.args)

    def fmt(v):
        if isinstance(v, int) and not isinstance(v, bool):
            return _h(v) if v > 9 else str(v)
        if isinstance(v, (bytes, bytearray)):
            return f"<{len(v)} bytes>"
        return repr(v)

    shown = [fmt(a) for a in args]
    if op.call == "mmap" and len(args) >= 4:
        shown[2], shown[3] = _names(args[2], "PROT_"), _map_flags(args[3])
        if len(args) >= 6 and args[4] == -1 and args[5] == 0:
            shown = shown[:4]
    elif op.call == "mprotect" and len(args) >= 3:
        shown[2] = _names(args[2], "PROT_")
    elif op.call == "madvise" and len(args) >= 3:
        shown[2] = _madv_name(args[2])
    elif op.call == "mremap" and len(args) >= 4:
        shown[3] = _names(args[3], "MREMAP_") if args[3] else "0"
    shown += [f"{k}={fmt(v)}" for k, v in op.kwargs.items()]
    who = f"pid {op.target}: " if op.target else ""
    return f"{who}{op.call}({', '.join(shown)})"


def _result_text(record):
    r = record.result
    if r is None:
        return ""
    if type(r).__name__ == "Thread":
        return f" = tid {r.tid}"
    if hasattr(r, "pid") and hasattr(r, "mm"):
        return f" = pid {r.pid}"
    if isinstance(r, (bytes, bytearray)):
        return f" = <{len(r)} bytes>"
    if isinstance(r, int) and not isinstance(r, bool):
        return f" = {_h(r) if r > 9 else r}"
    if hasattr(r, "path"):
        return f" = {r.path}"
    return f" = {r!r}" if len(repr(r)) < 40 else ""


# -- the entry point ------------------------------------------------------------------------

def narrate(record, before, after, changes=None):
    """Tell what step ``record`` did, in plain sentences (one a line).

    :param record: the step's ``StepRecord`` (``m.timeline.record(i)``, ``m.last_step``).
    :param before: the machine before it (``m.timeline.state(i)``).
    :param after: the machine after it (``m.timeline.state(i + 1)``).
    :param changes: the step's :class:`~vmwidgets.views.diff.Changes` if already computed.
    :returns: the text; the first line names the call and its result or error.
    """
    if not hasattr(record, "op") or not hasattr(record, "events"):
        raise TypeError(f"record must be a StepRecord (m.timeline.record(i)), "
                        f"not {type(record).__name__}")
    ch = changes if changes is not None else step_changes(before, after, record)
    n = _Narrator(record, before, after, ch)
    return n.run()


def narrate_step(machine, index=None):
    """Tell what step ``index`` of ``machine`` did (default: its last step).

    The same text as :func:`narrate`, with the record and the states before and after
    taken from ``machine.timeline``: what a lesson prints after each call. Steps are
    numbered from 0 as in ``m.timeline.record(index)`` and in the text ("Step 1: ..."); a
    machine's first step is usually its ``spawn``.

    >>> import vmwidgets as vw
    >>> m = vw.Machine(ram="16M"); p = m.spawn()
    >>> a = p.mmap(0x10000000, 8192, vw.PROT_READ, vw.MAP_PRIVATE | vw.MAP_ANONYMOUS | vw.MAP_FIXED)
    >>> print(narrate_step(m).splitlines()[0])
    Step 1: pid 1: mmap(0x10000000, 0x2000, PROT_READ, MAP_PRIVATE|MAP_FIXED|MAP_ANONYMOUS) = 0x10000000.
    >>> narrate_step(m, 2)
    Traceback (most recent call last):
    ValueError: there is no step 2: this machine has made steps 0 to 1
    """
    tl = getattr(machine, "timeline", None)
    if tl is None:
        raise ValueError("this machine keeps no history: make it with vw.Machine(history=True)")
    total = len(tl)
    if total == 0:
        raise ValueError("this machine has made no step yet")
    index = total - 1 if index is None else index
    if isinstance(index, bool) or not isinstance(index, int):
        raise TypeError(f"index must be a step number, not {type(index).__name__}")
    if not 0 <= index < total:
        raise ValueError(f"there is no step {index}: this machine has made steps 0 to {total - 1}")
    return narrate(tl.record(index), tl.state(index), tl.state(index + 1))


class _Narrator:
    def __init__(self, record, before, after, ch):
        self.record = record
        self.op = record.op
        self.before = before
        self.after = after
        self.ch = ch
        self.trace = record.trace
        self.lines = []
        self.pid = self._pid()
        self.done = []          # (start, end, new vm_flags) of the parts already modified

    def say(self, text):
        if text:
            self.lines.append(text)

    def _pid(self):
        target = self.op.target
        if not target:
            return 0
        for m in (self.before, self.after):
            for p in m.processes:
                if p.pid == target or any(t.tid == target for t in p.threads):
                    return p.pid
        return target

    def calls(self, func):
        return self.trace.find_all(func) if self.trace is not None else []

    def first(self, func):
        return self.trace.find(func) if self.trace is not None else None

    def proc(self, machine, pid=None):
        pid = self.pid if pid is None else pid
        return next((p for p in machine.processes if p.pid == pid), None)

    # -- the plan -----------------------------------------------------------------------------
    def run(self):
        rec = self.record
        head = f"Step {rec.index}: {op_text(self.op)}"
        if self.op.target and self.pid != self.op.target:
            head = head.replace(f"pid {self.op.target}: ",
                                f"tid {self.op.target} (pid {self.pid}): ", 1)
        if rec.error:
            self.say(f"{head} failed: {_error_words(rec.error)}.")
        else:
            self.say(f"{head}{_result_text(rec)}.")
        handler = getattr(self, "on_" + self.op.call, None)
        if rec.error:
            self.on_error()
        if handler is not None:
            handler()
        else:
            self.generic()
        self.tlb()
        if not rec.error:
            self.summary()
        return "\n".join(self.lines)

    # -- errors ---------------------------------------------------------------------------------
    def on_error(self):
        rec = self.record
        reason = rec.reason
        if reason is None:
            reason = next((e.outcome[0] for e in rec.events if e.errno and e.outcome), None)
        if rec.error == "SegmentationFault":
            self.segfault(reason)
            return
        if rec.error == "ProcessKilled" and self.first("out_of_memory") is not None:
            self.oom(reason)
            return
        if reason:
            self.say(f"Why: {reason}.")
        if not _memory_changed(self.ch):
            self.say("Nothing changed: the kernel refused the call before touching the "
                     "address space.")
        else:
            lines = [line for line in self.ch.lines() if not line.startswith(("CPU ", "tlb_flush"))]
            self.say("Part of the work was done before the failure, and Linux does not undo "
                     "it: " + "; ".join(lines[:6]) + (" ..." if len(lines) > 6 else "") + ".")

    def oom(self, reason):
        victims = self.ch.pids_removed
        freed = [f for f in self.ch.frames if f.kind == "freed"]
        self.say("The kernel needed a free frame and found none: __alloc_pages_slowpath() "
                 "tried reclaim first, then called the OOM killer (out_of_memory), which "
                 "picked the process with the highest badness and killed it with SIGKILL"
                 + (f" (pid {', '.join(map(str, victims))})" if victims else "") + ".")
        if reason:
            self.say(f"Why: {reason}.")
        if freed:
            self.say(f"Its exit freed {_plural(len(freed), 'frame')} "
                     f"({_pfns(f.pfn for f in freed)}).")

    def segfault(self, reason):
        m = re.match(r"SIGSEGV \((SEGV_\w+)\) on (\w+) at (0x[0-9a-f]+): (.*)", reason or "")
        if m is None:
            self.say(f"The access raised SIGSEGV: {reason}.")
            return
        code, access, addr, why = m.groups()
        path = ("bad_area_access_error()" if self.first("bad_area_access_error") else
                "bad_area_nosemaphore()" if self.first("bad_area_nosemaphore") else
                "the fault handler")
        meaning = ("no VMA maps that address" if code == "SEGV_MAPERR" else
                   "a VMA maps the address but does not allow this access")
        self.say(f"The {access} at {addr} faulted and {path} sent SIGSEGV with si_code "
                 f"{code} ({meaning}): {why}.")
        self.say("Nothing changed: a refused access leaves the page tables and frames as "
                 "they were.")

    # -- mmap, brk --------------------------------------------------------------------------------
    def on_mmap(self):
        if self.record.error:
            return
        addr = self.record.result
        length = self.op.args[1] if len(self.op.args) > 1 else 0
        end = addr + F.page_align(length)
        fixed = len(self.op.args) > 3 and self.op.args[3] & (F.MAP_FIXED | F.MAP_FIXED_NOREPLACE)
        hint = self.op.args[0] if self.op.args else 0
        if fixed:
            self.say(f"MAP_FIXED put the mapping exactly at {_rng(addr, end)}.")
        elif hint and addr == hint:
            self.say(f"The hint {_h(hint)} was free, so the kernel placed the mapping there: "
                     f"{_rng(addr, end)}.")
        elif self.first("unmapped_area_topdown"):
            self.say(f"The kernel placed the new mapping at {_rng(addr, end)} (top-down "
                     "search below mmap_base).")
        elif self.first("unmapped_area"):
            self.say(f"The kernel placed the new mapping at {_rng(addr, end)} (bottom-up "
                     "search).")
        replaced = [c for c in self.ch.vmas.get(self.pid, []) if c.before is not None
                    and c.before.start < end and addr < c.before.end
                    and (c.after is None or "resized" in c.kinds)]
        if replaced:
            self.say("It replaced what was mapped there: " + ", ".join(
                _vma_text(c.before) for c in replaced) + " (unmapped first, as munmap would).")
        self.new_range(addr, end, "vma_merge_new_range")
        self.populate()

    def populate(self):
        if self.first("__mm_populate") or self.first("populate_vma_page_range"):
            faulted = [c for c in self.ch.ptes if c.pid == self.pid and c.new]
            self.say(f"MAP_POPULATE faulted {_plural(len(faulted), 'page')} in at once "
                     "(__mm_populate).")

    def new_range(self, start, end, merge_func, creator="__mmap_new_vma"):
        """Narrate a range that was not mapped before: a merge, or a new VMA."""
        merges = self.calls(merge_func)
        merged = [c for c in merges if c.result not in (None, "NULL")]
        before_p, after_p = self.proc(self.before), self.proc(self.after)
        if after_p is None:
            return
        now = after_p.mm.vma_lookup(start)
        if merged:
            expand = merged[0].find("vma_expand")
            target = _parse_vma(expand.args.get("target")) if expand else None
            self.say(self.merge_sentence(start, end, target, now, before_p, merge_func))
        else:
            if now is None:
                return
            self.say(f"A new VMA {_vma_text(now)} was created ({creator}): "
                     + self.no_merge_reason(before_p, now, start, end) + ".")

    def merge_sentence(self, start, end, target, now, before_p, func):
        prev = self.prev_at(before_p, start)
        nxt = self.next_at(before_p, end)
        left = prev is not None and now.vm_start == prev.vm_start
        right = nxt is not None and now.vm_end == nxt.vm_end
        if left and right:
            who = (f"merged the range with both neighbours: the previous VMA "
                   f"{_vma_text(prev)} grew over it and over the next VMA {_vma_text(nxt)}, "
                   f"which was removed; the result is {_vma_text(now)}")
            why = self.why_merge(prev, now, start, end, both=True, others=(nxt,))
        elif left:
            who = (f"merged the range into the previous VMA {_vma_text(prev)}, which grew "
                   f"up to {_vma_text(now)}")
            why = self.why_merge(prev, now, start, end)
            other = self.other_side(before_p, now, start, end, True, False)
            if other:
                why += "; " + other
        elif right:
            who = (f"merged the range into the next VMA {_vma_text(nxt)}, which grew down "
                   f"to {_vma_text(now)}")
            why = self.why_merge(nxt, now, start, end)
            other = self.other_side(before_p, now, start, end, False, True)
            if other:
                why += "; " + other
        else:
            t = f" {_rng(*target)}" if target else ""
            return f"No new VMA: {func}() expanded the existing VMA{t} to {_vma_text(now)}."
        return f"No new VMA: {func}() {who}, because {why}."

    def prev_at(self, proc, addr):
        """The VMA that ends at ``addr`` as the kernel saw it during this step (or None):
        the part below ``addr`` of a VMA spanning it, with the flags given by an earlier
        part of the same call."""
        if proc is None or not addr:
            return None
        v = proc.mm.find_vma(addr - 1)
        if v is None or v.vm_start >= addr:
            return None
        return self._as_seen(v, v.vm_start, addr)

    def next_at(self, proc, addr):
        """The VMA that starts at ``addr`` during this step (see :meth:`prev_at`)."""
        if proc is None:
            return None
        v = proc.mm.find_vma(addr)
        if v is None or v.vm_start > addr:
            return None
        return self._as_seen(v, addr, v.vm_end)

    def _as_seen(self, v, start, end):
        flags = None
        for s, e, newflags in self.done:
            if s < end and start < e and newflags is not None:
                flags = newflags
        if flags is None and (start, end) == (v.vm_start, v.vm_end):
            return v
        return _Clip(v, start, end, flags)

    def other_side(self, before_p, now, start, end, with_prev, with_next, flags=None):
        """Why a merge on one side did not take in the touching VMA on the other side."""
        if with_prev and not with_next:
            nxt = self.next_at(before_p, end)
            if nxt is not None:
                return (f"it did not also merge with the next VMA {_vma_text(nxt)}, which "
                        + _refusal(nxt, now, "next", flags=flags))
        if with_next and not with_prev:
            prev = self.prev_at(before_p, start)
            if prev is not None:
                return (f"it did not also merge with the previous VMA {_vma_text(prev)}, "
                        "which " + _refusal(prev, now, "previous", flags=flags))
        return ""

    def why_merge(self, neighbour, now, start, end, both=False, source=None, others=()):
        """Why the range merged with ``neighbour`` (and ``others``, the other neighbour of a
        merge with both). ``source`` is the VMA the range belonged to (mprotect, madvise),
        ``None`` for a range not mapped before: its anon_vma counts as the range's
        (6.18 is_mergeable_anon_vma(): one side without an anon_vma is compatible, the
        merged VMA takes the other side's)."""
        parts = ["the range and both neighbours touch" if both else "they touch",
                 f"have the same flags ({now.perms()})"]
        if now.vm_file is None:
            parts.append("are all anonymous" if both else "are both anonymous")
        else:
            parts.append(f"map the same file {now.vm_file.path} at contiguous offsets")
        mine = getattr(source, "anon_vma", None)
        nav = neighbour.anon_vma.id if neighbour.anon_vma is not None else None
        others_av = [o.anon_vma.id for o in others if o is not None and o.anon_vma is not None]
        keep = now.anon_vma.id if now.anon_vma is not None else None
        if mine is None and nav is None and not others_av:
            parts.append("none has an anon_vma yet" if both else "neither has an anon_vma yet")
        elif mine is not None and nav is None and not others_av:
            who = "the neighbours have" if both else "the neighbour has"
            parts.append(f"{who} no anon_vma while the range's VMA has #{mine.id}, which is "
                         f"compatible: the merged VMA takes over #{keep if keep is not None else mine.id}")
        elif mine is not None and nav is not None and mine.id == nav and not (
                set(others_av) - {nav}):
            parts.append(f"they share anon_vma #{nav} (the merged VMA keeps it)")
        else:
            parts.append(f"the anon_vmas are compatible (the merged VMA keeps "
                         f"#{keep if keep is not None else nav})")
        return ", ".join(parts[:-1]) + ", and " + parts[-1]

    def no_merge_reason(self, before_p, new, start, end):
        if before_p is None:
            return "the process had no VMAs"
        prev = self.prev_at(before_p, start)
        nxt = self.next_at(before_p, end)
        if new.vm_flags & F.VM_SPECIAL:
            return ("it is a special mapping (" + "|".join(
                F.vm_flags_names(new.vm_flags & F.VM_SPECIAL)) + "), which never merges")
        if prev is None and nxt is None:
            return "no VMA touches it on either side, so there was nothing to merge with"
        out = []
        for side, nb in (("previous", prev), ("next", nxt)):
            if nb is None:
                out.append(f"no {side} VMA touches it")
            else:
                out.append(f"the {side} VMA {_vma_text(nb)} " + _refusal(nb, new, side))
        return "; ".join(out)

    def on_brk(self):
        if self.record.error:
            return
        old = self.ch.brk.get(self.pid)
        if old is None:
            arg = self.op.args[0] if self.op.args else 0
            p = self.proc(self.after)
            if arg and p is not None and arg != p.mm.brk:
                self.say(f"The kernel refused to move the break to {_h(arg)} and returned "
                         f"the old break {_h(p.mm.brk)} (brk(2) reports no errno; "
                         "sbrk() turns this into ENOMEM).")
            else:
                self.say("The break did not move.")
            return
        lo, hi = old
        if hi > lo:
            self.say(f"The heap grew: the break moved up from {_h(lo)} to {_h(hi)} "
                     "(do_brk_flags).")
            self.new_range(F.page_align(lo), F.page_align(hi), "vma_merge_new_range",
                           creator="do_brk_flags")
        else:
            self.say(f"The heap shrank: the break moved down from {_h(lo)} to {_h(hi)}; "
                     "the pages above it were unmapped (do_vmi_munmap).")
            self.unmapped(F.page_align(hi), F.page_align(lo))

    # -- munmap --------------------------------------------------------------------------------
    def on_munmap(self):
        if self.record.error:
            return
        start, length = self.op.args[0], self.op.args[1]
        self.unmapped(start, start + F.page_align(length))

    def unmapped(self, start, end):
        pid = self.pid
        before_p = self.proc(self.before)
        if before_p is None:
            return
        hit = before_p.mm.vmas_in(start, end)
        if not hit:
            self.say(f"Nothing was mapped in {_rng(start, end)}; munmap succeeds anyway and "
                     "changes nothing.")
            return
        for split in self.calls("__split_vma"):
            v = _parse_vma(split.args.get("vma"))
            at = _int(split.args.get("addr"))
            if v and at is not None:
                self.say(f"__split_vma() cut {_rng(*v)} at {_h(at)}, because the range "
                         f"{'starts' if at == start else 'ends'} inside that VMA.")
        gone = []
        for v in hit:
            s, e = max(v.vm_start, start), min(v.vm_end, end)
            gone.append(_rng(s, e, v.perms()))
        self.say("Unmapped " + ", ".join(gone) + ".")
        kept = [c.after for c in self.ch.vmas.get(pid, []) if c.after is not None]
        if kept:
            self.say("What remains of the VMAs: " + ", ".join(_vma_text(k) for k in kept) + ".")
        self.zap_summary(pid)

    def zap_summary(self, pid, quiet=False):
        cleared = [c for c in self.ch.ptes if c.pid == pid and c.old and not c.new]
        if not cleared:
            if not quiet:
                self.say("No page of the range was present, so no PTE was cleared.")
            return
        freed = [f for f in self.ch.frames if f.kind == "freed" and f.before.kind != "pgtable"]
        kept = [f for f in self.ch.frames if f.kind == "changed" and "mapcount" in f.fields
                and f.after.kind != "pgtable"]
        tables = [f for f in self.ch.frames if f.kind == "freed" and f.before.kind == "pgtable"]
        text = f"zap_pte_range() cleared {_plural(len(cleared), 'PTE')}"
        if freed:
            text += (f"; {_plural(len(freed), 'frame')} went back to the free list "
                     f"({_pfns(f.pfn for f in freed)})")
        if kept:
            text += (f"; {_plural(len(kept), 'frame')} stayed, still mapped elsewhere ("
                     + ", ".join(f"pfn {_h(f.pfn)} mapcount {f.before.mapcount} -> "
                                 f"{f.after.mapcount}" for f in kept[:4]) + ")")
        if tables:
            text += (f"; free_pgtables() freed {_plural(len(tables), 'page-table page')} "
                     f"({_pfns(f.pfn for f in tables)}) that covered only this range")
        self.say(text + ".")
        if self.ch.anon_vmas_removed:
            self.say("anon_vma " + ", ".join(f"#{i}" for i in self.ch.anon_vmas_removed)
                     + " freed: no VMA uses it any more (unlink_anon_vmas).")

    # -- mprotect, madvise ------------------------------------------------------------------------
    def on_mprotect(self):
        if self.record.error:
            return
        start, length, prot = self.op.args[0], self.op.args[1], self.op.args[2]
        end = start + F.page_align(length)
        before_p, after_p = self.proc(self.before), self.proc(self.after)
        fixups = self.calls("mprotect_fixup")
        if not fixups:
            self.say("No VMA changed.")
        for fix in fixups:
            self.fixup(fix, before_p, after_p)
        self.protection_ptes(start, end)

    def fixup(self, fix, before_p, after_p):
        v = _parse_vma(fix.args.get("vma"))
        s, e = _int(fix.args.get("start")), _int(fix.args.get("end"))
        if v is None or s is None or e is None:
            return
        old = before_p.mm.vma_lookup(v[0]) if before_p else None
        now = after_p.mm.vma_lookup(s) if after_p else None
        merge = fix.find("vma_merge_existing_range")
        splits = [c for c in fix.find_all("split_vma")]
        modify = fix.find("vma_modify_flags")
        newflags = _fixup_flags(fix)
        verb = self.op.call
        what = "permissions" if verb == "mprotect" else "flags"
        part = _rng(s, e)
        flagbits = [n.split(": vm_flags ", 1)[1] for _, c in fix.walk()
                    for n in c.changes if ": vm_flags " in n]
        flagnote = f" (vm_flags {' '.join(flagbits)})" if flagbits else ""
        flagtext = (f" The range {part} now has vm_flags {' '.join(flagbits)}."
                    if flagbits else "")
        self.done.append((s, e, newflags))
        if modify is None:
            if now is not None and old is not None and now.vm_flags != old.vm_flags:
                self.say(f"{_rng(*v)} covers exactly the range, so its flags were changed in "
                         f"place: it is now {self._as_changed(now, s, e, newflags)}{flagnote}; "
                         "no split or merge." + self._absorbed_later(fix, now, s, e))
            else:
                self.say(f"{_rng(*v)} already had these {what}: nothing to do.")
            return
        if merge is not None and merge.result not in (None, "NULL") and now is not None:
            prev = self.prev_at(before_p, s)
            nxt = self.next_at(before_p, e)
            with_prev = prev is not None and now.vm_start == prev.vm_start
            with_next = nxt is not None and now.vm_end == nxt.vm_end
            side = ("both neighbours" if with_prev and with_next else
                    f"the previous VMA {_vma_text(prev)}" if with_prev else
                    f"the next VMA {_vma_text(nxt)}" if with_next else "a neighbour")
            nb = prev if with_prev else nxt
            rest = ""
            if old is not None and (old.vm_start < s or old.vm_end > e):
                left = after_p.mm.vma_lookup(old.vm_start if old.vm_start < s else e)
                if left is not None:
                    rest = (f"; the rest of the old VMA stays {_vma_text(left)} (it shrank, "
                            "no split was needed)")
            why = (self.why_merge(nb, now, s, e, both=with_prev and with_next, source=old,
                                  others=(nxt,) if with_prev and with_next else ())
                   if nb is not None else "they are compatible")
            if old is not None and old.vm_start == s and old.vm_end == e:
                rest = (f"; the VMA {_rng(*v)} itself was absorbed and freed")
            other = self.other_side(before_p, now, s, e, with_prev, with_next,
                                    flags=newflags)
            if other:
                rest += "; " + other
            self.say(f"{verb} changed {part} of {_rng(*v)}{flagnote}: "
                     f"vma_merge_existing_range() merged it with {side}, because under the "
                     f"new {what} {why}. The merged VMA is {_vma_text(now)}{rest}.")
            return
        why = ""
        if merge is not None:
            why = self.existing_no_merge(before_p, old, s, e, fix)
        if splits:
            cuts = [_int(c.args.get("addr")) for c in splits]
            pieces = sorted({v[0], v[1], *[c for c in cuts if c is not None]})
            parts = []
            for a, b in zip(pieces, pieces[1:]):
                vm = after_p.mm.vma_lookup(a) if after_p else None
                parts.append(_vma_text(vm) if vm is not None else _rng(a, b))
            self.say(f"{verb} split {_rng(*v)} in {len(pieces) - 1} (split_vma at "
                     + ", ".join(_h(c) for c in cuts if c is not None) + "): "
                     + ", ".join(parts) + "." + flagtext + (f" No merge: {why}." if why else ""))
        elif now is not None:
            self.say(f"The whole VMA {_rng(*v)} changed its flags in place to "
                     f"{self._as_changed(now, s, e, newflags)}."
                     + flagtext + (f" No merge: {why}." if why else "")
                     + self._absorbed_later(fix, now, s, e))

    def _as_changed(self, now, s, e, flags):
        """``[s-e perms name]``: the range as this fixup left it (a later fixup of the same
        call may have merged more into it: ``now`` is the VMA at the end of the step)."""
        if (now.vm_start, now.vm_end) == (s, e):
            return _vma_text(now)
        from ..procfs import vma_name
        perms = _perms(flags, now) if flags is not None else now.perms()
        return _rng(s, e, perms, vma_name(now))

    def _absorbed_later(self, fix, now, s, e):
        """`` Then ... absorbed ...`` when a later fixup of this call merged a VMA into the
        range this fixup changed in place (the call tree's order)."""
        if (now.vm_start, now.vm_end) == (s, e) or self.trace is None:
            return ""
        later = False
        for _, c in self.trace.walk():
            if c is fix:
                later = True
                continue
            if not later or c.func not in ("mprotect_fixup", "madvise_update_vma"):
                continue
            merge = c.find("vma_merge_existing_range")
            got = _parse_vma(merge.result) if merge is not None else None
            v = _parse_vma(c.args.get("vma"))
            if got and v and got[0] <= s and e <= got[1] and v[0] >= e:
                return (f" Then it absorbed the next VMA {_rng(*v)}, as told next, and "
                        f"ended as {_vma_text(now)}.")
        return 

    def existing_no_merge(self, before_p, old, s, e, fix):
        if old is None:
            return ""
        if old.vm_start < s and old.vm_end > e:
            return ("the range is in the middle of the VMA, so it touches no neighbour; "
                    "the VMA is cut in three")
        newflags = _fixup_flags(fix)
        out = []
        if old.vm_start == s:
            prev = self.prev_at(before_p, s)
            out.append("no previous VMA touches it" if prev is None else
                       f"the previous VMA {_vma_text(prev)} "
                       + _refusal(prev, old, "previous", flags=newflags))
        if old.vm_end == e:
            nxt = self.next_at(before_p, e)
            out.append("no next VMA touches it" if nxt is None else
                       f"the next VMA {_vma_text(nxt)} "
                       + _refusal(nxt, old, "next", flags=newflags))
        return "; ".join(out)

    def protection_ptes(self, start, end):
        changed = self.ch.ptes_in(self.pid, start, end)
        if changed:
            ex = changed[0]
            self.say(f"change_protection() rewrote {_plural(len(changed), 'present PTE')} "
                     f"(e.g. {_h(ex.address)}: {pte_text(ex.old)} -> {pte_text(ex.new)}).")
        else:
            self.say("No page of the range was present, so no PTE had to change "
                     "(the new permissions apply at the next fault).")

    def on_madvise(self):
        if self.record.error:
            return
        start, length, advice = self.op.args[0], self.op.args[1], self.op.args[2]
        end = start + F.page_align(length)
        name = _madv_name(advice)
        if advice in (F.MADV_DONTNEED, F.MADV_DONTNEED_LOCKED):
            self.say(f"{name} dropped the pages of {_rng(start, end)}: the VMA stays, and "
                     "the next access faults in a fresh zero-filled page (or the file's).")
            self.zap_summary(self.pid)
            return
        updates = self.calls("madvise_update_vma")
        before_p, after_p = self.proc(self.before), self.proc(self.after)
        for call in updates:
            self.fixup(call, before_p, after_p)
        # MADV_FREE makes the PTE clean and old (pte_mkclean(): D or the saved dirty bit).
        cleaned = [c for c in self.ch.ptes if c.pid == self.pid and c.old and c.new
                   and pte_dirty(c.old) and not pte_dirty(c.new)
                   and not (c.old ^ c.new) & ~(F._PAGE_DIRTY_BITS | F._PAGE_ACCESSED)]
        if advice == F.MADV_FREE and cleaned:
            self.say(f"MADV_FREE cleared the dirty bit of {_plural(len(cleaned), 'PTE')}: "
                     "the pages stay mapped, but reclaim may now drop them without writing "
                     "them to swap (a write before that keeps them).")
        elif advice == F.MADV_FREE:
            self.say("MADV_FREE found no dirty anonymous page to mark in the range.")
        if not updates and advice != F.MADV_FREE:
            self.generic()

    def on_mremap(self):
        if self.record.error:
            return
        old_addr, old_size, new_size = self.op.args[:3]
        old_end = old_addr + F.page_align(old_size)
        new_addr = self.record.result
        new_end = new_addr + F.page_align(new_size)
        after_p = self.proc(self.after)
        now = after_p.mm.vma_lookup(new_addr) if after_p else None
        if self.first("move_vma"):
            moved = [c for c in self.ch.ptes if c.pid == self.pid and c.new and not c.old
                     and new_addr <= c.address < new_end]
            self.say(f"mremap moved {_rng(old_addr, old_end)} to {_rng(new_addr, new_end)} "
                     "(move_vma: copy_vma made the VMA at the new place, move_page_tables "
                     f"carried {_plural(len(moved), 'PTE')} over, so the frames did not move "
                     "and no data was copied); the old range was unmapped.")
        elif new_size > old_size and (self.first("expand_vma_in_place")
                                      or self.first("vma_merge_extend")):
            how = "vma_merge_extend" if self.first("vma_merge_extend") else "expand_vma_in_place"
            self.say(f"mremap grew the mapping in place from {_rng(old_addr, old_end)} to "
                     f"{_rng(new_addr, new_end)}, since the space after it was free ({how}).")
        elif new_size < old_size:
            self.say(f"mremap shrank the mapping to {_rng(new_addr, new_end)}: the tail "
                     f"{_rng(new_end, old_end)} was unmapped, as munmap would.")
            self.zap_summary(self.pid, quiet=True)
        else:
            self.say("The size did not change: nothing to do.")
        if now is not None and self.ch.vma_list:
            self.say(f"The mapping is now {_vma_text(now)}.")

    # -- accesses ------------------------------------------------------------------------------
    def on_write(self):
        self.access()

    on_read = on_touch = on_write

    def access(self):
        if self.record.error and self.record.error != "SegmentationFault":
            return
        faults = self.calls("exc_page_fault")
        if self.record.error:
            return
        if self.trace is None:
            self.access_from_diff()
            return
        if not faults:
            stale = self.stale_hits()
            fills = [c for c in self.ch.tlb if c.filled]
            if stale:
                self.say("No page fault, but not because the page tables allow it: "
                         + "; ".join(stale)
                         + ". The CPU used a stale TLB entry that a flush should have removed.")
            elif fills:
                self.say("No page fault: the page tables already allowed the access; the CPU's "
                         "TLB missed and cached the translation after a page-table walk.")
            else:
                self.say("No page fault: the TLB (or the page tables) already held a "
                         "translation that allows this access.")
            ad = [c for c in self.ch.ptes if c.old and c.new and not (
                (c.old ^ c.new) & ~(F._PAGE_ACCESSED | F._PAGE_DIRTY))]
            if ad:
                self.say(f"The CPU's page-table walk set the accessed/dirty bits of "
                         f"{_plural(len(ad), 'PTE')} ({ad[0]}), as x86 hardware does.")
            if self.ch.frames_changed:
                self.say(f"Written into pfn {_pfns(self.ch.frames_changed)}.")
            return
        for fault in faults:
            self.fault(fault)

    def access_from_diff(self):
        """Without a call tree (``Machine(trace=False)``): what the PTE changes show."""
        ptes = [c for c in self.ch.ptes if c.pid == self.pid]
        if not ptes:
            self.say("No PTE changed (no call tree was recorded: the machine runs with "
                     "trace=False).")
            return
        for c in ptes[:4]:
            old, new = pte_text(c.old), pte_text(c.new)
            if not c.old and new.startswith("zero page"):
                what = "a read fault mapped the shared zero page"
            elif not c.old:
                what = "a fault mapped a page"
            elif c.old_pfn != c.new_pfn and c.new:
                what = "a write fault copied the page (copy-on-write)"
            elif c.old_pfn == c.new_pfn and "rw" in new and "ro" in old:
                what = "a write fault made the page writable in place"
            else:
                what = "the PTE changed"
            self.say(f"At {_h(c.address)}, {what}: {old} -> {new}.")

    def stale_hits(self):
        """Pages of this access whose PTE (before the step) does not map them, although the
        access succeeded without a fault: served by a stale TLB entry."""
        from ..core import pgtable
        before_p = self.proc(self.before)
        if before_p is None or len(self.op.args) < 2:
            return []
        addr = self.op.args[0]
        size = len(self.op.args[1]) if isinstance(self.op.args[1], (bytes, bytearray)) else (
            self.op.args[1] if isinstance(self.op.args[1], int) and self.op.call == "read" else 1)
        out = []
        page = addr & ~(PAGE - 1)
        while page < addr + max(size, 1) and len(out) < 4:
            pte = pgtable.get_pte(before_p.mm, page)
            if not pgtable.pte_present(pte):
                task = next((t for t in [before_p, *before_p.threads]
                             if t.tid == self.op.target), before_p)
                cpu = task.cpu
                entry = None
                if cpu is not None:
                    c = self.before.cpus[cpu]
                    entry = c.tlb.peek(c.pcid(), page >> F.PAGE_SHIFT)
                where = f"CPU {cpu}'s TLB still mapped {_h(page)}"
                if entry is not None:
                    frame = self.before.phys.pages[entry.pfn]
                    where += f" to pfn {_h(entry.pfn)}"
                    if frame.kind == "free":
                        where += ", a frame that is free now"
                    else:
                        where += (f", a frame now reused as another {frame.kind} page "
                                  f"(mapcount {frame.mapcount})")
                out.append(f"the page table has no entry for {_h(page)} ({pte_text(pte)}), "
                           f"yet {where}")
            page += PAGE
        return out

    def fault(self, fault):
        addr = _int(fault.args.get("address"))
        write = fault.args.get("write") == "True"
        kind = "write" if write else "read"
        vma = None
        lock = fault.find("lock_vma_under_rcu") or fault.find("lock_mm_and_find_vma")
        if lock is not None:
            vma = _parse_vma(lock.result)
        where = f" in {_rng(*vma)}" if vma else ""
        head = f"A {kind} fault at {_h(addr)}{where}"
        if fault.find("expand_downwards") or fault.find("expand_stack_locked"):
            self.say(f"{head}: the address is just below the stack, so the stack VMA grew "
                     "down to cover it (expand_downwards).")
            head = "Then the fault"
        dap = fault.find("do_anonymous_page")
        wp = fault.find("do_wp_page")
        swap = fault.find("do_swap_page")
        dofault = fault.find("do_fault")
        special = fault.find("special_mapping_fault")
        pte = self.ch.pte_change(self.pid, addr) if addr is not None else None
        if dap is not None:
            prep = dap.find("__anon_vma_prepare")
            alloc = dap.find("alloc_anon_folio")
            if alloc is None:
                self.say(f"{head}: nothing was mapped there yet, so do_anonymous_page() "
                         "mapped the shared zero page read-only (pfn 0x1); no frame is "
                         "allocated until the first write.")
                return
            pfn = _parse_pfn(alloc.result)
            text = (f"{head}: first touch of an anonymous page (do_anonymous_page)."
                    + _anon_vma_prepared(dap))
            text += (f" A zeroed frame, pfn {_h(pfn) if pfn is not None else '?'}, was "
                     "allocated, added to the reverse map (folio_add_new_anon_rmap) and mapped "
                     + (f"({pte_text(pte.old)} -> {pte_text(pte.new)})." if pte else "writable."))
            self.say(text)
            return
        if wp is not None:
            self.say(self.cow_sentence(head, wp))
            return
        if swap is not None:
            cached = swap.find("swap_cache_get_folio")
            slot = cached.args.get("slot") if cached is not None else None
            where = f" ({slot})" if slot else ""
            if cached is not None and cached.result not in (None, "NULL"):
                how = (f"found the page still in the swap cache{where}, as {cached.result}: "
                       "no I/O (another process had already read it back)")
            else:
                how = (f"read the page back from swap{where}"
                       + (f" into a new frame, pfn {_h(pte.new_pfn)}" if pte and pte.new else ""))
            self.say(f"{head}: the PTE held a swap entry, so do_swap_page() {how}"
                     + (f"; the PTE now maps it ({pte_text(pte.new)})" if pte and pte.new else "")
                     + ".")
            return
        if dofault is not None:
            self.say(self.file_fault_sentence(head, dofault, pte))
            return
        if special is not None:
            self.say(f"{head}: a special mapping ([vdso]/[vvar]) supplied its page "
                     "(special_mapping_fault).")
            return
        if fault.find("do_sigbus"):
            self.say(f"{head}: past the end of the file: SIGBUS.")
            return
        if fault.error is None and pte is None:
            self.say(f"{head}: the PTE already allowed it (another thread or an earlier "
                     "page of the access had faulted it in); the fault only refilled the TLB.")

    def cow_sentence(self, head, wp):
        reuse_check = wp.find("wp_can_reuse_anon_folio")
        copy = wp.find("wp_page_copy")
        reuse = wp.find("wp_page_reuse")
        shared = wp.find("wp_page_shared")
        if shared is not None:
            return (f"{head}: a write to a read-only PTE of a shared mapping: "
                    "wp_page_shared() made it writable and marked the page dirty (no copy: "
                    "MAP_SHARED writes go to the page cache).")
        if copy is not None:
            old = _parse_pfn(copy.args.get("old"))
            new = None
            pre = copy.find("folio_prealloc")
            if pre is not None:
                new = _parse_pfn(pre.result)
            newtxt = _h(new) if new is not None else "?"
            if old is None or old == 1:
                return (f"{head}: the PTE mapped the shared zero page read-only, which is "
                        f"never written; do_wp_page() -> wp_page_copy() gave the process a "
                        f"zeroed frame of its own, pfn {newtxt}, mapped writable."
                        + _anon_vma_prepared(copy))
            why = f"pfn {_h(old)} is still mapped elsewhere"
            if reuse_check is not None:
                m = re.search(r"refcount (\d+)", " ".join(reuse_check.changes))
                if m:
                    why = f"pfn {_h(old)} is shared (refcount {m.group(1)})"
            fc = self.ch.frame_change(old) if old is not None else None
            after = (f"; pfn {_h(old)} is now mapped {fc.after.mapcount} time(s)"
                     if fc is not None and fc.after.kind != "free" else
                     f"; pfn {_h(old)} was freed" if fc is not None else "")
            return (f"{head}: copy-on-write. The PTE was read-only although the VMA is "
                    f"writable, so do_wp_page() ran; {why}, so wp_page_copy() copied it "
                    f"into a new frame, pfn {newtxt}, and pointed this process's PTE at it "
                    f"(writable){after}. The old translation was flushed from the TLB "
                    "(ptep_clear_flush).")
        if reuse is not None:
            page = _parse_pfn(reuse.args.get("page"))
            m = re.search(r"refcount (\d+)", " ".join(reuse_check.changes)) if reuse_check else None
            count = f" (refcount {m.group(1)})" if m else ""
            return (f"{head}: the PTE was write-protected (as for copy-on-write), but "
                    f"wp_can_reuse_anon_folio() found pfn {_h(page) if page is not None else '?'} "
                    f"used by this process alone{count}, so wp_page_reuse() just made "
                    "the PTE writable again: no copy.")
        return f"{head}: handled by do_wp_page()."

    def file_fault_sentence(self, head, dofault, pte):
        if dofault.find("do_cow_fault"):
            return (f"{head}: a private file mapping written for the first time: "
                    "do_cow_fault() copied the file's page (via the page cache) into a "
                    "private anonymous frame"
                    + (f" (pfn {_h(pte.new_pfn)})" if pte and pte.new else "")
                    + "; the file itself is not changed." + _anon_vma_prepared(dofault))
        if dofault.find("do_shared_fault"):
            return (f"{head}: do_shared_fault() mapped the file's page-cache page writable "
                    "and marked it dirty: the write will reach the file.")
        around = dofault.find("do_fault_around")
        mapped = [c for c in self.ch.ptes if c.pid == self.pid and c.new and not c.old]
        text = (f"{head}: do_read_fault() mapped the file's page from the page cache "
                "(filemap_fault")
        if dofault.find("do_sync_mmap_readahead"):
            text += ", with read-around"
        text += ")"
        if around is not None and len(mapped) > 1:
            text += (f"; fault-around (do_fault_around) mapped {_plural(len(mapped), 'page')} "
                     "already in the cache at once")
        return text + "."

    # -- processes -------------------------------------------------------------------------------
    def on_fork(self):
        if self.record.error:
            return
        child = self.ch.pids_added[0] if self.ch.pids_added else None
        if child is None:
            return
        vmas = self.ch.vmas.get(child, [])
        forks = self.calls("anon_vma_fork")
        new_avs = self.ch.anon_vmas_added
        reused = []
        for call in forks:
            if call.find("anon_vma_alloc") is None:
                clone = call.find("anon_vma_clone")
                for note in clone.all_changes() if clone is not None else []:
                    if ".anon_vma = anon_vma#" in note:
                        reused.append(note.rsplit("#", 1)[1])
        self.say(f"fork created pid {child}: dup_mmap() copied {_plural(len(vmas), 'VMA')} "
                 f"of pid {self.pid}.")
        if new_avs:
            self.say("anon_vma_fork() linked each child VMA that has anonymous pages to the "
                     "parent's anon_vmas (anon_vma_clone) and gave it a new anon_vma of its "
                     "own (" + ", ".join(f"#{i}" for i in new_avs) + "), so rmap finds the "
                     "shared pages through the parent's and the child's future private "
                     "pages through its own.")
        if reused:
            self.say("anon_vma_fork() reused an anon_vma that no VMA uses any more instead "
                     "of allocating one (" + ", ".join(f"#{i}" for i in reused) + "; an "
                     "idle anon_vma on the chain, left by an exited process).")
        if not new_avs and not reused and forks:
            self.say("No VMA had an anon_vma yet, so no anon_vma was created.")
        wp = [c for c in self.ch.ptes if c.pid == self.pid and c.old and c.new
              and c.old != c.new]
        shared = [f for f in self.ch.frames if f.kind == "changed" and "mapcount" in f.fields]
        if shared:
            self.say(f"copy_pte_range() shared {_plural(len(shared), 'page')} with the child "
                     f"(mapcount up: pfn {_pfns(f.pfn for f in shared)})"
                     + (f" and write-protected {_plural(len(wp), 'parent PTE')} (the "
                        "child's copies are read-only too): a write by either process now "
                        "faults for copy-on-write" if wp else "") + ".")
        else:
            self.say("No anonymous page was present, so no PTE was copied.")

    def on_exit(self):
        if self.record.error:
            return
        pid = self.pid
        if pid not in self.ch.pids_removed:
            self.say(f"Thread {self.op.target} exited; its CPU went idle and the address "
                     "space stays with the other threads.")
            return
        vmas = self.ch.vmas.get(pid, [])
        how = "exited" if self.op.call == "exit" else (
            f"was killed (SIGKILL: {self.op.args[0]})" if self.op.args else "was killed")
        self.say(f"pid {pid} {how}: exit_mmap() unmapped all {_plural(len(vmas), 'VMA')} "
                 "and freed its page tables.")
        freed = [f for f in self.ch.frames if f.kind == "freed" and f.before.kind != "pgtable"]
        kept = [f for f in self.ch.frames if f.kind == "changed" and "mapcount" in f.fields]
        if freed:
            self.say(f"{_plural(len(freed), 'frame')} it alone used went back to the free list "
                     f"({_pfns(f.pfn for f in freed)}).")
        if kept:
            self.say(f"{_plural(len(kept), 'frame')} stayed because other processes still map "
                     "them (" + ", ".join(f"pfn {_h(f.pfn)} mapcount {f.before.mapcount} -> "
                                         f"{f.after.mapcount}" for f in kept[:4]) + ").")
        if self.ch.anon_vmas_removed:
            self.say("anon_vma " + ", ".join(f"#{i}" for i in self.ch.anon_vmas_removed)
                     + " freed (unlink_anon_vmas).")

    on_kill = on_exit

    def on_spawn(self):
        if self.ch.pids_added:
            pid = self.ch.pids_added[0]
            self.say(f"A new process, pid {pid}, as after exec: "
                     f"{_plural(len(self.ch.vmas.get(pid, [])), 'VMA')} (the binary's "
                     "segments, [heap], [vvar], [vvar_vclock], [vdso], [stack]).")

    def on_clone_thread(self):
        if not self.record.error and self.record.result is not None:
            t = self.record.result
            tid = getattr(t, "tid", t)
            self.say(f"Thread {tid} shares pid {self.pid}'s address space (CLONE_VM): no VMA, "
                     "page table or frame was copied.")

    def on_switch_to(self):
        cpu, task = (list(self.op.args) + [None, None])[:2]
        if task is None:
            self.say(f"CPU {cpu} goes idle; it keeps the old address space loaded in lazy-TLB "
                     "mode (no flush now; it catches up if it comes back).")
        else:
            self.say(f"A context switch on CPU {cpu} to task {task}: switch_mm_irqs_off() loads "
                     "its page tables (CR3) with the PCID of its ASID slot.")

    def on_reclaim(self):
        freed = [f for f in self.ch.frames if f.kind == "freed" and f.before.kind != "pgtable"]
        if not freed:
            self.say("Reclaim found nothing it could free.")
            return
        unmapped = [c for c in self.ch.ptes if c.old and (not c.new or c.new != c.old)]
        pids = sorted({c.pid for c in unmapped})
        self.say(f"Reclaim freed {_plural(len(freed), 'frame')} ({_pfns(f.pfn for f in freed)}), "
                 "oldest on the LRU first (shrink_folio_list).")
        if unmapped:
            self.say(f"For each mapped frame, try_to_unmap() walked the reverse map (rmap_walk) "
                     f"to every PTE mapping it: {_plural(len(unmapped), 'PTE')} cleared or "
                     f"turned into swap entries in {_plural(len(pids), 'process', 'processes')} "
                     f"(pid {', '.join(map(str, pids))}).")
        if self.ch.swap_added:
            self.say(f"{_plural(len(self.ch.swap_added), 'anonymous page')} went to swap "
                     f"(slot {_pfns(self.ch.swap_added)}); the next access faults them back in "
                     "(do_swap_page).")

    def on_inject_skip_flush(self):
        cause = self.op.args[0] if self.op.args else self.op.kwargs.get("cause")
        self.say("Fault injection: the next TLB flush"
                 + (f" made for {cause}" if cause else "")
                 + " will be skipped, as if the kernel forgot it; the page tables will change "
                 "but the TLBs keep their entries.")

    def on_set_sysctl(self):
        if not self.record.error and len(self.op.args) >= 2:
            self.say(f"sysctl -w {self.op.args[0]}={self.op.args[1]}.")

    def on_advance_time(self):
        self.say("Time passed (jiffies advanced); only the TLB code cares: mm_cpumask is "
                 "trimmed at most once a second.")

    def on_create_file(self):
        if not self.record.error and self.op.args:
            self.say(f"{self.op.args[0]} now exists in the machine's filesystem.")

    def on_open(self):
        pass

    on_close = on_open

    # -- the rest ----------------------------------------------------------------------------
    def generic(self, skip_vmas=False):
        if self.record.error:
            return
        if not skip_vmas:
            for c in self.ch.vma_list:
                self.say(str(c) + ".")
        ptes = [c for c in self.ch.ptes]
        if ptes and self.op.call not in ("mremap",):
            self.say(f"{_plural(len(ptes), 'PTE')} changed, e.g. {ptes[0]}.")

    def tlb(self):
        flushes = self.record.tlb_flushes
        if self.trace is not None:
            skipped = [n for _, c in self.trace.walk() for n in c.changes if "INJECTED" in n]
            if skipped:
                self.say("No TLB flush was made: the flush was skipped on purpose "
                         "(inject_skip_flush), so CPUs that cached the old translations still "
                         "use them: a stale TLB entry can reach the freed frame.")
        if not flushes:
            return
        groups = {}
        for f in flushes:
            groups.setdefault((f.cause, f.pid), []).append(f)
        injected = self.trace is not None and any(
            "INJECTED" in n for _, c in self.trace.walk() for n in c.changes)
        # reclaim clears PTEs of every process mapping a frame (rmap walk); only the address
        # spaces loaded on some CPU get a tlb_flush record
        cleared = sorted({c.pid for c in self.ch.ptes if c.old and c.new != c.old})
        for (cause, pid), group in groups.items():
            others = ([q for q in cleared if (cause, q) not in groups]
                      if cause == "reclaim" else [])
            self.say(_tlb_sentence(cause, pid, group, self.calls("flush_tlb_mm_range"),
                                   before=self.before, unflushed=others, injected=injected,
                                   step_flushes=flushes))

    def summary(self):
        ch = self.ch
        bits = []
        if ch.vma_list:
            kinds = {}
            for c in ch.vma_list:
                k = ("added" if "added" in c.kinds else "removed" if "removed" in c.kinds
                     else "changed")
                kinds[k] = kinds.get(k, 0) + 1
            bits.append(", ".join(f"{_plural(n, 'VMA')} {k}" for k, n in kinds.items()))
        if ch.ptes:
            bits.append(_plural(len(ch.ptes), "PTE") + " changed")
        for kind in ("allocated", "freed"):
            frames = [f for f in ch.frames if f.kind == kind]
            side = "after" if kind == "allocated" else "before"
            tables = sum(1 for f in frames if getattr(f, side).kind == "pgtable")
            data = len(frames) - tables
            if data:
                bits.append(f"{_plural(data, 'frame')} {kind}")
            if tables:
                bits.append(f"{_plural(tables, 'page-table page')} {kind}")
        if ch.anon_vmas_added:
            bits.append(f"{_plural(len(ch.anon_vmas_added), 'anon_vma')} created")
        if ch.anon_vmas_removed:
            bits.append(f"{_plural(len(ch.anon_vmas_removed), 'anon_vma')} freed")
        if bits:
            self.say("In all: " + "; ".join(bits) + ".")
        elif not self.record.tlb_flushes and self.op.call not in ("read", "write", "touch"):
            self.say("Nothing in memory changed.")


def _anon_vma_prepared(call):
    """`` The VMA had no anon_vma, so ...`` when ``call`` ran __anon_vma_prepare()."""
    prep = call.find("__anon_vma_prepare")
    if prep is None:
        return ""
    found = prep.find("find_mergeable_anon_vma")
    created = prep.find("anon_vma_alloc")
    if created is not None:
        av = _ANON_VMA_RE.search(created.result or "")
        text = (f" The VMA had no anon_vma, so __anon_vma_prepare() created anon_vma "
                f"#{av.group(1) if av else '?'} and linked the VMA to it with an "
                "anon_vma_chain")
        if found is not None and found.result in (None, "NULL"):
            text += " (no neighbour had one it could share)"
        return text + "."
    if found is not None:
        av = _ANON_VMA_RE.search(found.result or "")
        return (f" The VMA had no anon_vma and took anon_vma #{av.group(1) if av else '?'} "
                "of a neighbour (find_mergeable_anon_vma), so the two VMAs can still merge.")
    return ""


def _fixup_flags(fix):
    """The vm_flags a mprotect_fixup()/madvise_update_vma() gave the range: those its
    vma_modify_flags() child was called with (after mprotect_fixup added or dropped
    VM_ACCOUNT), else the call's own argument."""
    for _, c in fix.walk():
        if c.func == "vma_modify_flags":
            flags = _int(c.args.get("new_flags") or c.args.get("newflags"))
            if flags is not None:
                return flags
    return _int(fix.args.get("newflags") or fix.args.get("new_flags"))


def _pages(n, pid=0, pcid=True):
    if n != -1:
        return _plural(n, "page")
    who = f"pid {pid}'s" if pid else "the address space's"
    if pcid:
        return (f"all {who} entries (its PCID's non-global entries; global kernel entries "
                "and other processes' entries, under other PCIDs, stay)")
    return f"all {who} entries (every non-global entry; global kernel entries stay)"


def _cpu_state(before, number):
    try:
        return before.cpus[number]
    except (AttributeError, IndexError, TypeError):
        return None


def _pcid_on(before, cpus):
    """Do the CPUs run with PCID (the model's default)? True when unknown."""
    for n in cpus:
        c = _cpu_state(before, n)
        if c is not None and hasattr(c, "_pcid_on"):
            return bool(c._pcid_on)
    return True


def _switch_sentence(f, pid, before, injected):
    """One TLB_FLUSH_ON_TASK_SWITCH record (switch_mm_irqs_off()) in words."""
    cpu = _cpu_state(before, f.cpu)
    target = f"pid {pid}'s address space" if pid else "init_mm (the kernel's own page tables)"
    head = f"TLB: CPU {f.cpu} switched to {target}"
    if f.pages == 0:
        if injected:
            return (f"{head}; nothing was flushed (flush on task switch, pages:0) because "
                    "the flush it needed was skipped on purpose (inject_skip_flush).")
        return (f"{head} and kept its PCID's entries: nothing was flushed (flush on task "
                "switch, pages:0), since its PCID slot on this CPU still held this address "
                "space and was up to date (its tlb_gen matched the address space's).")
    if cpu is not None and not getattr(cpu, "_pcid_on", True):
        return (f"{head} and flushed every non-global entry (flush on task switch, "
                "pages:-1): without PCID, loading CR3 drops them.")
    why = ""
    if cpu is not None and hasattr(cpu, "ctxs"):
        proc = next((p for p in before.processes if p.pid == pid), None) if pid else None
        ctx = proc.mm.context.ctx_id if proc is not None else None
        if ctx is not None and any(slot[0] == ctx for slot in cpu.ctxs):
            why = (": its PCID slot on this CPU still held this address space, but the "
                   "address space had changed since (its tlb_gen moved on), so the entries "
                   "cached under that PCID were stale")
        elif pid:
            why = (": no PCID slot on this CPU held this address space, so it took a slot "
                   "(choose_new_asid) whose old entries belong to another address space or "
                   "to none")
    return (f"{head} and flushed the entries of the PCID it uses (flush on task switch, "
            f"pages:-1){why}.")


def _tlb_sentence(cause, pid, group, range_calls, before=None, unflushed=(), injected=False,
                  step_flushes=None):
    """One step's tlb_flush records of one cause, in words."""
    if cause == "context switch" or all(f.reason == "TLB_FLUSH_ON_TASK_SWITCH" for f in group):
        return " ".join(_switch_sentence(f, pid, before, injected) for f in group)
    local = [f for f in group if f.reason in ("TLB_LOCAL_MM_SHOOTDOWN", "TLB_LOCAL_SHOOTDOWN")]
    sent = [f for f in group if f.reason == "TLB_REMOTE_SEND_IPI"]
    remote = [f for f in group if f.reason == "TLB_REMOTE_SHOOTDOWN"]
    wrong = [f for f in group if f.reason == "TLB_REMOTE_WRONG_CPU"]
    pcid = _pcid_on(before, [f.cpu for f in group])
    who = f"pid {pid}'s " if pid else ""
    if unflushed and pid:
        pids = sorted({pid, *unflushed})
        names = " and ".join(f"pid {q}" for q in pids)
        text = (f"TLB: {cause} cleared PTEs of {names}, but only CPUs that had pid {pid}'s "
                f"address space loaded needed a flush ("
                + " and ".join(f"pid {q}" for q in unflushed)
                + (" was" if len(unflushed) == 1 else " were")
                + " loaded on no CPU)")
    else:
        text = f"TLB: {cause} changed {who}translations"
    if local:
        per_cpu = {}
        for f in local:
            per_cpu.setdefault((f.cpu, f.reason), []).append(f.pages)
        parts = []
        for (cpu, reason), pages in per_cpu.items():
            if len(pages) == 1:
                parts.append(f"CPU {cpu} flushed {_pages(pages[0], pid, pcid)} locally "
                             f"({REASON_TEXT[reason]})")
            else:
                total = (_pages(-1, pid, pcid) if -1 in pages
                         else _plural(sum(pages), "page"))
                parts.append(f"CPU {cpu} flushed locally {len(pages)} times, {total} in all "
                             f"({REASON_TEXT[reason]})")
        text += ", so " + ", ".join(parts)
    # a CPU that ran flush_tlb_func() for this cause (a lazy one switches to init_mm: a
    # task-switch record, filed under another pid) did get the IPI
    got_ipi = {f.cpu for f in (step_flushes or group)
               if f.cause == cause and f.reason != "TLB_REMOTE_SEND_IPI"}
    freed = any(c.args.get("freed_tables") == "True" for c in range_calls)
    skipped = None if freed else _skipped_cpus(before, pid, sent, got_ipi)
    if remote:
        cpus = ", ".join(str(f.cpu) for f in remote)
        sender = ", ".join(str(f.cpu) for f in sent) or "the kernel"
        text += (f"; CPU {sender} sent a flush IPI (remote IPI send) to CPU {cpus}, which "
                 f"flushed {_pages(remote[0].pages, pid, pcid)} (remote shootdown): CPU "
                 f"{cpus} was running this address space and could still hold the old "
                 "translations. That is a TLB shootdown")
    if sent and skipped:
        lazy, idle = skipped
        if lazy:
            cpus = ", ".join(map(str, lazy))
            text += (f"; the remote IPI send tracepoint fired, but CPU {cpus} "
                     f"{'is' if len(lazy) == 1 else 'are'} in lazy-TLB mode, so "
                     "should_flush_tlb() skipped "
                     f"{'it' if len(lazy) == 1 else 'them'}: no IPI was received; "
                     f"{'it' if len(lazy) == 1 else 'each'} will flush when it switches "
                     "back to this address space (its PCID slot's tlb_gen is behind)")
        if idle:
            cpus = ", ".join(map(str, idle))
            text += (f"; CPU {cpus} no longer {'runs' if len(idle) == 1 else 'run'} this "
                     "address space (still in mm_cpumask, which is trimmed lazily), so it "
                     "got no IPI; it flushes if it switches back")
    elif sent and not remote and not wrong:
        text += ("; the remote IPI send tracepoint fired, but no other CPU needed the IPI")
    if wrong:
        cpus = ", ".join(str(f.cpu) for f in wrong)
        text += (f"; CPU {cpus} got the IPI but no longer runs this address space, so "
                 "it only left mm_cpumask (remote wrong CPU)")
    if any(f.pages == -1 for f in local + remote):
        if cause == "fork":
            text += ("; fork flushes the parent's whole address space (flush_tlb_mm), "
                     "since it write-protected its PTEs")
        elif any(c.args.get("freed_tables") == "True" for c in range_calls):
            text += "; page tables were freed, so the whole address space was flushed"
        elif cause not in ("exit",):
            text += (f"; more than {TLB_SINGLE_PAGE_FLUSH_CEILING} pages make a full flush "
                     "cheaper than page by page")
    return text + "."


def _skipped_cpus(before, pid, sent, got_ipi):
    """``(lazy, not running)``: the CPUs of the mm's mm_cpumask (before the step) other
    than the sender that got no flush IPI, or ``None`` if unknown."""
    if before is None or not sent or not pid:
        return None
    proc = next((p for p in before.processes if p.pid == pid), None)
    if proc is None or not hasattr(proc.mm, "cpumask"):
        return None
    senders = {f.cpu for f in sent}
    lazy, idle = [], []
    for n in sorted(proc.mm.cpumask):
        if n in senders or n in got_ipi:
            continue
        c = _cpu_state(before, n)
        if c is None:
            continue
        if c.is_lazy:
            lazy.append(n)
        else:
            idle.append(n)
    return (lazy, idle) if lazy or idle else None


def _memory_changed(ch):
    """Did the step change VMAs, page tables, frames or rmap (TLB refills aside)?"""
    return bool(ch.vma_list or ch.ptes or ch.frames or ch.anon_vmas_added
                or ch.anon_vmas_removed or ch.pids_added or ch.pids_removed or ch.brk
                or ch.swap_added or ch.swap_removed)


def _error_words(error):
    if error.startswith("-E"):
        return error[1:]
    return {"SegmentationFault": "SIGSEGV", "BusError": "SIGBUS",
            "ProcessKilled": "the process was killed (SIGKILL)"}.get(error, error)


class _Clip:
    """A VMA as a neighbour looked while the step ran: the part of a VMA on one side of a
    range (what __split_vma leaves of it), with the flags an earlier part of the same call
    gave it. Has the attributes the narration reads from a VmAreaStruct."""

    def __init__(self, vma, start, end, flags=None):
        self.vma = vma
        self.vm_mm = vma.vm_mm
        self.vm_start, self.vm_end = start, end
        self.vm_pgoff = vma.vm_pgoff + ((start - vma.vm_start) >> F.PAGE_SHIFT)
        self.vm_flags = vma.vm_flags if flags is None else flags
        self.vm_file, self.vm_ops = vma.vm_file, vma.vm_ops
        self.anon_vma, self.anon_vma_chain = vma.anon_vma, vma.anon_vma_chain

    def pages(self):
        return (self.vm_end - self.vm_start) >> F.PAGE_SHIFT

    def perms(self):
        return _perms(self.vm_flags, self)


def _refusal(nb, new, side, flags=None):
    """Why ``new`` (with ``flags`` if given) cannot merge with its neighbour ``nb``, in the
    kernel's order of checks (mm/vma.c: is_mergeable_vma, is_mergeable_anon_vma, pgoff)."""
    flags = new.vm_flags if flags is None else flags
    if (nb.vm_flags | flags) & F.VM_SPECIAL:
        return ("is a special mapping (" + "|".join(
            F.vm_flags_names((nb.vm_flags | flags) & F.VM_SPECIAL)) + "): no merge")
    diff = (nb.vm_flags ^ flags) & ~F.VM_SOFTDIRTY
    if diff:
        mine = _perms(flags, new)
        if diff & (F.VM_READ | F.VM_WRITE | F.VM_EXEC | F.VM_SHARED | F.VM_MAYSHARE):
            return f"has other permissions ({nb.perms()} vs {mine})"
        text = "has other flags (" + ", ".join(F.vm_flags_names(diff)) + " differ"
        notes = [note for bit, note in _HIDDEN_FLAGS if diff & bit]
        if notes:
            text += "; " + "; ".join(notes)
        return text + ")"
    if nb.vm_file is not new.vm_file and (nb.vm_file is None or new.vm_file is None
                                           or nb.vm_file.path != new.vm_file.path):
        a = nb.vm_file.path if nb.vm_file else "anonymous memory"
        b = new.vm_file.path if new.vm_file else "anonymous memory"
        return f"maps something else ({a}, not {b})"
    if (nb.vm_file is not None and new.vm_file is not None
            and nb.vm_file.f_serial != new.vm_file.f_serial):
        return (f"maps {nb.vm_file.path} through another open file description (a separate "
                "open(2)): is_mergeable_vma() compares the struct file, not the inode")
    if nb.anon_vma is not None and new.anon_vma is not None and nb.anon_vma.id != new.anon_vma.id:
        return (f"has another anon_vma (#{nb.anon_vma.id} vs #{new.anon_vma.id}): their pages "
                "are filed under different anon_vmas")
    if new.anon_vma is None and nb.anon_vma is not None and len(nb.anon_vma_chain) != 1:
        return ("was forked and still shares pages with its parent (its anon_vma_chain "
                "has the parent's anon_vmas), so it cannot take in the range")
    if nb.anon_vma is None and new.anon_vma is not None and len(new.anon_vma_chain) != 1:
        return ("has no anon_vma, and the range's VMA was forked and still shares pages "
                "with its parent, so its anon_vma cannot be handed over")
    if side == "previous" and nb.vm_pgoff + nb.pages() != new.vm_pgoff:
        return (f"is not contiguous in the file (its pages end at offset "
                f"{_h(nb.vm_pgoff + nb.pages())}, the range starts at {_h(new.vm_pgoff)})")
    if side == "next" and new.vm_pgoff + new.pages() != nb.vm_pgoff:
        return (f"is not contiguous in the file (the range ends at offset "
                f"{_h(new.vm_pgoff + new.pages())}, it starts at {_h(nb.vm_pgoff)})")
    return "could not merge"


#: What the VM_* bits that /proc/PID/maps does not show mean, for refused merges.
_HIDDEN_FLAGS = (
    (F.VM_ACCOUNT, "VM_ACCOUNT: the pages are charged to the commit limit (a private "
                   "writable mapping is; mprotect to read-only drops the charge only while the "
                   "VMA has no anon_vma)"),
    (F.VM_NORESERVE, "VM_NORESERVE: MAP_NORESERVE asked for no commit charge"),
    (F.VM_LOCKED, "VM_LOCKED: mlock"),
    (F.VM_DONTCOPY, "VM_DONTCOPY: MADV_DONTFORK"),
    (F.VM_WIPEONFORK, "VM_WIPEONFORK: MADV_WIPEONFORK"),
    (F.VM_DONTDUMP, "VM_DONTDUMP: MADV_DONTDUMP"),
    (F.VM_GROWSDOWN, "VM_GROWSDOWN: a stack that grows down"),
)


def _perms(flags, vma):
    return (("r" if flags & F.VM_READ else "-") + ("w" if flags & F.VM_WRITE else "-")
            + ("x" if flags & F.VM_EXEC else "-") + ("s" if flags & F.VM_MAYSHARE else "p"))


# -- the call tree as a view --------------------------------------------------------------

def trace_rows(record, depth=None):
    """The step's call tree as rows ``(depth, func, args, result, changes, hidden)``:
    ``args`` a dict of texts, ``result`` the return value or error text (or ``None``),
    ``changes`` the state changes the call made itself, ``hidden`` how many calls below it
    were cut off by ``depth`` (0 if none). Empty when the step has no tree."""
    _check_depth(depth)
    if record.trace is None:
        return []
    rows = []
    _rows(record.trace, 0, depth, rows)
    return rows


def _rows(call, level, depth, rows):
    value = call.error if call.error is not None else call.result
    if depth is not None and level >= depth:
        rows.append((level, call.func, dict(call.args), value, [], calls_below(call)))
        return
    rows.append((level, call.func, dict(call.args), value, call.changes, 0))
    for child in call.children:
        _rows(child, level + 1, depth, rows)


def _check_depth(depth):
    if depth is not None and (not isinstance(depth, int) or isinstance(depth, bool)
                              or depth < 1):
        raise ValueError(f"depth must be None or a positive int, got {depth!r}")


def trace_view(record, depth=None, args=True, cpu=0):
    """The step's kernel call tree in ftrace's function_graph style, as text.

    :param depth: show calls down to this many levels below the step's own call (``None``:
        all); a call whose callees are cut off ends with ``/* N calls below */``.
    :param args: show the arguments (off for shorter lines).
    :param cpu: the number in the ``CPU)`` column.
    """
    if not hasattr(record, "trace"):
        raise TypeError(f"record must be a StepRecord, not {type(record).__name__}")
    _check_depth(depth)
    if record.trace is None:
        return "(no call tree: this machine runs with trace=False)"
    return function_graph(record.trace, cpu, args=args, depth=depth)
