"""How users look to others and to themselves. Never a hash or a secret."""
from domain.times import to_iso


def public_user(user):
    return {
        "id": str(user["_id"]),
        "username": user.get("username", ""),
        "role": user.get("role", "attendee"),
        "followers_count": len(user.get("followers") or []),
        "following_count": len(user.get("following") or []),
        "created_at": to_iso(user.get("created_at")),
    }


def own_user(user):
    return {**public_user(user), "email": user.get("email", "")}
