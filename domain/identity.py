"""Who is who: the one key under which usernames and emails are unique, and what a username or an
email must be to be registered.

Two names a reader cannot tell apart must not be two accounts, and mail for an address must go
to that address only. Unicode gives many spellings of what looks like one text: compatibility
forms (fullwidth "ａ", the Kelvin sign "K", ligatures "ﬁ"), case ("ß" and "SS"), invisible
characters, and letters of other scripts that look Latin (Cyrillic "а"). The key folds the
first two; the rules refuse the others.
"""
import unicodedata

from domain.errors import InvalidInput

# Scripts that are written together (Unicode TS #39's "highly restrictive" sets); any other mix in
# one part of a name, e.g. Latin with Cyrillic or Greek, is how look-alikes are made.
_SCRIPTS_WRITTEN_TOGETHER = (
    frozenset({"LATIN", "CJK", "HIRAGANA", "KATAKANA"}),
    frozenset({"LATIN", "CJK", "BOPOMOFO"}),
    frozenset({"LATIN", "CJK", "HANGUL"}),
)
# Control, format (zero-width, bidirectional overrides), surrogate, private-use, unassigned and
# separator characters: invisible or not text at all, never part of a name or an address.
_REFUSED_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"}


def identity_key(text):
    """The key under which usernames and emails are unique and emails are looked up: NFKC, then
    case folding, then NFKC again (folding can leave a text that is not normalized). Both stores
    compute their keys with this function and nothing else."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())


def registered_email(email):
    """The email as it is stored and mailed to, or InvalidInput (path /email): its NFKC form,
    so the address mail goes to is the one its key was computed from. The local part and each
    label of the domain are checked for mixed scripts on their own (a Cyrillic domain name with
    a Latin local part is fine; "pаypal" with a Cyrillic "а" is not)."""
    normalized = unicodedata.normalize("NFKC", email)
    if normalized.count("@") != 1:  # a fullwidth "＠" is an "@" once normalized
        raise _invalid("/email", "must have exactly one @")
    local, _, domain = normalized.partition("@")
    return _registered(email, normalized, [local, *domain.split(".")], "/email")


def registered_username(username):
    """The username as it is stored (its NFKC form), or InvalidInput (path /username)."""
    normalized = unicodedata.normalize("NFKC", username)
    return _registered(username, normalized, [normalized], "/username")


def _registered(text, normalized, parts, path):
    # Both forms: normalizing can turn a visible character into a space ("¨" is " " and a mark).
    if any(unicodedata.category(c) in _REFUSED_CATEGORIES for c in text + normalized):
        raise _invalid(path, "must not contain control, invisible or space characters")
    if not all(_single_script(part) for part in parts):
        raise _invalid(path, "must not mix letters of different scripts (look-alikes)")
    return normalized


def same_address(requested, registered):
    """Whether a typed email is the registered address itself, not merely one with the same key:
    ASCII letters compare without case (as mail systems treat them), anything else exactly, as
    typed or in its NFKC form (which is how addresses are registered, `registered_email`). So
    "kate@example.com" is not "\u212aate@example.com" (Kelvin sign, stored before addresses
    were normalized), though both have one key."""
    registered = registered.encode().lower()
    return requested.encode().lower() == registered or (
        unicodedata.normalize("NFKC", requested).encode().lower() == registered)


def _script(letter):
    # The first word of a letter's Unicode name is its script for every script people write
    # names in ("LATIN SMALL LETTER A", "CYRILLIC SMALL LETTER A", "CJK UNIFIED IDEOGRAPH-4E00");
    # Python's unicodedata has no Script property.
    return unicodedata.name(letter, "UNKNOWN").split(" ", 1)[0]


def _single_script(text):
    scripts = {_script(c) for c in text if unicodedata.category(c).startswith("L")}
    return len(scripts) <= 1 or any(scripts <= allowed for allowed in _SCRIPTS_WRITTEN_TOGETHER)


def _invalid(path, message):
    return InvalidInput("The request does not match the expected shape.",
                        errors=[{"path": path, "message": message}], code="validation_failed")
