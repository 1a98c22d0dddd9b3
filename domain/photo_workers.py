"""Photos are decoded and re-encoded in worker processes, each decode under a CPU-time limit.

Why processes: a decode is CPU work the event loop must not do, and hostile bytes can make it
cost far more than their size suggests (domain/photos.py refuses what it can from the headers;
this is the limit for whatever gets past). A thread cannot be stopped: a decode running over
its limit would hold a core and the GIL, and the process at shutdown, until it ends. A process
is killed, at its limit by the kernel (a CPU-time timer), on a wall-clock limit by us, and at
shutdown by us, whatever it is doing.

The workers are long-lived (starting Python and Pillow costs ~0.2 s of CPU, longer than most
decodes), one decode at a time each, at most `max_workers` at once; a worker that is killed is
replaced on the next upload. The protocol over the worker's stdin/stdout: once started, the
worker sends <length: 4 bytes big-endian><JSON {"ready": true}>; then for each photo sent as
<length><bytes>, it answers <length><JSON header>, and for a photo <length><re-encoded bytes>.
"""
import asyncio
import json
import logging
import os
import pathlib
import signal
import struct
import sys

from PIL import Image

from domain.errors import InvalidInput, Unavailable, UnsupportedMediaType
from domain.photos import PreparedPhoto, prepare_photo

log = logging.getLogger("photos")

ROOT = pathlib.Path(__file__).resolve().parent.parent
_LENGTH = struct.Struct(">I")
# A decode on a busy machine shares its core: the wall-clock limit leaves room for that.
WALL_CLOCK_FACTOR = 3
REFUSALS = {"InvalidInput": InvalidInput, "UnsupportedMediaType": UnsupportedMediaType}


def too_complex(cpu_seconds):
    return InvalidInput(f"Decoding the image took more than {cpu_seconds:g} s of CPU; no photo needs that.",
                        code="image_too_complex")


class PhotoWorkers:
    """`await workers.prepare(data)` is `prepare_photo(data)` in a worker process, bounded."""

    def __init__(self, cpu_seconds, max_workers):
        self.cpu_seconds = cpu_seconds
        self._slots = asyncio.Semaphore(max_workers)
        self._idle = []
        self._busy = set()
        self._closed = False

    async def prepare(self, data: bytes) -> PreparedPhoto:
        """Raises what prepare_photo raises, InvalidInput "image_too_complex" for a decode over the
        CPU limit, and Unavailable once the workers are closed (shutdown)."""
        async with self._slots:
            worker = self._idle.pop() if self._idle else await self._start()
            self._busy.add(worker)
            try:
                return await worker.prepare(data, self.cpu_seconds)
            finally:
                self._busy.discard(worker)
                # A worker stopped mid-answer (limit, cancellation) is out of step: never reused.
                if worker.answered and not self._closed:
                    self._idle.append(worker)
                else:
                    worker.kill()

    async def _start(self):
        if self._closed:
            raise _shutting_down()
        return await _Worker.start(self.cpu_seconds)

    async def close(self):
        """Kills every worker, idle or decoding: decodes still running fail with Unavailable."""
        self._closed = True
        workers = [*self._idle, *self._busy]
        self._idle.clear()
        for worker in workers:
            worker.kill()
        for worker in workers:
            await worker.reap()


def _shutting_down():
    return Unavailable("The server is shutting down; upload the photo again in a moment.")


class _Worker:
    def __init__(self, process):
        self.process = process
        self.killed = False
        self.answered = False  # the last photo sent got its whole answer

    @classmethod
    async def start(cls, cpu_seconds):
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "domain.photo_workers", str(cpu_seconds), cwd=ROOT,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        worker = cls(process)
        # Its first frame says Pillow is loaded: the limits of a decode do not count the start.
        try:
            await worker._frame()
        except BaseException:  # it could not start (a server fault, a 500), or we were cancelled
            worker.kill()
            raise
        return worker

    async def prepare(self, data, cpu_seconds):
        self.answered = False
        try:
            async with asyncio.timeout(cpu_seconds * WALL_CLOCK_FACTOR + 1):
                self.process.stdin.write(_LENGTH.pack(len(data)) + data)
                await self.process.stdin.drain()
                header = json.loads(await self._frame())
                photo = PreparedPhoto(data=await self._frame(), **header["photo"]) if header["ok"] else None
                self.answered = True
        except TimeoutError:
            raise too_complex(cpu_seconds) from None
        except (asyncio.IncompleteReadError, ConnectionError):
            raise await self._died(cpu_seconds) from None
        if photo is None:
            raise REFUSALS[header["error"]](header["message"], code=header["code"])
        return photo

    async def _frame(self):
        (length,) = _LENGTH.unpack(await self.process.stdout.readexactly(_LENGTH.size))
        return await self.process.stdout.readexactly(length)

    async def _died(self, cpu_seconds):
        returncode = await self.process.wait()
        if self.killed:
            return _shutting_down()
        if returncode == -signal.SIGPROF:
            return too_complex(cpu_seconds)
        # Pillow's decoders are C: bytes that crash one are not a photo either.
        log.warning("photo worker exited with %s while decoding", returncode)
        return UnsupportedMediaType("The file is not a valid image.")

    def kill(self):
        if self.process.returncode is None:
            self.killed = True
            self.process.kill()

    async def reap(self):
        try:
            async with asyncio.timeout(5):
                await self.process.wait()
        except TimeoutError:
            log.warning("photo worker %d did not exit after SIGKILL", self.process.pid)


# --- the worker process ------------------------------------------------------------------------

def serve(cpu_seconds, requests, answers):
    """Prepares photos read from `requests` until it closes, each under the CPU limit."""
    while True:
        head = requests.read(_LENGTH.size)
        if len(head) < _LENGTH.size:
            return
        data = requests.read(_LENGTH.unpack(head)[0])
        _limit_cpu(cpu_seconds)
        try:
            photo = prepare_photo(data)
        except (InvalidInput, UnsupportedMediaType) as refusal:
            _answer(answers, {"ok": False, "error": type(refusal).__name__, "message": refusal.message,
                              "code": refusal.code})
        else:
            _answer(answers, {"ok": True, "photo": {"kind": photo.kind, "content_type": photo.content_type,
                                                    "extension": photo.extension}}, photo.data)
        _limit_cpu(None)


def _limit_cpu(seconds):
    """The kernel ends the worker once this decode has used `seconds` of CPU: ITIMER_PROF sends
    SIGPROF, whose default action (no handler is installed) terminates the process, even in the
    middle of C code. None lifts the limit."""
    signal.setitimer(signal.ITIMER_PROF, seconds or 0)


def _answer(answers, header, payload=None):
    frames = [json.dumps(header).encode()] + ([payload] if payload is not None else [])
    answers.write(b"".join(_LENGTH.pack(len(frame)) + frame for frame in frames))
    answers.flush()


def main():
    # The server decides when a worker ends: Ctrl-C in a terminal and systemd's SIGTERM reach
    # the whole process group, and an upload finishing during the shutdown grace needs its worker.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # The answers' channel; nothing else may write to it.
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    sys.stdout = sys.stderr
    Image.init()  # every format plugin now, not on the first photo's CPU time
    _answer(answers, {"ready": True})
    serve(float(sys.argv[1]), sys.stdin.buffer, answers)


if __name__ == "__main__":
    main()
