"""Time limits on reading request bodies, kept by one timer for all requests.

A timer per request (`asyncio.timeout`) costs about 4 µs to arm and cancel, a third
of the ingest's own work on a one-event request. Here a body read registers its task
and deadline in a dict; one sweeper task, running only while reads are under way,
wakes every quarter of the limit and cancels the reads past their deadline. A read is
so cut off between 1 and 1.25 times the limit after it began.
"""

from __future__ import annotations

import asyncio
from typing import Any


class BodyDeadlines:
    """Watches body reads and cancels those that overrun `seconds`."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._reads: dict[asyncio.Task[Any], float] = {}
        self._overdue: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    def watch(self) -> asyncio.Task[Any]:
        """Start the current task's clock; pair with `unwatch` in a `finally`."""
        task = asyncio.current_task()
        assert task is not None, "a body is read inside a task"
        loop = task.get_loop()
        self._reads[task] = loop.time() + self.seconds
        if self._sweeper is None:
            self._sweeper = loop.create_task(self._sweep())
        return task

    def overdue(self, task: asyncio.Task[Any]) -> bool:
        """Whether `task` was cancelled for overrunning (its cancellation is then undone).

        The task only awaits inside its watched read, so the cancellation always lands
        there, where the reader catches it and asks this.
        """
        if task not in self._overdue:
            return False
        self._overdue.discard(task)
        task.uncancel()
        return True

    def unwatch(self, task: asyncio.Task[Any]) -> None:
        self._reads.pop(task, None)

    def close(self) -> None:
        """Stop the sweeper (at the end of the app's lifespan)."""
        if self._sweeper is not None:
            self._sweeper.cancel()

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._reads:
                await asyncio.sleep(self.seconds / 4)
                now = loop.time()
                for task, deadline in list(self._reads.items()):
                    if deadline <= now and task not in self._overdue:
                        self._overdue.add(task)
                        task.cancel()
        finally:
            self._sweeper = None
