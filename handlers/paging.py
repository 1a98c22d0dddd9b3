"""The query side of paginated lists: their documented parameters and their parsing."""
from domain.paging import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, page_size


def page_query(cursor_pattern):
    """The query parameters of a cursor-paginated list, for its `docs`."""
    return (
        ("limit", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE, "default": DEFAULT_PAGE_SIZE},
         "Items per page."),
        ("cursor", {"type": "string", "pattern": cursor_pattern},
         "next_cursor of the previous page, as given (opaque); omit for the first page."),
    )


def page_request(handler):
    """(limit, cursor) of a list request; a bad limit is a 400 here, a bad cursor when it is decoded."""
    return page_size(handler.get_query_argument("limit", None)), handler.get_query_argument("cursor", None)
