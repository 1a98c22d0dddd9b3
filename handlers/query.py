"""Query strings: a parameter the operation does not declare is a 400 that names the ones it does.

Each operation's parameters are declared once, in its handler's `docs` (they are the OpenAPI
document's parameters too); BaseHandler.prepare checks every REST request against them, and the
WebSocket handshakes (chat and notifications) against HANDSHAKE_QUERY. Ignoring an unknown one
would answer a different question than the one asked, silently: `radius=0.5` would search the
default 10 km, `latitude`/`longitude` would give events by date without distances.
"""
from domain.errors import InvalidInput
from domain.validation import MAX_REPORTED_ERRORS, closest_name, shortened_name

# Names for our parameters that the old Flask backend's clients, and habits from other APIs,
# send (lower case); a suggestion is made only when its target is one the operation takes.
# Anything else gets the closest spelling, if one is close (difflib).
ALIASES = {
    "radius": "radius_km", "radius_m": "radius_km", "distance": "radius_km", "max_distance": "radius_km",
    "latitude": "lat", "longitude": "lng", "lon": "lng", "long": "lng",
    "search": "q", "query": "q", "text": "q", "keyword": "q", "keywords": "q",
    "start": "from", "start_date": "from", "date_from": "from", "from_date": "from", "after": "from",
    "end": "to", "end_date": "to", "date_to": "to", "to_date": "to", "before": "to", "until": "to",
    "organizer": "organizer_id", "organiser_id": "organizer_id", "categories": "category",
    "page_size": "limit", "per_page": "limit", "size": "limit", "count": "limit",
    "page": "cursor", "offset": "cursor", "skip": "cursor", "next": "cursor", "next_cursor": "cursor",
    "access_token": "token", "jwt": "token",
}


def refuse_unknown_query(arguments, declared):
    """InvalidInput (400 `unknown_query_parameter`) when the request's query `arguments` (names to
    values) hold a name that is not one of `declared` ((name, schema, description) as in docs),
    naming the accepted ones and, for each unknown one, the one likely meant. Values are never
    quoted: one may be a token."""
    accepted = [name for name, _, _ in declared]
    unknown = [name for name in arguments if name not in accepted]
    if not unknown:
        return
    errors = []
    for name in unknown[:MAX_REPORTED_ERRORS]:
        meant = closest_name(name, accepted, ALIASES)
        errors.append({"path": shortened_name(name),
                       "message": f"unknown query parameter; did you mean {meant}?" if meant
                       else "unknown query parameter",
                       **({"suggestion": meant} if meant else {})})
    named = ", ".join((error["path"] or "(empty name)") + (
        f" (did you mean {error['suggestion']}?)" if "suggestion" in error else "") for error in errors)
    takes = f"This operation takes {', '.join(accepted)}." if accepted else "This operation takes none."
    raise InvalidInput(f"Unknown query parameter{'s' if len(errors) > 1 else ''} {named}. {takes}",
                       errors=errors, code="unknown_query_parameter", accepted=accepted)
