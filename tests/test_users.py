"""Public profiles and the followers/following lists through HTTP."""
import urllib.parse

import pytest

from domain.social import USER_CURSOR_PATTERN
from domain.validation import load_schemas
from tests.event_builders import unknown_id

pytestmark = pytest.mark.gen_test

USER_ROUTES = ["/api/v1/users/{}", "/api/v1/users/{}/followers", "/api/v1/users/{}/following"]


async def all_pages(api, token, path, limit):
    """Every item of a paginated list, and the number of pages it took."""
    items, cursor, pages = [], None, 0
    while True:
        query = f"?limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        reply = await api.call("GET", path + query, token=token)
        assert reply.status == 200, reply
        items += reply.data["items"]
        pages += 1
        cursor = reply.data["next_cursor"]
        if cursor is None:
            return items, pages


async def test_a_profile_shows_public_fields_counts_and_whether_the_caller_follows(api, services):
    ana, ana_token = await api.register()
    bo, bo_token = await api.register(role="organizer")
    await api.call("POST", f"/api/v1/users/{bo['id']}/follow", token=ana_token)
    reply = await api.call("GET", f"/api/v1/users/{bo['id']}", token=ana_token)
    assert reply.status == 200
    services.validator.validate("UserProfile", reply.data)
    assert reply.data == {"id": bo["id"], "username": bo["username"], "role": "organizer", "followers_count": 1,
                          "following_count": 0, "created_at": bo["created_at"], "is_following": True}
    assert "email" not in reply.text and "password" not in reply.text
    seen_by_bo = await api.call("GET", f"/api/v1/users/{ana['id']}", token=bo_token)
    assert seen_by_bo.data["following_count"] == 1 and seen_by_bo.data["is_following"] is False


async def test_users_me_still_answers_with_the_callers_own_view(api):
    ana, token = await api.register()
    reply = await api.call("GET", "/api/v1/users/me", token=token)
    assert reply.status == 200 and reply.data["id"] == ana["id"] and reply.data["email"] == ana["email"]


@pytest.mark.parametrize("route", USER_ROUTES)
@pytest.mark.parametrize("user_id", [unknown_id(), "zzzzzzzzzzzzzzzzzzzzzzzz", "1234", "ME", "%20"])
async def test_an_unknown_or_malformed_user_id_is_a_404(api, route, user_id):
    _, token = await api.register()
    reply = await api.call("GET", route.format(user_id), token=token)
    assert reply.status == 404 and reply.json["code"] == "user_not_found"


@pytest.mark.parametrize("route", USER_ROUTES)
async def test_user_routes_need_authentication(api, route):
    bo, _ = await api.register()
    reply = await api.call("GET", route.format(bo["id"]))
    assert reply.status == 401


async def test_followers_and_following_list_public_users(api, services):
    ana, ana_token = await api.register()
    bo, bo_token = await api.register()
    cy, _ = await api.register()
    for token, user in ((ana_token, bo), (ana_token, cy), (bo_token, cy)):
        await api.call("POST", f"/api/v1/users/{user['id']}/follow", token=token)
    followers = await api.call("GET", f"/api/v1/users/{cy['id']}/followers", token=ana_token)
    services.validator.validate("UserPage", followers.data)
    assert [u["id"] for u in followers.data["items"]] == [ana["id"], bo["id"]]
    assert followers.data["next_cursor"] is None
    assert followers.data["items"][0]["following_count"] == 2
    assert "email" not in followers.text
    following = await api.call("GET", f"/api/v1/users/{ana['id']}/following", token=bo_token)
    assert [u["id"] for u in following.data["items"]] == [bo["id"], cy["id"]]
    nobody = await api.call("GET", f"/api/v1/users/{cy['id']}/following", token=bo_token)
    assert nobody.data == {"items": [], "next_cursor": None}


async def test_follower_pages_neither_repeat_nor_skip_while_the_list_changes(api):
    star, star_token = await api.register()
    fans = [await api.register() for _ in range(12)]
    for _, token in fans:
        await api.call("POST", f"/api/v1/users/{star['id']}/follow", token=token)
    path = f"/api/v1/users/{star['id']}/followers"
    first = await api.call("GET", path + "?limit=5", token=star_token)
    assert [u["id"] for u in first.data["items"]] == [fan["id"] for fan, _ in fans[:5]]
    # Meanwhile someone already shown leaves and a newcomer arrives.
    await api.call("POST", f"/api/v1/users/{star['id']}/unfollow", token=fans[0][1])
    late, late_token = await api.register()
    await api.call("POST", f"/api/v1/users/{star['id']}/follow", token=late_token)
    second = await api.call("GET", path + f"?limit=5&cursor={first.data['next_cursor']}", token=star_token)
    assert [u["id"] for u in second.data["items"]] == [fan["id"] for fan, _ in fans[5:10]]
    rest, pages = await all_pages(api, star_token, path, 5)
    assert pages == 3 and rest[-1]["id"] == late["id"]
    assert len(rest) == len({u["id"] for u in rest}) == 12


async def test_following_pages_cover_everyone_once(api):
    ana, ana_token = await api.register()
    others = [await api.register() for _ in range(7)]
    for other, _ in others:
        await api.call("POST", f"/api/v1/users/{other['id']}/follow", token=ana_token)
    items, pages = await all_pages(api, ana_token, f"/api/v1/users/{ana['id']}/following", 3)
    assert pages == 3
    assert [u["id"] for u in items] == sorted(other["id"] for other, _ in others)


async def test_a_full_last_page_says_there_is_no_next_one(api):
    ana, ana_token = await api.register()
    for _ in range(2):
        other, _ = await api.register()
        await api.call("POST", f"/api/v1/users/{other['id']}/follow", token=ana_token)
    reply = await api.call("GET", f"/api/v1/users/{ana['id']}/following?limit=2", token=ana_token)
    assert len(reply.data["items"]) == 2 and reply.data["next_cursor"] is None


@pytest.mark.parametrize("limit", ["0", "101", "-1", "abc", "1.5", "", "٣"])
@pytest.mark.parametrize("route", USER_ROUTES[1:])
async def test_a_bad_limit_is_a_400(api, route, limit):
    ana, token = await api.register()
    reply = await api.call("GET", route.format(ana["id"]) + f"?limit={urllib.parse.quote(limit)}", token=token)
    assert reply.status == 400 and reply.json["code"] == "invalid_limit"


async def test_limits_of_1_and_100_are_accepted(api):
    ana, token = await api.register()
    for limit in ("1", "100"):
        reply = await api.call("GET", f"/api/v1/users/{ana['id']}/followers?limit={limit}", token=token)
        assert reply.status == 200


@pytest.mark.parametrize("cursor", [
    "", "garbage!", "bm90IGpzb24", "0" * 23, "0" * 25, "A" * 24, "1700000000000-" + "0" * 24,
    "x" * 500, "%C3%A9"])
@pytest.mark.parametrize("route", USER_ROUTES[1:])
async def test_a_malformed_cursor_is_a_400(api, route, cursor):
    ana, token = await api.register()
    reply = await api.call("GET", route.format(ana["id"]) + f"?cursor={urllib.parse.quote(cursor, safe='%')}",
                           token=token)
    assert reply.status == 400 and reply.json["code"] == "invalid_cursor"


async def test_any_cursor_of_the_documented_shape_gets_a_page(api):
    ana, token = await api.register()
    bo, _ = await api.register()
    await api.call("POST", f"/api/v1/users/{bo['id']}/follow", token=token)
    path = f"/api/v1/users/{ana['id']}/following?cursor="
    before_everyone = await api.call("GET", path + "0" * 24, token=token)
    assert [u["id"] for u in before_everyone.data["items"]] == [bo["id"]]
    after_everyone = await api.call("GET", path + "f" * 24, token=token)
    assert after_everyone.data == {"items": [], "next_cursor": None}


@pytest.mark.parametrize("route", USER_ROUTES + ["/api/v1/users/{}/follow", "/api/v1/users/{}/unfollow"])
async def test_user_routes_answer_cors_preflight(api, route):
    bo, _ = await api.register()
    reply = await api.call("OPTIONS", route.format(bo["id"]))
    assert reply.status == 204


def test_the_documented_next_cursor_has_the_shape_the_server_accepts():
    schema = load_schemas()["UserPage"]
    assert schema["properties"]["next_cursor"]["pattern"] == USER_CURSOR_PATTERN
