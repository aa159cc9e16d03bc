"""Python's cyclic garbage collector paused while allocation-heavy work runs.

A rebuild or a batch of inventory diffs makes hundreds of thousands of short-lived, acyclic objects (rows,
entries, item keys, sets of ids). In a long-lived worker they trigger collections that traverse every
container alive, the work's own big sets and lists included, and cost more than the work itself.
Reference counting still frees them at once; the collector resumes when the last such work of the process
ends (they overlap: two diff batches, rebuilds beside them).
"""
from __future__ import annotations

import contextlib
import gc
import threading

_lock = threading.Lock()
_depth = 0
_was_enabled = False


@contextlib.contextmanager
def gc_paused():
    global _depth, _was_enabled
    with _lock:
        if _depth == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _was_enabled:
                gc.enable()
