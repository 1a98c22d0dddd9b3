"""Record ids: 24 lowercase hex characters shaped like MongoDB's ObjectIds (4 bytes of Unix
seconds, 5 random bytes for this process, a 3-byte counter), so that they sort like creation
time and stay unique across the processes sharing one database file."""
import itertools
import os
import random
import time

_process_tag = ""
_counter = None


def _start_process():
    # A forked child must not repeat its parent's ids: it draws its own tag and counter start.
    global _process_tag, _counter
    _process_tag = os.urandom(5).hex()
    _counter = itertools.count(random.randrange(1 << 24))


_start_process()
os.register_at_fork(after_in_child=_start_process)


def new_id():
    # next() on an itertools.count is atomic under the GIL: stores on several threads share it.
    return f"{int(time.time()) & 0xFFFFFFFF:08x}{_process_tag}{next(_counter) & 0xFFFFFF:06x}"


def id_after(earlier_id):
    """The smallest id greater than `earlier_id`."""
    return f"{int(earlier_id, 16) + 1:024x}"
