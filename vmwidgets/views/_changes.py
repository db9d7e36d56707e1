"""What the pictures outline, read from a :class:`~vmwidgets.views.diff.Changes`
(``views/diff.py``). Every helper accepts ``None``: nothing to outline."""


def vma_marks(changes, pid):
    """``{vm_start: "added" | "resized" | "re-protected" | "changed"}`` for ``pid``."""
    return {} if changes is None else changes.vma_marks(pid)


def vma_removed(changes, pid):
    """``[(start, end)]`` of the VMAs of ``pid`` the step removed."""
    return [] if changes is None else changes.vmas_removed(pid)


def frames_changed(changes):
    """The PFNs the step allocated, freed or changed."""
    if changes is None:
        return set()
    return {c.pfn for c in changes.frames}


def anon_vmas_changed(changes):
    """The ids of the anon_vmas the step created or freed."""
    if changes is None:
        return set()
    return set(changes.anon_vmas_added) | set(changes.anon_vmas_removed)


def pte_changed(changes, pid, address):
    return changes is not None and changes.pte_changed(pid, address)


def tlb_changed(changes, cpu):
    return changes is not None and changes.tlb_changed(cpu)


def unmapped_ranges(changes, pid, mm):
    """``[(start, end)]``: address ranges that were mapped before the step and are not
    now (a VMA removed, or a VMA cut short or in two by munmap/mremap), merged."""
    if changes is None:
        return []
    holes = []
    for c in changes.vma_changes(pid):
        if c.before is None:
            continue
        lo, hi = c.before.start, c.before.end
        for vma in mm.vmas_in(lo, hi):
            if vma.vm_start > lo:
                holes.append((lo, vma.vm_start))
            lo = max(lo, vma.vm_end)
        if lo < hi:
            holes.append((lo, hi))
    merged = []
    for lo, hi in sorted(holes):
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    return merged
