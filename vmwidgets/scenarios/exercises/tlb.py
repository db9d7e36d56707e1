"""``tlb``: hits, misses and flushes of the per-CPU TLBs."""

import re

from ...core import flags as F
from ...core.machine import Machine
from .base import P, ARENA, Exercise, Feedback, _RW, _ANON_FIXED, _pg, _unique


def _simulate(initial, lookups, size, policy, shared=False, flushes=True):
    """A plain cache simulation, used only to diagnose an answer (``what if the TLB were
    FIFO / shared / never flushed``). ``lookups`` are ``(cpu, label)`` or ``(cpu, None,
    dropped)`` flushes; returns the list of ``"hit"``/``"miss"``."""
    contents = {cpu: list(labels) for cpu, labels in initial.items()}
    if shared:
        one = []
        for labels in initial.values():
            one += [label for label in labels if label not in one]
        contents = {cpu: one[-size:] for cpu in initial}
        one = contents[0]
        contents = {cpu: one for cpu in initial}          # the same list for every CPU
    out = []
    for cpu, label, *dropped in lookups:
        tlb = contents[cpu]
        if label is None:
            if flushes:
                for gone in dropped[0]:
                    if gone in tlb:
                        tlb.remove(gone)
            continue
        if label in tlb:
            out.append("hit")
            if policy == "lru":
                tlb.remove(label)
                tlb.append(label)
        else:
            out.append("miss")
            if len(tlb) >= size:
                tlb.pop(0)
            tlb.append(label)
    return out


class Tlb(Exercise):
    """Hits, misses and flushes of the per-CPU TLBs for a sequence of accesses by a
    process and, on two CPUs, its thread; one munmap or mprotect may flush on the way.

    The answer is a dict: ``results`` (``"hit"``/``"miss"`` for each numbered line, a
    system call counting as its CPU's lookup of the kernel's entry code ``K``),
    ``flushed`` (step -> the CPUs whose TLB the step flushed), ``flushes`` (the
    ``tlb_flush`` records) and ``totals`` (CPU -> ``{"hits": .., "misses": ..}``).
    ``check`` takes the results as a list, as text (``"M H H M"``), or a dict with any of
    ``results``, ``flushed`` and ``totals``.

    >>> ex = Tlb(4)
    >>> ex.check(ex.answer["results"]).correct
    True
    """

    kind = "tlb"
    summary = "hits, misses and flushes of per-CPU TLBs for an access sequence"

    def _build(self):
        rng = self.rng
        cpus = rng.choice([1, 2, 2])
        size = rng.choice([2, 3, 3, 4])
        policy = rng.choice(["lru", "lru", "fifo"])
        npages = rng.randrange(4, 7)
        m = Machine(ram="64M", history=False, trace=False, cpus=cpus, tlb_entries=size,
                    tlb_policy=policy)
        p = m.spawn()
        p.mmap(_pg(0), npages * P, _RW, _ANON_FIXED)
        for i in range(npages):
            p.write(_pg(i), bytes([65 + i]))
        tasks = {"p": p}
        if cpus == 2:
            tasks["t"] = p.clone_thread(cpu=1)
        self.machine, self.tasks, self.npages = m, tasks, npages
        self.initial = {cpu.number: self._contents(cpu) for cpu in m.cpus}
        self.events, self.history = [], []
        writable = list(range(npages))
        readable = list(range(npages))
        syscall_at = rng.randrange(3, 8) if rng.random() < 0.7 else None
        for index in range(1, rng.randrange(7, 11) + 1):
            name = rng.choice(list(tasks))
            if index == syscall_at:
                event = self._syscall(rng, p, writable, readable)
            else:
                recent = [l for l in self._contents(m.cpus[tasks[name].cpu])
                          if l != "K" and int(l) in readable]
                page = int(rng.choice(recent)) if recent and rng.random() < 0.5 else \
                    rng.choice(readable)
                write = page in writable and rng.random() < 0.4
                event = self._access(name, page, write)
            self.events.append(event)
        self.answer = self._answer()
        self.params.update(cpus=cpus, tlb_entries=size, policy=policy, pages=npages,
                           steps=len(self.events))
        self.question = self._question()
        self.worked_answer = self._explain()

    @staticmethod
    def _contents(cpu):
        """The TLB's entries, oldest first, as labels: arena page numbers, K, or addresses."""
        out = []
        for entry in cpu.tlb:
            addr = entry.vpn << F.PAGE_SHIFT
            if entry.pcid == -1:
                out.append("K")
            elif ARENA <= addr < ARENA + 64 * P:
                out.append(str((addr - ARENA) // P))
            else:
                out.append(f"{addr:#x}")
        return out

    def _lookup(self, cpu, do):
        """Run ``do``; the TLB lookup it made on ``cpu`` (``"hit"`` or ``"miss"``) and the
        flush records it produced."""
        before = dict(cpu.tlb.stats)
        logged = len(self.machine.tlb_log)
        do()
        delta = {k: v - before.get(k, 0) for k, v in cpu.tlb.stats.items()
                 if v != before.get(k, 0)}
        result = "hit" if delta.get("hit") == 1 and not delta.get("miss") else \
            "miss" if delta.get("miss") == 1 and not delta.get("hit") else None
        assert result is not None and not ({"permission_miss", "dirty_walk"} & set(delta)), delta
        return result, list(self.machine.tlb_log)[logged:]

    def _access(self, name, page, write):
        task = self.tasks[name]
        cpu = self.machine.cpus[task.cpu]
        do = (lambda: task.write(_pg(page), b"w")) if write else (lambda: task.read(_pg(page), 1))
        result, flushes = self._lookup(cpu, do)
        assert not flushes, flushes
        event = {"who": name, "cpu": cpu.number, "kind": "write" if write else "read",
                 "page": str(page), "label": str(page), "result": result, "flushes": []}
        self.history.append({c.number: self._contents(c) for c in self.machine.cpus})
        return event

    def _syscall(self, rng, p, writable, readable):
        cpu = self.machine.cpus[p.cpu]
        if len(writable) > 2 and rng.random() < 0.5:
            page = rng.choice(writable)
            writable.remove(page)
            call, text = "mprotect", f"mprotect(page {page}, PROT_READ)"
            do = lambda: p.mprotect(_pg(page), P, F.PROT_READ)  # noqa: E731
        else:
            page = rng.choice(readable)
            readable.remove(page)
            if page in writable:
                writable.remove(page)
            call, text = "munmap", f"munmap(page {page})"
            do = lambda: p.munmap(_pg(page), P)  # noqa: E731
        before = {c.number: self._contents(c) for c in self.machine.cpus}
        result, flushes = self._lookup(cpu, do)
        self.history.append({c.number: self._contents(c) for c in self.machine.cpus})
        # One page changed: every flush is an INVLPG of that page (pages:1); any other
        # entry that went was evicted by the lookup of K.
        assert all(f.pages == 1 for f in flushes), flushes
        flushed = {f.cpu for f in flushes if f.reason != "TLB_REMOTE_SEND_IPI"}
        dropped = {n: [str(page)] if n in flushed and str(page) in before[n]
                   and str(page) not in self.history[-1][n] else [] for n in before}
        return {"who": "p", "cpu": cpu.number, "kind": call, "page": str(page), "label": "K",
                "result": result, "text": text, "dropped": dropped,
                "flushes": [(f.cpu, f.reason, f.pages) for f in flushes]}

    def _answer(self):
        totals = {c: {"hits": 0, "misses": 0} for c in self.initial}
        flushed = {}
        for step, event in enumerate(self.events, 1):
            totals[event["cpu"]]["hits" if event["result"] == "hit" else "misses"] += 1
            cpus = sorted({c for c, reason, _ in event["flushes"]
                           if reason != "TLB_REMOTE_SEND_IPI"})
            if event["flushes"]:
                flushed[step] = cpus
        return {"results": [e["result"] for e in self.events], "flushed": flushed,
                "flushes": {s: e["flushes"] for s, e in enumerate(self.events, 1) if e["flushes"]},
                "totals": totals}

    def _event_text(self, event):
        if event["kind"] in ("munmap", "mprotect"):
            return f"{event['who']} calls {event['text']}"
        return f"{event['who']} {event['kind']}s page {event['page']}"

    def _question(self):
        names = " and its thread t on CPU 1" if "t" in self.tasks else ""
        policy = ("LRU replacement (a hit makes the entry the most recently used)"
                  if self.params["policy"] == "lru" else
                  "FIFO replacement (the oldest entry goes; a hit changes nothing)")
        lines = [
            f"Process p runs on CPU 0{names}. p has {self.npages} pages at {_pg(0):#x} "
            f"(pages 0-{self.npages - 1}),",
            "all written before, so their PTEs are present, writable and dirty.",
            ("Each CPU has a TLB of its own" if len(self.initial) > 1 else "The CPU's TLB has")
            + f": {self.params['tlb_entries']} entries, fully associative, {policy}.",
            "A system call first fetches the kernel's entry code, whose translation (K, a "
            "global entry)", "takes an entry in that CPU's TLB too.",
            "The TLBs hold, oldest entry first:"]
        for cpu, labels in self.initial.items():
            lines.append(f"  CPU {cpu}: {', '.join(labels) or '(empty)'}")
        lines.append("Then, in this order:")
        for step, event in enumerate(self.events, 1):
            lines.append(f"  {step}. {self._event_text(event)}")
        lines += ["For each line: does its TLB lookup hit or miss (a system call's lookup is "
                  "the one of K)?", "Which CPUs' TLBs are flushed, and when? How many hits and "
                  "misses does each CPU have?"]
        return "\n".join(lines)

    def _explain(self):
        out = []
        for step, event in enumerate(self.events, 1):
            cpu, label = event["cpu"], event["label"]
            before = self.initial[cpu] if step == 1 else self.history[step - 2][cpu]
            after = self.history[step - 1]
            what = "K (the syscall's entry code)" if label == "K" else f"page {label}"
            line = (f"{step}. {self._event_text(event)}: CPU {cpu} looks up {what}: "
                    f"{event['result'].upper()}")
            if event["result"] == "miss":
                evicted = [l for l in before if l not in after[cpu]
                           and l not in event.get("dropped", {}).get(cpu, [])]
                line += " (page walk, new entry" + (
                    f"; evicts {evicted[0]}, the " + ("least recently used" if
                                                      self.params["policy"] == "lru" else
                                                      "oldest") + ")" if evicted else ")")
            out.append(line)
            for c, reason, pages in event["flushes"]:
                gone = event["dropped"][c]
                out.append(f"   tlb_flush on CPU {c}: {reason}, pages:{pages}"
                           + (f" (drops page {', '.join(gone)})" if gone and
                              reason != "TLB_REMOTE_SEND_IPI" else ""))
            out.append("   TLBs now: " + "; ".join(f"CPU {c}: {', '.join(ls) or '-'}"
                                                     for c, ls in after.items()))
        out.append("")
        for cpu, t in self.answer["totals"].items():
            out.append(f"CPU {cpu}: {t['hits']} hits, {t['misses']} misses")
        if self.answer["flushed"]:
            for step, cpus in self.answer["flushed"].items():
                out.append(f"Step {step} flushes the TLB of CPU {' and '.join(map(str, cpus))}"
                           + (": the IPI reaches every CPU that runs the address space"
                              if len(cpus) > 1 else ": no other CPU runs this address space"))
        return "\n".join(out)

    # -- checking ---------------------------------------------------------------------------------
    def _lookups(self):
        """The sequence for :func:`_simulate`: lookups and flushes, per CPU."""
        out = []
        for event in self.events:
            out.append((event["cpu"], event["label"]))
            for cpu, gone in event.get("dropped", {}).items():
                out.append((cpu, None, gone))
        return out

    def _diagnose(self, results):
        """Name a whole-answer misconception, if the answer is exactly what it gives."""
        size, policy = self.params["tlb_entries"], self.params["policy"]
        other = "fifo" if policy == "lru" else "lru"
        checks = [
            (dict(policy=other), f"your answer is what a {other.upper()} TLB would give; this "
             f"one is {policy.upper()}: " + ("a hit makes the entry the most recently used"
                                             if policy == "lru" else
                                             "a hit does not change the order, the oldest "
                                             "entry goes")),
            (dict(flushes=False), "your answer ignores the flush: the "
             + "/".join(sorted({e['kind'] for e in self.events if e['flushes']}))
             + " removes that page's entry from every CPU that runs the address space"),
        ]
        if len(self.initial) > 1:
            checks.append((dict(shared=True), "each CPU has a TLB of its own: the two CPUs "
                           "do not share entries"))
        for kwargs, text in checks:
            merged = {"policy": policy, **kwargs}
            if _simulate(self.initial, self._lookups(), size, **merged) == results and \
                    results != self.answer["results"]:
                return text
        return None

    def _why(self, step):
        """Why line ``step`` hits or misses."""
        event = self.events[step - 1]
        cpu, label = event["cpu"], event["label"]
        name = "K" if label == "K" else f"page {label}"
        states = [self.initial[cpu]] + [h[cpu] for h in self.history[:step - 1]]
        if event["result"] == "hit":
            since = next(i for i in range(len(states) - 1, -1, -1)
                         if label not in states[i] or i == 0)
            when = "from the start" if label in states[0] and since == 0 else \
                f"since line {since + 1}"
            return (f"line {step} is a hit: {name} was still in CPU {cpu}'s TLB ({when})")
        gone_at = None
        for i in range(len(states) - 1, 0, -1):
            if label in states[i - 1] and label not in states[i]:
                gone_at = i
                break
        if gone_at is None:
            where = "CPU 1 runs t, whose TLB" if cpu == 1 else f"CPU {cpu}'s TLB"
            return (f"line {step} is a miss: {name} had not been in {where} before (each CPU "
                    "has its own TLB)" if label not in states[0] else
                    f"line {step} is a miss: {name} is not in CPU {cpu}'s TLB")
        cause = self.events[gone_at - 1]
        if cause["flushes"] and label in cause["dropped"].get(cpu, []):
            return (f"line {step} is a miss: the {cause['kind']} at line {gone_at} flushed "
                    f"{name} from CPU {cpu}'s TLB")
        rule = "least recently used" if self.params["policy"] == "lru" else "oldest"
        return (f"line {step} is a miss: {name} was evicted from CPU {cpu}'s TLB at line "
                f"{gone_at}, as the {rule} entry when {cause['label']} came in")

    @staticmethod
    def _read_results(value):
        if isinstance(value, str):
            value = re.findall(r"hit|miss|h|m", value.lower())
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"could not read {value!r} as hits and misses")
        out = []
        for item in value:
            word = str(item).strip().lower()
            if word in ("h", "hit"):
                out.append("hit")
            elif word in ("m", "miss"):
                out.append("miss")
            else:
                raise ValueError(f"could not read {item!r} as 'hit' or 'miss'")
        return out

    def check(self, student):
        if not isinstance(student, dict):
            student = {"results": student}
        mistakes = []
        try:
            results = (self._read_results(student["results"]) if "results" in student
                       else None)
        except ValueError as exc:
            return Feedback(False, [str(exc)])
        truth = self.answer["results"]
        if results is not None:
            if len(results) != len(truth):
                return Feedback(False, [f"give one result for each of the {len(truth)} lines"])
            diagnosis = self._diagnose(results)
            if diagnosis:
                mistakes.append(diagnosis)
            mistakes += [self._why(i) for i, (a, b) in enumerate(zip(results, truth), 1)
                         if a != b]
        if student.get("flushed") is not None:
            said = {int(k): sorted(int(c) for c in v) for k, v in student["flushed"].items()}
            for step, cpus in self.answer["flushed"].items():
                got = said.get(step, [])
                if got != cpus:
                    extra = [c for c in cpus if c not in got]
                    mistakes.append(
                        f"line {step} flushes CPU {' and '.join(map(str, cpus))}"
                        + (": t runs the same address space on CPU 1, so flush_tlb_mm_range() "
                           "sends it an IPI (TLB_REMOTE_SHOOTDOWN)" if 1 in extra else
                           ": the CPU making the call flushes its own TLB "
                           "(TLB_LOCAL_MM_SHOOTDOWN)" if extra else
                           ": no other CPU runs this address space"))
            for step in said:
                if step not in self.answer["flushed"] and said[step]:
                    mistakes.append(f"line {step} flushes nothing: an access that hits or "
                                    "misses never flushes")
        if student.get("totals") is not None:
            for cpu, want in self.answer["totals"].items():
                got = student["totals"].get(cpu, student["totals"].get(str(cpu)))
                if isinstance(got, dict):
                    got = (got.get("hits"), got.get("misses"))
                if got is None or tuple(got) != (want["hits"], want["misses"]):
                    ks = sum(1 for e in self.events if e["label"] == "K" and e["cpu"] == cpu)
                    hint = (" (a system call's lookup of K counts too)"
                            if ks and got is not None and sum(map(int, got)) ==
                            want["hits"] + want["misses"] - ks else "")
                    mistakes.append(f"CPU {cpu} has {want['hits']} hits and {want['misses']} "
                                    f"misses{hint}")
        if not ({"results", "flushed", "totals"} & set(student)):
            mistakes.append("give the results (hit/miss per line), and/or 'flushed' and 'totals'")
        return Feedback(not mistakes, _unique(mistakes))

