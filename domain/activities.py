"""The activity log behind the feed, in the old backend's `activities` shape.

The readable summary is written with the activity (the old documents have it too), so the
feed never has to look up an event that may since have been deleted.

A follow and an RSVP can be undone (unfollow, cancel) and done again at will. Their activity
states a fact that holds now ("is going to"), so it is recorded once per subject (actor and
followed user, or actor and event) and withdrawn when the fact is undone: a follow/unfollow
or RSVP/cancel loop leaves at most one item in the feed, and a cancelled RSVP none.

A user promoted from an event's waitlist into a seat is going to it like any RSVP, and their
activity says so once, as RSVP_PROMOTED rather than RSVP: the feed shows one item per person
going, and whatever tells users about their promotion (notifications) finds it by its type. It
is withdrawn with the RSVP when they cancel.
"""
from domain.times import utcnow

RSVP, EVENT_CREATED, PHOTO_UPLOADED, FOLLOW = "RSVP", "EVENT_CREATED", "PHOTO_UPLOADED", "FOLLOW"
RSVP_PROMOTED = "RSVP_PROMOTED"

# Activities of facts that can be undone: recorded once per subject, withdrawn when undone.
UNDOABLE = frozenset((RSVP, RSVP_PROMOTED, FOLLOW))
# The kinds saying that someone is going to an event.
GOING = (RSVP, RSVP_PROMOTED)

SUMMARIES = {
    RSVP: "{actor} is going to {event}",
    RSVP_PROMOTED: "{actor} got a seat at {event} from the waitlist",
    EVENT_CREATED: "{actor} created {event}",
    PHOTO_UPLOADED: "{actor} shared a photo from {event}",
    FOLLOW: "{actor} started following {target}",
}


async def record_activity(store, kind, actor, event=None, target_user=None, clock=utcnow):
    """actor and target_user are user records (id and username are read); event an event record."""
    summary = SUMMARIES[kind].format(
        actor=actor["username"] or "Someone",
        event=(event or {}).get("title") or "an event",
        target=(target_user or {}).get("username") or "someone")
    activity = {
        "type": kind,
        "actor_id": actor["id"],
        "actor_name": actor["username"] or "",
        "event_id": event["id"] if event else None,
        "target_user_id": target_user["id"] if target_user else None,
        "summary": summary,
        "timestamp": clock(),
    }
    if kind in UNDOABLE:
        await store.activities.add_once(activity)
    else:
        await store.activities.add(activity)


async def withdraw_activity(store, kind, actor_id, event_id=None, target_user_id=None):
    """Removes the activity of an undone follow or RSVP; idempotent."""
    await store.activities.withdraw(kind, actor_id, event_id=event_id, target_user_id=target_user_id)
