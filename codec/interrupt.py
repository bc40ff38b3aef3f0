"""Stopping long model work that is no longer wanted, between windows.

A service runs a request's model work in a worker thread; when the request times out or its
client goes away, the work should stop rather than hold the thread. The library's long loops
(windows of the codec, blocks and frames of the prior) call `checkpoint()`, which raises
`Interrupted` when the work running in this thread was marked unwanted:

    with interruptible(lambda: not future.done()):
        codec.to_bytes(encoded, prior)         # raises Interrupted within one window of the change

Outside `interruptible` a checkpoint costs one attribute lookup and never raises.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_local = threading.local()


class Interrupted(Exception):
    """The work was stopped at a checkpoint because nobody wants its result any more."""


@contextmanager
def interruptible(still_wanted: Callable[[], bool]) -> Iterator[None]:
    """Within the block, this thread's checkpoints raise Interrupted once `still_wanted()` is False."""
    previous = getattr(_local, "still_wanted", None)
    _local.still_wanted = still_wanted
    try:
        yield
    finally:
        _local.still_wanted = previous


def checkpoint() -> None:
    """Raise Interrupted if the work of this thread is no longer wanted."""
    still_wanted = getattr(_local, "still_wanted", None)
    if still_wanted is not None and not still_wanted():
        raise Interrupted("the result is no longer wanted")
