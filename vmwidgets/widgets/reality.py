"""``RealityCheck(ops)``: the same operations in the model and in a live child process.

Each op is a tuple on an arena of pages at ``ARENA`` (the address the live harness uses):
``("mmap", page, npages, prot)`` (private anonymous, fixed), ``("mprotect", page, npages,
prot)``, ``("munmap", page, npages)``, ``("write", page, data)``, ``("read", page, size)``;
``prot`` as ``"rw-"``. Run shows, for each, the arena's maps lines and each page's pagemap
bits (present, exclusively mapped; the PFN too when running as root) from both sides, and
marks every line where they differ (PFNs are shown as root but never compared: the
model's frame numbers are its own). Where the live kernel is not available (not Linux,
no /proc) it says so and runs nothing live.
"""

import html

import ipywidgets as W

from ..core import flags as F
from ..core.machine import Machine
from ._text import TextRepr
from .inputs import InputError, parse_flags, parse_int, parse_prot

P = F.PAGE_SIZE
ARENA = 0x100000000000
DEMO = [("mmap", 0, 4, "rw-"), ("write", 1, "hi"), ("mprotect", 2, 1, "r--"),
        ("read", 1, 2), ("munmap", 3, 1)]
_FIXED = F.MAP_PRIVATE | F.MAP_ANONYMOUS | F.MAP_FIXED
_OPS = {"mmap": 4, "mprotect": 4, "munmap": 3, "write": 3, "read": 3}


def _check_ops(ops, npages):
    out = []
    for i, op in enumerate(ops):
        if not isinstance(op, (tuple, list)) or not op or op[0] not in _OPS:
            raise InputError(f"op {i}: {op!r} is not one of {', '.join(_OPS)} as a tuple")
        if len(op) != _OPS[op[0]]:
            raise InputError(f"op {i}: {op[0]} takes {_OPS[op[0]] - 1} arguments, got {len(op) - 1}")
        name, page = op[0], op[1]
        if not isinstance(page, int) or not 0 <= page < npages:
            raise InputError(f"op {i}: page {page!r} is outside the arena (0..{npages - 1})")
        if name in ("mmap", "mprotect", "munmap") and not (isinstance(op[2], int) and 0 < op[2] <= npages - page):
            raise InputError(f"op {i}: {op[2]!r} pages from page {page} do not fit in the arena")
        if name in ("mmap", "mprotect"):
            op = (name, page, op[2], parse_prot(op[3]))
        if name == "write":
            op = (name, page, op[2].encode() if isinstance(op[2], str) else bytes(op[2]))
        out.append(tuple(op))
    return out


def _apply(proc, op):
    name, page = op[0], ARENA + op[1] * P
    if name == "mmap":
        return proc.mmap(page, op[2] * P, op[3], _FIXED)
    if name == "mprotect":
        return proc.mprotect(page, op[2] * P, op[3])
    if name == "munmap":
        return proc.munmap(page, op[2] * P)
    if name == "write":
        return proc.write(page, op[2])
    return proc.read(page, op[2])


def _arena_lines(text, npages):
    out = []
    for line in text.splitlines():
        start, end = (int(x, 16) for x in line.split()[0].split("-"))
        if start < ARENA + npages * P and end > ARENA:
            out.append(" ".join(line.split()[:2]))
    return out


def _bits(entry, root):
    entry = int(entry)
    text = ("P" if entry >> 63 & 1 else "-") + ("E" if entry >> 56 & 1 else "-")
    return text + (f" {entry & ((1 << 55) - 1):#x}" if root and entry >> 63 & 1 else "")


def scenario_ops(name):
    """The simple steps of library scenario ``name`` as ops on the arena, and a note for
    each step left out (another process, a flag other than private|anonymous|fixed, an
    access that faults: it would kill the live child)."""
    from .. import scenarios
    sc = scenarios.get(name)
    ops, skipped, procs = [], [], set()
    for i, step in enumerate(sc.ops):
        a = step.args
        why = None
        if step.call == "spawn":
            procs.add(step.bind)
            continue
        if step.call not in _OPS:
            why = f"{step.call} is not one of {', '.join(_OPS)}"
        elif len(procs) > 1 or step.proc not in procs:
            why = "another process than the first"
        elif step.expect is not None and "SEGV" in str(step.expect):
            why = f"it faults ({step.expect}), which would kill the live child"
        elif step.call == "mmap" and parse_flags(a["flags"]) != _FIXED:
            why = "mmap flags other than private|anonymous|fixed"
        if why:
            skipped.append(f"step {i} ({step.call}): {why}")
            continue
        page = (parse_int(a["addr"], "addr") - ARENA) // P
        if step.call in ("mmap", "mprotect", "munmap"):
            op = (step.call, page, -(-parse_int(a["length"], "length") // P))
            ops.append(op + ((a["prot"],) if step.call != "munmap" else ()))
        elif step.call == "write":
            ops.append(("write", page, a["data"]))
        else:
            ops.append(("read", page, int(a["size"])))
    return ops, skipped


class RealityCheck(TextRepr, W.VBox):
    """Model vs this machine's kernel, side by side, for ``ops`` (default: a short demo).

    ``RealityCheck.from_scenario("split-mprotect")`` takes the simple steps of a library
    scenario (see :func:`scenario_ops`); ``skipped`` lists the steps left out.
    """

    @classmethod
    def from_scenario(cls, name):
        ops, skipped = scenario_ops(name)
        npages = max([op[1] + (op[2] if op[0] in ("mmap", "mprotect", "munmap") else 1)
                      for op in ops] + [1])
        return cls(ops, npages=max(npages, 8), skipped=skipped)

    def __init__(self, ops=None, npages=8, skipped=()):
        self.npages = npages
        self.skipped = list(skipped)
        self.ops = _check_ops(DEMO if ops is None else ops, npages)
        self.run_button = W.Button(description="Run in both", button_style="primary", icon="play")
        self.status = W.HTML()
        self.table = W.HTML()
        self.notes = W.HTML("".join(f"<br><i>left out: {html.escape(n)}</i>" for n in self.skipped))
        self.differences = 0
        self.rows = None
        self.run_button.on_click(lambda _: self.run())
        super().__init__([self.run_button, self.status, self.notes, self.table])
        self.add_class("vmw-reality")
        from .. import live
        self.available, why = live.live_kernel_available()
        if not self.available:
            self.run_button.disabled = True
            self.status.value = (f"<i>The live kernel is not available here ({html.escape(why)}); "
                                 "only the model can run.</i>")

    def run(self):
        """Run every op on both sides; fill the table; return the number of differences."""
        if not self.available:
            return None
        from .. import live
        root = live.live_root_available()[0]
        m = Machine(ram="64M", history=False)
        model = m.spawn()
        rows, self.differences = [], 0
        try:
            kernel = live.LiveProcess(arena_pages=self.npages, arena_base=ARENA)
        except (OSError, RuntimeError) as exc:
            self.status.value = f"<i>could not start a live child: {html.escape(str(exc))}</i>"
            return None
        with kernel:
            for op in self.ops:
                got = []
                for side in (model, kernel):
                    try:
                        r = _apply(side, op)
                        got.append(repr(r) if isinstance(r, bytes) else "ok")
                    except OSError as exc:
                        got.append(f"errno {exc.errno}")
                addrs = [ARENA + i * P for i in range(self.npages)]
                mlines = _arena_lines(model.proc_maps(), self.npages)
                klines = _arena_lines(kernel.maps_text(), self.npages)
                mbits = [_bits(model.pagemap(a, show_pfn=root), root) for a in addrs]
                kbits = [_bits(e, root) for e in kernel.pagemaps(addrs)]
                rows.append((op, got, mlines, klines, mbits, kbits))
        self.rows = rows
        self.table.value = self._table(rows, root)
        self.status.value = (f"{len(self.ops)} operations; <b>{self.differences}</b> differences"
                             + ("" if root else " (not root: pagemap flag bits only, no PFNs)"))
        return self.differences

    def text(self):
        """Plain text: whether it could run, and per operation the model's result, maps and
        pagemap bits (P present, E exclusive), with what the kernel showed where it differs."""
        head = f"RealityCheck: {len(self.ops)} operations"
        if not self.available:
            return head + "; the live kernel is not available here, nothing was run"
        if self.rows is None:
            return head + "; not run yet (press 'Run in both')"
        out = [f"{head}; {self.differences} differences between the model and this kernel"]
        for op, got, ml, kl, mb, kb in self.rows:
            out.append(f"{op[0]}({', '.join(str(x) for x in op[1:])}) = {got[0]}"
                       + ("" if got[0] == got[1] else f"   KERNEL: {got[1]}"))
            out += [f"    {line}" for line in ml] or ["    (nothing mapped)"]
            if ml != kl:
                out += [f"  KERNEL {line}" for line in kl] or ["  KERNEL (nothing mapped)"]
            bits = [b[:2] for b in mb]
            out.append("    pagemap " + " ".join(bits)
                       + ("" if bits == [b[:2] for b in kb]
                          else "   KERNEL " + " ".join(b[:2] for b in kb)))
        return "\n".join(out)

    def _cell(self, a, b, same=None):
        if (a == b) if same is None else same:
            return f"<td><pre>{html.escape(a)}</pre></td><td><pre>{html.escape(b)}</pre></td>"
        self.differences += 1
        style = ' style="background:#fde2e1"'
        return f"<td{style}><pre>{html.escape(a)}</pre></td><td{style}><pre>{html.escape(b)} &#9888;</pre></td>"

    def _table(self, rows, root):
        out = ['<table class="vmw-reality-table"><tr><th>op</th><th>model</th><th>kernel</th></tr>']
        for op, got, ml, kl, mb, kb in rows:
            shown = ", ".join(str(x) for x in op[1:])
            out.append(f"<tr><td><b>{op[0]}({html.escape(shown)})</b></td>{self._cell(got[0], got[1])}</tr>")
            out.append(f"<tr><td>maps</td>{self._cell(chr(10).join(ml) or '(none)', chr(10).join(kl) or '(none)')}</tr>")
            out.append(f"<tr><td>pagemap P=present E=exclusive</td>{self._cell(' '.join(mb), ' '.join(kb), [x[:2] for x in mb] == [x[:2] for x in kb])}</tr>")
        return "".join(out) + "</table>"
