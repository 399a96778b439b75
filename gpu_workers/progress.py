"""Step-level progress reports and cancellation checks for long batches."""

import logging
from collections.abc import Callable

logger = logging.getLogger(__name__)

# progress_callback(done_steps, total_steps, items_done, items_total)
ProgressCallback = Callable[[int, int, int, int], None]
StopCheck = Callable[[], bool]


class Cancelled(Exception):
    """Raised by a runner when its ``should_stop()`` returned True at a step or chunk boundary.

    Results of items finished before the stop are discarded with the batch.
    """


class Progress:
    """Counts the steps of a batch and calls the caller's hooks after each one.

    A step is one denoising step (generation) or one generated token (captioning) of one
    item, so ``total_steps`` is items times steps per item and does not depend on how the
    items are split into forward passes. A chunk that runs again after an out-of-memory
    error repeats steps; reported values never go down, they pause until the retry passes
    them.
    """

    def __init__(self, items_total: int, steps_per_item: int, callback: ProgressCallback | None = None,
                 should_stop: StopCheck | None = None):
        self.items_total = items_total
        self.steps_per_item = steps_per_item
        self.total_steps = items_total * steps_per_item
        self.callback = callback
        self.should_stop = should_stop
        self.items_done = 0
        self._reported_steps = 0
        self._reported_items = 0

    def step(self, chunk_size: int, step: int) -> None:
        """Record that the current chunk of ``chunk_size`` items finished its ``step``-th step (from 1)."""
        done = self.items_done * self.steps_per_item + chunk_size * min(step, self.steps_per_item)
        self._report(done)
        self.check_stop()

    def finish_chunk(self, chunk_size: int) -> None:
        """Record that a chunk's items are finished, including their scoring and saving."""
        self.items_done += chunk_size
        self._report(self.items_done * self.steps_per_item)
        self.check_stop()

    def check_stop(self) -> None:
        """Raise Cancelled when ``should_stop()`` returns True."""
        if self.should_stop is not None and self.should_stop():
            logger.info("stopping at %d of %d steps (%d of %d items done): cancelled",
                        self._reported_steps, self.total_steps, self.items_done, self.items_total)
            raise Cancelled(f"cancelled after {self.items_done} of {self.items_total} items")

    def _report(self, done_steps: int) -> None:
        if done_steps <= self._reported_steps and self.items_done <= self._reported_items:
            return
        self._reported_steps = max(done_steps, self._reported_steps)
        self._reported_items = self.items_done
        if self.callback is not None:
            self.callback(self._reported_steps, self.total_steps, self.items_done, self.items_total)
