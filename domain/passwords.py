"""Password hashing with bcrypt, off the event loop.

Hashes written by the old backend's Flask-Bcrypt ($2b$, stored as text) verify unchanged.
"""
import asyncio
import concurrent.futures
import os
import sys
import threading

import bcrypt

MAX_PASSWORD_BYTES = 72  # bcrypt ignores anything past 72 bytes; we refuse rather than truncate
# Threads for yielding hashes: at most half the cores, whatever their priority.
YIELDING_THREADS = max(1, (os.cpu_count() or 2) // 2)
# Threads for logins (and other hashes a user waits for): every core but the event loop's. With
# the default executor (cores + 4 threads), a burst of 20 logins on 2 cores took the loop's core
# too: the chat's median latency went from 11 to 64 ms (bench/chat_app_bench.py --part login);
# with one thread, logins queue instead.
CHECKING_THREADS = max(1, (os.cpu_count() or 2) - 1)
# Below the event loop's priority, for when other processes crowd the cores as well (at 10 a
# hash gets about a tenth of a core the loop wants too); above the yielding threads', so logins
# still go before registrations.
CHECKING_NICE = 10


class PasswordHasher:
    def __init__(self, rounds, yielding_threads=YIELDING_THREADS):
        self.rounds = rounds
        # Checked against when the email is unknown, so both paths cost one bcrypt check.
        self._decoy = bcrypt.hashpw(b"decoy-password", bcrypt.gensalt(rounds))
        self.yielding_threads = yielding_threads
        self._yielding = None  # made at the first yielding hash
        self._checking = concurrent.futures.ThreadPoolExecutor(
            CHECKING_THREADS, thread_name_prefix="password-check", initializer=_lower_priority, initargs=(CHECKING_NICE,))

    async def hash(self, password, yielding=False):
        """The bcrypt hash of `password`. `yielding`: on threads of the lowest CPU priority, which
        get a core only when logins (and everything else) leave it idle: for hashes anyone may
        ask for in bulk (registrations), so that a flood of them cannot slow logins down."""
        executor = self._yielding_executor() if yielding else self._checking
        hashed = await _in_executor(bcrypt.hashpw, password.encode(), bcrypt.gensalt(self.rounds), executor=executor)
        return hashed.decode()

    async def verify(self, password, stored_hash):
        candidate = password.encode()
        if not stored_hash or len(candidate) > MAX_PASSWORD_BYTES:
            # No account, or a password no account can have: spend the same time, then refuse.
            await _in_executor(bcrypt.checkpw, candidate[:MAX_PASSWORD_BYTES], self._decoy, executor=self._checking)
            return False
        try:
            return await _in_executor(bcrypt.checkpw, candidate, stored_hash.encode(), executor=self._checking)
        except ValueError:  # not a bcrypt hash at all
            return False

    def _yielding_executor(self):
        if self._yielding is None:
            self._yielding = concurrent.futures.ThreadPoolExecutor(
                self.yielding_threads, thread_name_prefix="yielding-hash", initializer=_lower_priority, initargs=(19,))
        return self._yielding


def _lower_priority(nice):
    # On Linux a thread is a task with its own nice value; elsewhere setpriority would take the
    # whole process (or, given a thread id, another process), so there the threads stay as they are.
    if sys.platform.startswith("linux"):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)


def _in_executor(fn, *args, executor=None):
    return asyncio.get_running_loop().run_in_executor(executor, fn, *args)
