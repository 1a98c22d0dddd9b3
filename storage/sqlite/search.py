"""Event text search: a trigram index that narrows the events `contains_text` then checks.

`contains_text` (see `database`) alone decides what matches: Python's `re.IGNORECASE` on the
literal text. The index only has to find every event that can match, and few others. It holds,
for each event (its rowid is the event's seq), the *search key* of its title and description:
each character replaced by one representative of every character that `re.IGNORECASE` may
equate with it (`I`, `i`, `ı`, `İ` all become one character; so do `Ꭰ` and `ꭰ`, `S`, `s` and
`ſ`...). A text and a field that match have keys that match exactly, character for character,
so the key of the text is a substring of the key of the field, which the trigram index finds
as a phrase. The index's tokenizer is case sensitive: SQLite's own case folding is older than
Python's Unicode tables (it misses `ı`, `İ`, Cherokee, Georgian Mtavruli...), and leaving it out
makes the index depend on Python's tables alone. The keys over-approximate (they also join
characters that only share the first character of a multi-character mapping, as `ß` and `s`):
that adds candidates, never loses one.

The trigram tokenizer stops reading a text at its first NUL, so the keys replace NUL too.

The table `event_text_key` records which keys the index was built with (a fingerprint of the
mapping, which changes with Python's Unicode tables); `refresh_index` rebuilds the index when
the fingerprint differs, in the migration's transaction at every open.
"""
import array
import hashlib
import sys

from storage.sqlite.columns import to_json

# A phrase of fewer characters has no trigram: the index cannot narrow it.
INDEXED_LENGTH = 3

# At most this many candidates are looked up by rowid; a text held by more events is common, and
# the scan in date order (which stops at a full page) checks fewer rows than the candidates are.
MAX_CANDIDATES = 1000

# Replaces NUL in keys, where the tokenizer would stop (it only joins NUL's class to this one's).
NUL_STANDIN = "\ufffd"


def _key_table():
    """{code point: code point of its class's representative}, for every character that is not
    its own representative. Classes join each character with the first character of its
    lower(), upper() and casefold(): `re.IGNORECASE` equates two characters when their simple
    lowercases are equal (the first character of lower()) or are one of its extra pairs (which
    share their uppercase, so the first character of upper()); this covers both."""
    everything = array.array("I", range(sys.maxunicode + 1)).tobytes().decode("utf-32-le", "surrogatepass")
    parent = {}

    def root(c):
        while parent.get(c, c) != c:
            c = parent[c]
        return c

    block = 1024
    for start in range(0, len(everything), block):
        chars = everything[start:start + block]
        if chars.lower() == chars and chars.upper() == chars and chars.casefold() == chars:
            continue
        for c in chars:
            for other in (c.lower()[0], c.upper()[0], c.casefold()[0]):
                a, b = root(c), root(other)
                if a != b:
                    parent[max(a, b)] = min(a, b)
    table = {ord(c): ord(root(c)) for c in parent if root(c) != c}
    table[0] = ord(NUL_STANDIN)
    return table


KEY_TABLE = _key_table()
KEY_FINGERPRINT = hashlib.sha256(repr(sorted(KEY_TABLE.items())).encode()).hexdigest()[:32]


def search_key(text):
    """SQL `search_key(text)`: what the index holds for a title or description."""
    return None if text is None else text.translate(KEY_TABLE)


def match_phrase(text):
    """The FTS5 query finding the fields whose keys hold the key of `text`: one quoted phrase."""
    return '"' + search_key(text).replace('"', '""') + '"'


def candidates(connection, text):
    """A JSON list of the seqs of the events that may hold `text` (a superset of those that do),
    or None when the index cannot narrow the search: a text of fewer than INDEXED_LENGTH
    characters, or one that more than MAX_CANDIDATES events may hold."""
    if len(text) < INDEXED_LENGTH:
        return None
    seqs = [seq for seq, in connection.execute("SELECT rowid FROM event_text WHERE event_text MATCH ? LIMIT ?",
                                               (match_phrase(text), MAX_CANDIDATES + 1))]
    return None if len(seqs) > MAX_CANDIDATES else to_json(seqs)


def refresh_index(connection):
    """Indexes every event again unless the index was built with this process's keys (a file
    just migrated to the index has no fingerprint yet). Runs inside the migration's transaction."""
    row = connection.execute("SELECT fingerprint FROM event_text_key").fetchone()
    if row is not None and row[0] == KEY_FINGERPRINT:
        return
    connection.execute("DELETE FROM event_text")
    connection.execute("""INSERT INTO event_text (rowid, title, description)
                          SELECT seq, search_key(title), search_key(description) FROM events""")
    connection.execute("DELETE FROM event_text_key")
    connection.execute("INSERT INTO event_text_key (fingerprint) VALUES (?)", (KEY_FINGERPRINT,))
