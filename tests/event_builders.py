"""Building events for the tests: a valid request body, and publishing it through the API; and
ids that name nothing."""
import datetime
import secrets

PARIS = [2.3522, 48.8566]


def unknown_id():
    """A well-formed id (24 lowercase hex characters) that no stored record has."""
    return secrets.token_hex(12)


def iso(moment):
    return moment.astimezone(datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def hours_from_now(hours):
    return iso(datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=hours))


def event_body(**fields):
    body = {
        "title": "Rooftop jazz",
        "description": "Live quartet at sunset.",
        "date": hours_from_now(48),
        "category": "music",
        "location_address": "1 Rue de Rivoli, Paris",
        "location": {"type": "Point", "coordinates": list(PARIS)},
    }
    body.update(fields)
    return {name: value for name, value in body.items() if value is not ...}


async def publish(api, token, **fields):
    """Creates an event through the API and returns its JSON."""
    reply = await api.call("POST", "/api/v1/events", event_body(**fields), token=token)
    assert reply.status == 201, reply
    return reply.data
