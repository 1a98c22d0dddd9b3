"""Password hashing with bcrypt, off the event loop.

Hashes written by the old backend's Flask-Bcrypt ($2b$, stored as text) verify unchanged.
"""
import asyncio

import bcrypt

MAX_PASSWORD_BYTES = 72  # bcrypt ignores anything past 72 bytes; we refuse rather than truncate


class PasswordHasher:
    def __init__(self, rounds):
        self.rounds = rounds
        # Checked against when the email is unknown, so both paths cost one bcrypt check.
        self._decoy = bcrypt.hashpw(b"decoy-password", bcrypt.gensalt(rounds))

    async def hash(self, password):
        hashed = await _in_executor(bcrypt.hashpw, password.encode(), bcrypt.gensalt(self.rounds))
        return hashed.decode()

    async def verify(self, password, stored_hash):
        candidate = password.encode()
        if not stored_hash or len(candidate) > MAX_PASSWORD_BYTES:
            # No account, or a password no account can have: spend the same time, then refuse.
            await _in_executor(bcrypt.checkpw, candidate[:MAX_PASSWORD_BYTES], self._decoy)
            return False
        try:
            return await _in_executor(bcrypt.checkpw, candidate, stored_hash.encode())
        except ValueError:  # not a bcrypt hash at all
            return False


def _in_executor(fn, *args):
    return asyncio.get_running_loop().run_in_executor(None, fn, *args)
