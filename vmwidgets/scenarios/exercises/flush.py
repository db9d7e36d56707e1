"""``flush``: which system calls and faults flush the TLB, a range or in full, and which
send a shootdown IPI to the other CPU."""

import re
import textwrap

from ...core import flags as F
from ...core.machine import Machine
from ...core.tlb import TLB_SINGLE_PAGE_FLUSH_CEILING as CEILING
from .base import P, Exercise, Feedback, _RW, _ANON_FIXED, _int, _numbered, _pg, _unique

#: What the other CPU does in each setup.
CONFIGS = ("thread", "lazy", "other")
#: The model's cause label (TlbFlush.cause) of each kind of call.
_CAUSE = {"munmap": "munmap", "mprotect": "mprotect", "dontneed": "madvise", "cow": "COW",
          "fresh": None, "fork": "fork"}
_RANGE_KINDS = ("munmap", "mprotect", "dontneed")
#: Words a student may write around the answer of a line.
_FILLER = {"a", "an", "of", "in", "the", "tlb", "is", "it", "flushes", "and", "with", "+"}


def _wrap(text):
    return textwrap.fill(text, 92, initial_indent="   ", subsequent_indent="   ")


def _flush_text(value):
    return "none" if value is None else "full" if value == "full" else str(value)


class Flush(Exercise):
    """For each of a few calls on a two-CPU machine: is the TLB flushed (not at all, a range
    of N pages, or in full), and does the other CPU get a shootdown IPI?

    Process p runs on CPU 0. CPU 1 runs a thread of p, or is idle in lazy TLB mode with
    p's address space still loaded, or runs another process. The calls are munmap,
    mprotect(PROT_READ) and madvise(MADV_DONTNEED) of regions with all, some or none of
    their pages written (some near the 33-page ceiling), writes that make a copy-on-write
    copy or fill an empty PTE, and fork.

    The answer is a dict: ``calls``, one ``{"flush": None | "full" | pages, "ipi": bool}``
    per call, and ``flushes`` (call number -> the ``tlb_flush`` records, as text). ``check``
    takes the text a student types (one line per call: ``1: 12 ipi``, ``2: none``,
    ``3: full``), a list of ``(flush, ipi)`` pairs or of such dicts, or a dict with
    ``calls`` (a list, or call number -> pair).

    >>> ex = Flush(3)
    >>> ex.check(ex.answer_text()).correct
    True
    >>> ex.check([(c["flush"], c["ipi"]) for c in ex.answer["calls"]]).correct
    True
    """

    kind = "flush"
    summary = "which calls flush the TLB (a range or in full) and send shootdown IPIs"

    # -- building ---------------------------------------------------------------------------------
    def _build(self):
        rng = self.rng
        self.config = config = rng.choice(["thread", "thread", "lazy", "other"])
        plan = self._plan(rng, config)
        m = self.machine = Machine(ram="64M", cpus=2, history=False, trace=False)
        p = m.spawn()
        p.mmap(_pg(0), 3 * P, _RW, _ANON_FIXED)
        for i in range(3):
            p.write(_pg(i), bytes([65 + i]))
        c = p.fork()
        assert m.cpus[1].current is c, m.cpus
        self.regions = {}
        page = 4
        for call in plan:
            if call["kind"] in _RANGE_KINDS or call["kind"] == "fresh":
                name = "ABCDEFG"[len(self.regions)]
                n = call["pages"]
                p.mmap(_pg(page), n * P, _RW, _ANON_FIXED)
                touched = call["touched"]
                for off in touched:
                    p.write(_pg(page + off), b"w")
                self.regions[name] = {"first": page, "pages": n, "touched": touched}
                call["region"] = name
                if call["kind"] == "fresh":
                    call["page"] = page + call["offset"]
                page += n + 1
        tasks = {"p": p}
        if config in ("thread", "lazy"):
            t = tasks["t"] = p.clone_thread(cpu=1)
            t.read(_pg(0), 1)
            assert m.cpus[1].current is t
            if config == "lazy":
                m.switch_to(1, None)
                assert m.cpus[1].is_lazy and m.cpus[1].loaded_mm is p.mm
        self.tasks = tasks
        self.calls = plan
        for call in plan:
            self._run(call)
        self.answer = {"calls": [{"flush": c["flush"], "ipi": c["ipi"]} for c in plan],
                       "flushes": {i: c["records"] for i, c in enumerate(plan, 1)
                                   if c["records"]}}
        self.params.update(cpu1=config, calls=len(plan))
        self.question = self._question()
        self.worked_answer = self._explain()

    @staticmethod
    def _plan(rng, config):
        """The calls, drawn from ``rng``: a list of dicts with ``kind``, ``who`` and what
        the kind needs (``pages``/``touched`` of a region, ``page`` of a write)."""
        big = rng.choice([30, 31, 32, 33, 33, 34, 34, 35, 36, 40, 48])
        first = rng.choice(["munmap", "munmap", "mprotect", "dontneed"])
        calls = [{"kind": first, "pages": big, "touched": list(range(big))}]
        kinds = ["munmap", "mprotect", "dontneed", "untouched", "partial", "cow", "fresh"]
        cows = [1, 2]
        rng.shuffle(cows)
        for _ in range(rng.randrange(2, 5)):
            kind = rng.choice(kinds)
            if kind == "cow" and not cows:
                kind = "fresh"
            if kind in ("munmap", "mprotect", "dontneed"):
                n = rng.choice([1, 3, 5, 8, 12, 20, 33, 34, 40])
                calls.append({"kind": kind, "pages": n, "touched": list(range(n))})
            elif kind == "untouched":
                n = rng.choice([4, 10, 16, 40])
                calls.append({"kind": rng.choice(["munmap", "munmap", "dontneed", "mprotect"]),
                              "pages": n, "touched": []})
            elif kind == "partial":
                n = rng.randrange(10, 49)
                touched = sorted(rng.sample(range(n), rng.choice([2, 2, 3])))
                calls.append({"kind": rng.choice(["munmap", "dontneed"]), "pages": n,
                              "touched": touched})
            elif kind == "cow":
                calls.append({"kind": "cow", "page": cows.pop()})
            else:
                n = rng.choice([1, 2, 4])
                calls.append({"kind": "fresh", "pages": n, "touched": [],
                              "offset": rng.randrange(n)})
        rng.shuffle(calls)
        if rng.random() < 0.5:
            calls.append({"kind": "fork"})
        for call in calls:
            call["who"] = "t" if config == "thread" and rng.random() < 0.3 else "p"
        return calls

    def _run(self, call):
        """Make ``call`` and read from the model's tlb_flush records what it flushed."""
        m = self.machine
        task = self.tasks[call["who"]]
        kind = call["kind"]
        logged = len(m.tlb_log)
        if kind in _RANGE_KINDS:
            r = self.regions[call["region"]]
            addr, length = _pg(r["first"]), r["pages"] * P
            if kind == "munmap":
                task.munmap(addr, length)
            elif kind == "mprotect":
                task.mprotect(addr, length, F.PROT_READ)
            else:
                task.madvise(addr, length, F.MADV_DONTNEED)
        elif kind in ("cow", "fresh"):
            before = task.pagemap(_pg(call["page"]))
            task.write(_pg(call["page"]), b"W")
            after = task.pagemap(_pg(call["page"]))
            assert (kind == "cow") == (before.present and after.pfn != before.pfn), kind
        else:
            self.tasks["c2"] = task.fork()
        records = list(m.tlb_log)[logged:]
        cpu = task.cpu
        local = [f for f in records if f.cpu == cpu and f.reason == "TLB_LOCAL_MM_SHOOTDOWN"]
        remote = [f for f in records if f.cpu != cpu]
        sent = [f for f in records if f.reason == "TLB_REMOTE_SEND_IPI"]
        assert len(local) <= 1 and len(local) + len(remote) + len(sent) == len(records), records
        assert all(f.pages != 0 for f in local), records     # never a freed-table-only flush
        assert all(f.cause == _CAUSE[kind] for f in records), records
        call["cpu"] = cpu
        call["flush"] = None if not local else "full" if local[0].pages == -1 else local[0].pages
        call["ipi"] = bool(remote)
        call["remote"] = [f.reason for f in remote]
        call["sent"] = bool(sent)
        call["records"] = [str(f) for f in records]

    # -- text ------------------------------------------------------------------------------------
    def _region_text(self, name):
        r = self.regions[name]
        first, n, touched = r["first"], r["pages"], r["touched"]
        if len(touched) == n:
            what = "all written" if n > 1 else "written"
        elif not touched:
            what = "never touched"
        else:
            what = ("pages " + ", ".join(str(first + t) for t in touched[:-1])
                    + f" and {first + touched[-1]} written")
        span = f"page {first}" if n == 1 else f"pages {first}-{first + n - 1}"
        return (f"{name}: {span} ({_pg(first):#x}, {n} page{'s' if n > 1 else ''}): {what}")

    def _call_text(self, call):
        who, kind = call["who"], call["kind"]
        if kind == "munmap":
            return f"{who}: munmap(region {call['region']})"
        if kind == "mprotect":
            return f"{who}: mprotect(region {call['region']}, PROT_READ)"
        if kind == "dontneed":
            return f"{who}: madvise(region {call['region']}, MADV_DONTNEED)"
        if kind in ("cow", "fresh"):
            return f"{who}: writes to page {call['page']}"
        return f"{who}: fork()"

    def _question(self):
        lines = [
            "A machine with 2 CPUs, each with its own TLB (entries tagged with PCIDs). "
            "Process p runs on CPU 0.",
            f"p maps pages 0-2 of an arena at {_pg(0):#x} (private, anonymous, read-write) and "
            "writes all three;",
            "they stay mapped throughout, so no page table is ever freed.",
            "p forks a child c, which starts running on CPU 1 (idle until then): pages 0-2 are "
            "now shared",
            "copy-on-write between p and c.",
            "p then maps these regions (private, anonymous, read-write) and writes the pages "
            "shown:"]
        lines += ["  " + self._region_text(name) for name in self.regions]
        if self.config == "thread":
            lines += ["p starts a thread t on CPU 1, which runs there from now on (c waits); "
                      "t reads page 0."]
        elif self.config == "lazy":
            lines += ["p starts a thread t on CPU 1; t reads page 0 and then blocks: CPU 1 "
                      "goes idle, in lazy TLB", "mode (p's address space stays loaded on it)."]
        else:
            lines += ["CPU 1 keeps running c."]
        lines.append("Then, in this order:")
        lines += [f"  {i}. {self._call_text(c)}" for i, c in enumerate(self.calls, 1)]
        lines += [
            "For each call: is the TLB flushed, and how: not at all, a range of N pages (one "
            "INVLPG each),", "or in full? Does the other CPU get a flush IPI (a TLB shootdown)?",
            "Answer one line per call: its number, then none, the number of pages, or full, "
            "then the word", "ipi if the other CPU gets an IPI. For example:",
            "  1: 12 ipi", "  2: none", "  3: full"]
        return "\n".join(lines)

    def answer_text(self):
        """The answer in the form the question asks for."""
        return "\n".join(f"{i}: {_flush_text(c['flush'])}" + (" ipi" if c["ipi"] else "")
                         for i, c in enumerate(self.answer["calls"], 1))

    def _other_cpu(self, call):
        return "CPU 0" if call["cpu"] == 1 else "CPU 1"

    def _why_flush(self, call):
        """Why the call flushes what it flushes (one sentence)."""
        kind, flush = call["kind"], call["flush"]
        if kind in _RANGE_KINDS:
            r = self.regions[call["region"]]
            touched, n = r["touched"], r["pages"]
            name = {"munmap": "munmap", "mprotect": "mprotect",
                    "dontneed": "MADV_DONTNEED"}[kind]
            if not touched:
                return (f"no page of region {call['region']} was ever touched, so no PTE was "
                        "present: no TLB can hold a translation of it, and there is nothing to "
                        "flush")
            lo, hi = r["first"] + touched[0], r["first"] + touched[-1]
            span = hi - lo + 1
            if len(touched) < n:
                where = ("pages " + ", ".join(str(r["first"] + t) for t in touched[:-1])
                         + f" and {hi}")
                gather = f" (pages {lo} to {hi})"
            else:
                where, gather = f"all {n} pages" if n > 1 else "the page", ""
            if kind == "mprotect":
                head = (f"mprotect removes write permission from the PTEs of {where}: a TLB "
                        "could still hold them writable, so change_protection() flushes "
                        f"them, as one range{gather}")
            else:
                head = (f"{name} clears the present PTEs of {where}; the mmu_gather collects "
                        f"one range, from the first to the last PTE cleared{gather}, and "
                        "tlb_finish_mmu() flushes it before the frames are freed")
            if flush == "full":
                return (head + f": {span} pages, more than the {CEILING}-page ceiling "
                        "(tlb_single_page_flush_ceiling), so flush_tlb_mm_range() flushes the "
                        "whole TLB instead")
            return head + (f": {span} page{'s' if span > 1 else ''}, within the {CEILING}-page "
                           "ceiling, one INVLPG each")
        if kind == "cow":
            return (f"page {call['page']} is shared copy-on-write with c: the write faults, "
                    "wp_page_copy() makes a copy and replaces the PTE with ptep_clear_flush(), "
                    "which flushes that one page")
        if kind == "fresh":
            return (f"page {call['page']} was never touched: the write fault fills an empty "
                    "PTE, and a TLB never caches a non-present PTE, so nothing is flushed")
        return ("fork write-protects p's writable private PTEs for copy-on-write, then "
                "dup_mmap() calls flush_tlb_mm(): the whole address space, a full flush")

    def _why_ipi(self, call):
        other = self._other_cpu(call)
        if call["flush"] is None:
            return "no flush, so no IPI either"
        if self.config == "other":
            return ("CPU 1 runs c, another address space, and has never run p's: it is not in "
                    "p's mm_cpumask, so flush_tlb_mm_range() sends no IPI")
        if self.config == "lazy":
            if call["ipi"]:
                return ("CPU 1 is lazy, but flush_tlb_mm() passes freed_tables=true (as if page "
                        "tables were freed), so native_flush_tlb_multi() sends the IPI to lazy "
                        "CPUs too; CPU 1 answers by switching to init_mm")
            return ("CPU 1 is idle in lazy TLB mode: should_flush_tlb() skips it, so no IPI "
                    "(the tracepoint still logs 'remote IPI send'); it catches up from tlb_gen "
                    "when it next switches to p's address space")
        runs = "t" if other == "CPU 1" else "p"
        return (f"{other} runs {runs}, a thread of the same address space, so "
                f"flush_tlb_mm_range() sends it an IPI and it flushes too (remote shootdown)")

    def _explain(self):
        out = []
        for i, call in enumerate(self.calls, 1):
            out.append(f"{i}. {self._call_text(call)}: {_flush_text(call['flush'])}"
                       + (", IPI" if call["ipi"] else ", no IPI"))
            out.append(_wrap(self._why_flush(call) + "."))
            if call["flush"] is not None or call["ipi"]:
                out.append(_wrap(self._why_ipi(call) + "."))
            for rec in call["records"]:
                out.append(f"   tlb_flush: {rec}")
        out += ["", "Answer:", self.answer_text()]
        return "\n".join(out)

    # -- checking ---------------------------------------------------------------------------------
    @staticmethod
    def _read_flush(value):
        """None, "full" or a page count from a student's value; raises ValueError."""
        if value is None:
            return None
        if isinstance(value, bool):
            raise ValueError(f"could not read {value!r} as none, full or a number of pages")
        if isinstance(value, int):
            if value == -1:
                return "full"
            if value == 0:
                return None
            if value > 0:
                return value
        if isinstance(value, str):
            word = value.strip().lower()
            if re.fullmatch(r"full|all|everything|-1|tlb_flush_all", word):
                return "full"
            if re.fullmatch(r"none|no|nothing|no flush|-|0", word):
                return None
            number = _int(word.split()[0]) if word else None
            if number is not None and number > 0:
                return number
        raise ValueError(f"could not read {value!r} as none, full or a number of pages")

    @staticmethod
    def _read_ipi(value):
        if isinstance(value, bool) or value is None:
            return bool(value)
        word = str(value).strip().lower()
        if word in ("ipi", "yes", "y", "true", "1", "shootdown"):
            return True
        if word in ("", "no", "n", "false", "0", "no ipi", "none"):
            return False
        raise ValueError(f"could not read {value!r} as whether there is an IPI (yes/no)")

    def _read_line(self, text):
        """``(flush, ipi)`` from the part of a line after the call number."""
        t = text.strip().lower()
        t = re.sub(r"tlb_flush_all", "full", t)
        ipi = bool(re.search(r"\bipi|shootdown", t)) and not re.search(
            r"\bno[\s-]*(?:ipi|shootdown)|ipi\s*[:=]?\s*(?:no|false)\b", t)
        rest = re.sub(r"\bno[\s-]*(?:ipi|shootdown)|\bipi\s*[:=]?\s*(?:yes|no|true|false)?"
                      r"|shootdown|\bpages?\b|\bflush(?:ed)?\b|\brange\b|[,;:()]", " ", t).split()
        rest = [word for word in rest if word not in _FILLER]
        if not rest:
            raise ValueError(f"could not read a flush (none, full or a number of pages) in "
                             f"{text.strip()!r}")
        return self._read_flush(rest[0]), ipi

    def _read(self, student):
        """The student's answer as a list of ``(flush, ipi)``; raises ValueError."""
        n = len(self.calls)
        if isinstance(student, dict) and "calls" in student:
            student = student["calls"]
        if isinstance(student, str):
            out = {}
            for raw in re.split(r"[\n;]+", student):
                if not raw.strip():
                    continue
                m = re.match(r"\s*(?:call|line)?\s*(\d+)\s*[:.)=\-]?\s*(.*)$", raw, re.I)
                if not m:
                    raise ValueError(f"could not read {raw.strip()!r}: start each line with "
                                     "the call's number, e.g. '1: 12 ipi'")
                number = int(m.group(1))
                if not 1 <= number <= n:
                    raise ValueError(f"there is no call {number}: the calls are 1 to {n}")
                out[number] = self._read_line(m.group(2))
            student = out
        if isinstance(student, dict):
            items = {}
            for key, value in student.items():
                number = _int(key) if not isinstance(key, int) else key
                if number is None or not 1 <= number <= n:
                    raise ValueError(f"there is no call {key!r}: the calls are 1 to {n}")
                items[number] = value
            student = _numbered(items, n, "call")
        if not isinstance(student, (list, tuple)):
            raise ValueError("give one line per call, e.g. '1: 12 ipi'")
        if len(student) != n:
            raise ValueError(f"give one answer for each of the {n} calls")
        out = []
        for item in student:
            if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], bool) \
                    and not isinstance(item[0], str):
                out.append((self._read_flush(item[0]), item[1]))
            elif isinstance(item, dict):
                out.append((self._read_flush(item.get("flush")), self._read_ipi(item.get("ipi"))))
            elif isinstance(item, (list, tuple)) and len(item) == 2:
                out.append((self._read_flush(item[0]), self._read_ipi(item[1])))
            elif isinstance(item, str):
                out.append(self._read_line(item))
            else:
                out.append((self._read_flush(item), False))
        return out

    def check(self, student):
        try:
            given = self._read(student)
        except (ValueError, TypeError) as exc:
            return Feedback(False, [str(exc)])
        mistakes = []
        for i, (call, (flush, ipi)) in enumerate(zip(self.calls, given), 1):
            if flush != call["flush"]:
                mistakes.append(f"call {i}: {self._flush_mistake(call, flush)}")
            if ipi != call["ipi"]:
                mistakes.append(f"call {i}: " + (
                    "there is an IPI: " if call["ipi"] else "no IPI: ") + self._why_ipi(call))
        return Feedback(not mistakes, _unique(mistakes))

    def _flush_mistake(self, call, flush):
        """What is wrong with ``flush`` as the answer for ``call``."""
        truth, kind = call["flush"], call["kind"]
        why = self._why_flush(call)
        if kind in _RANGE_KINDS and truth is not None:
            r = self.regions[call["region"]]
            touched = r["touched"]
            span = touched[-1] - touched[0] + 1
            if truth == "full" and isinstance(flush, int):
                return (f"{span} pages is more than {CEILING}: flush_tlb_mm_range() flushes "
                        f"the whole TLB instead (tlb_single_page_flush_ceiling)")
            if flush == "full":
                return (f"{truth} pages is within the {CEILING}-page ceiling "
                        "(tlb_single_page_flush_ceiling): just that range is flushed, one "
                        "INVLPG per page, not the whole TLB")
            if flush is None:
                if kind == "mprotect":
                    return ("mprotect that only removes write permission still flushes: a TLB "
                            "could hold the writable translation, and a write through it would "
                            f"bypass the new protection ({why})")
                return f"it clears present PTEs, so it must flush: {why}"
            if len(touched) < r["pages"] and flush == len(touched):
                return (f"the flush covers one range, from the first to the last PTE cleared "
                        f"(pages {r['first'] + touched[0]} to {r['first'] + touched[-1]}): "
                        f"{truth} pages, not just the {len(touched)} written ones")
            if len(touched) < r["pages"] and flush == r["pages"]:
                return (f"only pages {r['first'] + touched[0]} to {r['first'] + touched[-1]} "
                        f"had present PTEs: the range is {truth} pages, not the whole region of "
                        f"{r['pages']}")
            return f"{truth} pages, not {flush}: {why}"
        if truth is None:
            return why
        if kind == "cow":
            return ("one page is flushed, the one whose PTE changed: " + why if flush != "full"
                    else why)
        if kind == "fork":
            return f"a full flush: {why}"
        return why
