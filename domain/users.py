"""How users look to others and to themselves. Never a hash or a secret."""
from domain.times import to_iso


def public_user(user):
    """The contract's User from a user record (`domain.repositories.Users`)."""
    return {
        "id": user["id"],
        # Users written by the old backend may lack a name or a role.
        "username": user["username"] or "",
        "role": user["role"] or "attendee",
        "followers_count": user["followers_count"],
        "following_count": user["following_count"],
        "created_at": to_iso(user["created_at"]),
    }


def own_user(user):
    return {**public_user(user), "email": user["email"] or ""}
