"""The activity log behind the feed, in the old backend's `activities` shape.

The readable summary is written with the activity (the old documents have it too), so the
feed never has to look up an event that may since have been deleted.
"""
from domain.times import utcnow

RSVP, EVENT_CREATED, PHOTO_UPLOADED, FOLLOW = "RSVP", "EVENT_CREATED", "PHOTO_UPLOADED", "FOLLOW"

SUMMARIES = {
    RSVP: "{actor} is going to {event}",
    EVENT_CREATED: "{actor} created {event}",
    PHOTO_UPLOADED: "{actor} shared a photo from {event}",
    FOLLOW: "{actor} started following {target}",
}


async def record_activity(store, kind, actor, event=None, target_user=None, clock=utcnow):
    """actor and target_user are user documents; event an event document."""
    summary = SUMMARIES[kind].format(
        actor=actor.get("username", "Someone"),
        event=(event or {}).get("title", "an event"),
        target=(target_user or {}).get("username", "someone"))
    activity = {
        "actor_id": actor["_id"],
        "actor_name": actor.get("username", ""),
        "type": kind,
        "event_id": event["_id"] if event else None,
        "target_user_id": target_user["_id"] if target_user else None,
        "summary": summary,
        "timestamp": clock(),
    }
    result = await store.activities.insert_one(activity)
    activity["_id"] = result.inserted_id
    return activity
