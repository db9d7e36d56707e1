"""ftrace's function_graph output, for a :class:`~vmwidgets.trace.Call` tree.

A call with callees opens a brace and closes it after them; a leaf call ends with ``;``.
Arguments are shown as with ``funcgraph-args`` and return values as with
``funcgraph-retval`` (``/* = value */`` after a leaf, ``} /* func = value */`` after a
brace); state changes appear as ``/* ... */`` comment lines, where trace_printk() output
appears in a real function_graph trace. The model has no clock, so the DURATION column
stays empty.

>>> from vmwidgets.trace import Call, Note
>>> root = Call("do_mmap", {"addr": "0x0"})
>>> leaf = Call("vma_merge_new_range"); leaf.result = "NULL"
>>> root.body = [leaf, Note("vma inserted: vma[0x1000-0x2000 rw-p]")]
>>> root.result = "0x1000"
>>> print(function_graph(root))
 0)               |  do_mmap(addr=0x0) {
 0)               |    vma_merge_new_range(); /* = NULL */
 0)               |    /* vma inserted: vma[0x1000-0x2000 rw-p] */
 0)               |  } /* do_mmap = 0x1000 */
>>> print(compact(root))
do_mmap
  vma_merge_new_range
"""

import difflib
import textwrap

#: The header ftrace prints above a function_graph trace.
HEADER = ("# tracer: function_graph\n"
          "#\n"
          "# CPU  DURATION                  FUNCTION CALLS\n"
          "# |     |   |                     |   |   |   |")


def function_graph(call, cpu=0, indent=2, header=False, args=True, depth=None):
    """Render ``call`` and its callees; ``cpu`` fills the ``CPU)`` column.

    :param header: start with ftrace's ``# tracer: function_graph`` header.
    :param args: show the arguments (``funcgraph-args``); without them lines are shorter.
    :param depth: show calls down to this many levels below ``call`` (``None``: all); a
        call whose callees are cut off ends with ``/* N calls below */``.
    """
    lines = [HEADER] if header else []
    _render(call, 0, f"{cpu:>2})               |  ", indent, args, depth, lines)
    return "\n".join(lines)


def _signature(call, args):
    if not args:
        return f"{call.func}()"
    return f"{call.func}({', '.join(f'{k}={v}' for k, v in call.args.items())})"


def _retval(call):
    if call.error is not None:
        return call.error
    return call.result


def calls_below(call):
    """How many calls the tree under ``call`` holds (not counting ``call`` itself)."""
    return sum(1 for _ in call.walk()) - 1


def _render(call, level, prefix, indent, args, depth, lines):
    pad = prefix + " " * (indent * level)
    value = _retval(call)
    cut = depth is not None and level >= depth
    if cut or (not call.body and not call.dropped and not call.dropped_calls):
        tail = f" /* = {value} */" if value is not None else ""
        hidden = calls_below(call) if cut else 0
        below = f" /* {hidden} call{'' if hidden == 1 else 's'} below */" if hidden else ""
        lines.append(f"{pad}{_signature(call, args)};{tail}{below}")
        return
    lines.append(f"{pad}{_signature(call, args)} {{")
    inner = pad + " " * indent
    for item in call.body:
        if isinstance(item, str):
            lines.append(f"{inner}/* {item} */")
        else:
            _render(item, level + 1, prefix, indent, args, depth, lines)
    if call.dropped_calls:
        lines.append(f"{inner}/* ... and {call.dropped_calls} more call(s), not recorded */")
    if call.dropped:
        lines.append(f"{inner}/* ... and {call.dropped} more change(s) */")
    tail = f" /* {call.func} = {value} */" if value is not None else ""
    lines.append(f"{pad}}}{tail}")


def compact(call, depth=None, indent=2):
    """The call tree as names only, one call a line, indented by depth: the form tests
    compare with (:func:`structure_diff`). ``depth`` stops below that many levels."""
    lines = []
    for d, c in call.walk():
        if depth is None or d <= depth:
            lines.append(" " * (indent * d) + c.func)
    return "\n".join(lines)


def _as_compact(tree, depth):
    if isinstance(tree, str):
        text = textwrap.dedent(tree.strip("\n"))
        lines = [line.rstrip() for line in text.splitlines() if line.strip()]
        if depth is not None:
            lines = [line for line in lines if (len(line) - len(line.lstrip())) // 2 <= depth]
        return lines
    return compact(tree, depth).splitlines()


def structure_diff(expected, actual, depth=None):
    """Compare two call structures, each a :class:`~vmwidgets.trace.Call` or the text of
    :func:`compact` (indented by two spaces a level; common indentation is ignored).
    Returns ``""`` when they are the same, else a unified diff (expected -> actual).

    >>> from vmwidgets.trace import Call
    >>> tree = Call("handle_mm_fault"); tree.body = [Call("do_anonymous_page")]
    >>> structure_diff('''
    ...     handle_mm_fault
    ...       do_anonymous_page
    ... ''', tree)
    ''
    >>> print(structure_diff("handle_mm_fault\\n  do_wp_page", tree))
    --- expected
    +++ actual
    @@ -1,2 +1,2 @@
     handle_mm_fault
    -  do_wp_page
    +  do_anonymous_page
    """
    want, got = _as_compact(expected, depth), _as_compact(actual, depth)
    if want == got:
        return ""
    return "\n".join(difflib.unified_diff(want, got, "expected", "actual", lineterm=""))
