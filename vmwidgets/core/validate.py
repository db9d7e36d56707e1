"""Invariants of the whole machine, checked on demand (mm/vma.c: validate_mm() and the
CONFIG_DEBUG_VM checks, gathered in one place).

:func:`validate` raises :class:`ValidationError` listing every broken rule and a dump of
the state, so a failing test or a student's bug report shows what went wrong.
"""

from collections import Counter

from . import pgtable, rmap, swap
from .errors import ValidationError
from .flags import (PAGE_SIZE, TASK_SIZE, VM_WRITE, _PAGE_DIRTY, _PAGE_RW, _PAGE_SAVED_DIRTY,
                    _PAGE_SPECIAL)


def validate_mm(mm, problems):
    """VMAs sorted, non-overlapping, page aligned, inside user space; map_count agrees;
    each VMA's anon_vma_chain agrees with the anon_vmas' trees."""
    prev_end = 0
    vmas = list(mm.mm_mt)
    for vma in vmas:
        name = f"VMA {vma.vm_start:#x}-{vma.vm_end:#x} (id {vma.id})"
        if vma.vm_start % PAGE_SIZE or vma.vm_end % PAGE_SIZE:
            problems.append(f"{name} is not page aligned")
        if vma.vm_start >= vma.vm_end:
            problems.append(f"{name} is empty or inverted")
        if vma.vm_start < prev_end:
            problems.append(f"{name} overlaps or is out of order with the VMA before it")
        if vma.vm_end > TASK_SIZE:
            problems.append(f"{name} ends above TASK_SIZE")
        if vma.vm_mm is not mm:
            problems.append(f"{name} belongs to another mm")
        prev_end = vma.vm_end
        for avc in vma.anon_vma_chain:
            if avc.vma is not vma:
                problems.append(f"{name}: an AVC on its list points to another VMA")
            if avc not in avc.anon_vma.rb_root:
                problems.append(f"{name}: AVC to anon_vma {avc.anon_vma.id} is missing from "
                                "that anon_vma's tree")
            if avc.anon_vma.freed:
                problems.append(f"{name}: chained to freed anon_vma {avc.anon_vma.id}")
        if vma.anon_vma is not None:
            if not any(avc.anon_vma is vma.anon_vma for avc in vma.anon_vma_chain):
                problems.append(f"{name}: its anon_vma {vma.anon_vma.id} is not on its chain")
        elif vma.anon_vma_chain:
            problems.append(f"{name}: has AVCs but no anon_vma")
        if vma.vm_file is not None and vma not in vma.vm_file.mapping.i_mmap:
            problems.append(f"{name}: missing from its file's i_mmap")
    if mm.map_count != len(vmas):
        problems.append(f"map_count {mm.map_count} != {len(vmas)} VMAs")


def validate_anon_vmas(machine, problems):
    """Each live anon_vma: AVCs in its tree are on their VMA's list; num_active_vmas counts
    the VMAs using it; num_children counts child anon_vmas (a root counts itself)."""
    live_vmas = [vma for proc in machine.processes for vma in proc.mm.mm_mt]
    active = Counter(id(vma.anon_vma) for vma in live_vmas if vma.anon_vma is not None)
    children = Counter()
    for av in machine.anon_vmas.values():
        if av.rb_root:
            children[id(av.parent)] += 1
    for av in machine.anon_vmas.values():
        for avc in av.rb_root:
            if avc not in avc.vma.anon_vma_chain:
                problems.append(f"anon_vma {av.id}: AVC for VMA {avc.vma.id} is not on the "
                                "VMA's list")
        if av.num_active_vmas != active[id(av)]:
            problems.append(f"anon_vma {av.id}: num_active_vmas {av.num_active_vmas} but "
                            f"{active[id(av)]} VMA(s) use it")
        if av.rb_root and av.num_children != children[id(av)]:
            problems.append(f"anon_vma {av.id}: num_children {av.num_children} but "
                            f"{children[id(av)]} child anon_vma(s) (counting itself if root)")


def validate_pages(machine, problems):
    """PTEs lie in VMAs and respect VM_WRITE; each frame's mapcount equals the PTEs mapping
    it and its refcount the references we know of; free frames are unmapped; rmap finds
    every mapping exactly once; page-table pages are reachable exactly once."""
    phys = machine.phys
    mapcount = Counter()
    table_refs = Counter()
    swap_refs = Counter()
    for proc in machine.processes:
        mm = proc.mm
        for table in pgtable.iter_tables(mm):
            table_refs[table.page.pfn] += 1
            if table.page.kind != "pgtable":
                problems.append(f"pid {proc.pid}: {table} sits in a frame of kind {table.page.kind}")
        for addr, _t, _i, pte in pgtable.iter_ptes(mm, 0, TASK_SIZE):
            vma = mm.vma_lookup(addr)
            where = f"pid {proc.pid} {addr:#x}"
            if vma is None:
                problems.append(f"{where}: a PTE outside every VMA")
                continue
            if pte & _PAGE_RW and not vma.vm_flags & VM_WRITE:
                problems.append(f"{where}: writable PTE in a VMA without VM_WRITE")
            if pgtable.pte_present(pte):
                # arch/x86/include/asm/pgtable.h (6.18): the kernel never makes a
                # Write=0,Dirty=1 PTE (shadow-stack memory to the CPU) for ordinary memory:
                # pte_wrprotect() / pte_mkdirty() / pte_modify() keep a read-only PTE's
                # dirtiness in _PAGE_SAVED_DIRTY, and pte_mkwrite() moves it back to D.
                if pte & _PAGE_DIRTY and not pte & _PAGE_RW:
                    problems.append(f"{where}: read-only PTE {pte:#x} with the Dirty bit set "
                                    "(Write=0,Dirty=1 is a shadow-stack PTE; the dirty bit "
                                    "belongs in _PAGE_SAVED_DIRTY)")
                if pte & _PAGE_SAVED_DIRTY and pte & _PAGE_RW:
                    problems.append(f"{where}: writable PTE {pte:#x} with _PAGE_SAVED_DIRTY "
                                    "set (pte_mkwrite() moves it back to Dirty)")
            if not pgtable.pte_present(pte):
                slot = machine.swap.slots.get(swap.swp_offset(pte))
                if slot is None:
                    problems.append(f"{where}: swap entry for a free slot {swap.swp_offset(pte)}")
                else:
                    swap_refs[slot.offset] += 1
                continue
            pfn = pgtable.pte_pfn(pte)
            page = phys.pages[pfn]
            if pte & _PAGE_SPECIAL:
                if page.kind not in ("zero", "kernel"):
                    problems.append(f"{where}: special PTE to a {page.kind} frame")
                continue
            if page.kind not in ("anon", "file"):
                problems.append(f"{where}: PTE maps frame {pfn:#x} of kind {page.kind}")
                continue
            mapcount[pfn] += 1
            if page.kind == "anon":
                if vma.linear_page_index(addr) != page.index:
                    problems.append(f"{where}: page index {page.index:#x} does not match the "
                                    f"VMA's offset {vma.linear_page_index(addr):#x}")
    for pfn, page in sorted(phys.pages.items()):
        if page.kind == "pgtable" and table_refs[pfn] != 1:
            problems.append(f"page-table frame {pfn:#x} is reachable {table_refs[pfn]} times")
        if page.kind in ("anon", "file"):
            if page.mapcount != mapcount[pfn]:
                problems.append(f"frame {pfn:#x}: mapcount {page.mapcount} but "
                                f"{mapcount[pfn]} PTE(s) map it")
            expected_ref = mapcount[pfn] + (1 if page.kind == "file" or page.swap else 0)
            if page.swap is not None and page.swap.cache is not page:
                problems.append(f"frame {pfn:#x}: in the swap cache of a slot that does not "
                                "point back to it")
            if page.kind == "file" and page.mapping.i_pages.get(page.index) is not page:
                problems.append(f"frame {pfn:#x}: file page missing from its page cache")
            if page.refcount != expected_ref:
                problems.append(f"frame {pfn:#x}: refcount {page.refcount}, expected {expected_ref}")
            if page.kind == "anon" and page.mapcount:
                if page.mapping is None or page.mapping.freed:
                    problems.append(f"frame {pfn:#x}: anon page without a live anon_vma")
                    continue
            found = Counter((id(v), a) for _p, v, a in rmap.rmap_walk(machine, pfn))
            if sum(found.values()) != mapcount[pfn] or any(n != 1 for n in found.values()):
                problems.append(f"frame {pfn:#x}: rmap_walk finds {sum(found.values())} "
                                f"mapping(s), {mapcount[pfn]} PTE(s) map it")
        elif page.kind == "free" and mapcount[pfn]:
            problems.append(f"free frame {pfn:#x} is still mapped")
    for offset, slot in machine.swap.slots.items():
        if slot.count != swap_refs[offset]:
            problems.append(f"swap slot {offset}: count {slot.count} but {swap_refs[offset]} "
                            "swap PTE(s) refer to it")
        if slot.count == 0 and slot.cache is None:
            problems.append(f"swap slot {offset} is in use but nothing refers to it")
    if len(machine.swap.slots) + machine.swap.nr_free != machine.swap.nr_slots - 1:
        problems.append("swap slots: in use + free != size")
    in_use = sum(1 for p in phys.pages.values() if p.kind not in ("free", "kernel", "zero"))
    reserved = sum(1 for p in phys.pages.values() if p.kind in ("kernel", "zero"))
    if in_use + phys.nr_free + reserved != phys.nr_pages:
        problems.append(f"frames: {in_use} in use + {phys.nr_free} free + {reserved} reserved "
                        f"!= {phys.nr_pages}")


def validate_tlb(machine, problems):
    """No TLB entry a CPU may still use disagrees with the page tables.

    An ASID slot whose ``tlb_gen`` is current for its (live) mm will be used without a
    flush, so each entry of its PCID must map the PFN the PTE maps, the PTE must be present,
    and the entry may not be more permissive (writable when the PTE is not) nor dirty when
    the PTE is clean. x86 allows the rest: a less permissive entry (the CPU faults, finds
    the PTE fine and refills it: a spurious fault), an accessed bit cleared without a flush,
    and any entry of a slot whose ``tlb_gen`` is behind (that CPU flushes before using it).
    Also: each CPU's loaded mm has the CPU in its mm_cpumask, and a running task's mm is
    loaded (not lazily)."""
    from . import tlb as tlb_mod
    from .flags import _PAGE_PRESENT
    from .page_alloc import ZERO_PFN
    live = {p.mm.context.ctx_id: p.mm for p in machine.processes}
    for cpu in machine.cpus:
        name = f"CPU {cpu.number}"
        if cpu.current is not None:
            if cpu.current.mm is not cpu.loaded_mm or cpu.is_lazy:
                problems.append(f"{name} runs tid {cpu.current.tid} but its mm is not loaded")
        if not isinstance(cpu.loaded_mm, tlb_mod.InitMm) and cpu.loaded_mm.owner.alive \
                and cpu.number not in cpu.loaded_mm.cpumask:
            problems.append(f"{name} has the mm of pid {cpu.loaded_mm.owner.pid} loaded but is "
                            "not in its mm_cpumask")
        current = {}
        for asid, (ctx_id, gen) in enumerate(cpu.ctxs):
            mm = live.get(ctx_id)
            if mm is not None and gen >= mm.context.tlb_gen:
                current[cpu.pcid(asid)] = (asid, mm)
        for entry in cpu.tlb:
            if entry.pcid == tlb_mod.GLOBAL:
                if entry.address != tlb_mod.ENTRY_TEXT or entry.pfn != tlb_mod.ENTRY_TEXT_PFN:
                    problems.append(f"{name}: global TLB entry {entry!r} is not the kernel's")
                continue
            if entry.pcid not in current:
                continue
            asid, mm = current[entry.pcid]
            pte = pgtable.get_pte(mm, entry.address)
            why = None
            if not pte & _PAGE_PRESENT:
                why = "the PTE is not present" if not pte else "the PTE is not present any more"
            elif pgtable.pte_pfn(pte) != entry.pfn:
                why = f"the PTE maps pfn {pgtable.pte_pfn(pte):#x}"
            elif entry.writable and not pte & _PAGE_RW:
                why = "the entry is writable but the PTE is read-only"
            elif entry.dirty and not pgtable.pte_dirty(pte):
                why = "the entry is dirty but the PTE is clean"
            if why is None:
                continue
            frame = machine.phys.pages[entry.pfn]
            what = ("a free frame" if frame.kind == "free" else
                    "the zero page" if entry.pfn == ZERO_PFN else
                    f"an {frame.kind} frame" if frame.kind[0] in "aeiou" else
                    f"a {frame.kind} frame")
            problems.append(
                f"{name}: stale TLB entry: {entry.address:#x} (PCID {entry.pcid}, pid "
                f"{mm.owner.pid}) -> pfn {entry.pfn:#x}, now {what}, but {why}; ASID slot "
                f"{asid} is up to date (tlb_gen {mm.context.tlb_gen}), so an access on "
                f"{name} would use it (a missing TLB flush)")


def validate(machine):
    """Check every invariant of ``machine``; raise :class:`ValidationError` if any fails."""
    problems = []
    for proc in machine.processes:
        validate_mm(proc.mm, problems)
    validate_anon_vmas(machine, problems)
    validate_pages(machine, problems)
    validate_tlb(machine, problems)
    if problems:
        raise ValidationError("\n".join(["model state is inconsistent:"]
                                        + [f"  - {p}" for p in problems]
                                        + ["", machine.dump()]))
