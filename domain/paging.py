"""Lists come in pages: `limit` items (1..100, default 20) after an opaque cursor.

A cursor is the sort key of the last item shown, never an offset, so records added or removed
meanwhile never make a later page repeat or skip anything. Each list states its cursor's exact
shape in the OpenAPI document; every string of that shape is a real position.
"""
import dataclasses

from domain.errors import InvalidInput

DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 20, 100
# Every record id has this shape (domain/repositories.py); a list in id order pages by the last
# id shown, so its cursors have it too.
ID_PATTERN = r"^[0-9a-f]{24}$"
# What a bad cursor is told: the pattern of a list's cursors is in the OpenAPI document, and a
# regular expression is no help to the person reading the error.
CURSOR_RULE = "must be the next_cursor of a page of this list, as it was given"


@dataclasses.dataclass(frozen=True)
class Page:
    items: list
    next_cursor: str = None  # None on the last page

    def as_json(self):
        return {"items": self.items, "next_cursor": self.next_cursor}


def parse_page_size(text):
    """The `limit` query parameter's value; ValueError naming the rule when it breaks it."""
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_PAGE_SIZE:
        raise ValueError(f"must be a whole number from 1 to {MAX_PAGE_SIZE}")
    return int(text)


def page_size(text):
    """The `limit` query parameter, or the default when it is absent; a bad one is a 400."""
    if text is None:
        return DEFAULT_PAGE_SIZE
    try:
        return parse_page_size(text)
    except ValueError as e:
        raise InvalidInput(f"limit must be a whole number from 1 to {MAX_PAGE_SIZE}.", code="invalid_limit",
                           errors=[{"path": "limit", "message": str(e)}]) from None
