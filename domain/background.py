"""Work begun after the answer (notifications, announcements of promotions): run in tasks the
request does not wait for, each failure logged, and tracked so that shutdown can wait for them."""
import asyncio


class Background:
    def __init__(self, log, failure):
        """`failure`: what the log says when a piece of work fails (the change that caused it is
        made either way; the REST reads show the truth)."""
        self._log = log
        self._failure = failure
        self._tasks = set()

    def spawn(self, work):
        task = asyncio.ensure_future(self._logged(work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, timeout=5.0):
        """Waits up to `timeout` seconds for the work still running (shutdown)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)

    async def _logged(self, work):
        try:
            await work
        except Exception:
            self._log.exception(self._failure)
