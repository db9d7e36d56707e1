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
