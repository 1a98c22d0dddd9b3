"""Following and unfollowing through HTTP: both sides and the counts in step, idempotence,
activities, races."""
import asyncio
import random

import pytest

from domain.activities import FOLLOW, SUMMARIES
from tests.event_builders import unknown_id

pytestmark = pytest.mark.gen_test
EVERYONE = 1000  # more users than any test lists


async def follow(api, token, user, verb="follow"):
    return await api.call("POST", f"/api/v1/users/{user['id']}/{verb}", token=token)


async def following_ids(services, user):
    return [other["id"] for other in await services.store.follows.following(user["id"], None, EVERYONE)]


async def follower_ids(services, user):
    return [other["id"] for other in await services.store.follows.followers(user["id"], None, EVERYONE)]


async def activities_seen_by(services, watcher, kinds=tuple(SUMMARIES)):
    return await services.store.activities.feed(watcher["id"], list(kinds), None, EVERYONE)


async def follow_activities(services, watcher, actor, target):
    return [activity for activity in await activities_seen_by(services, watcher, [FOLLOW])
            if activity["actor_id"] == actor["id"] and activity["target_user_id"] == target["id"]]


async def assert_pair_consistent(services, a, b):
    """Each way, the follow, the follower's following list, the followee's followers list and both
    users' counts agree; nobody is listed twice. Returns whether a follows b."""
    lists = {user["id"]: (await following_ids(services, user), await follower_ids(services, user)) for user in (a, b)}
    for user in (a, b):
        following, followers = lists[user["id"]]
        assert len(following) == len(set(following)) and len(followers) == len(set(followers)), lists
        stored = await services.store.users.get(user["id"])
        assert (stored["following_count"], stored["followers_count"]) == (len(following), len(followers)), (
            stored, lists)
    for x, y in ((a, b), (b, a)):
        follows = await services.store.follows.is_following(x["id"], y["id"])
        assert (y["id"] in lists[x["id"]][0]) == (x["id"] in lists[y["id"]][1]) == follows, (x["id"], y["id"], lists)
    return await services.store.follows.is_following(a["id"], b["id"])


async def test_follow_updates_both_users_and_their_counts(api, services):
    ana, ana_token = await api.register()
    bo, _ = await api.register()
    reply = await follow(api, ana_token, bo)
    assert reply.status == 200
    assert reply.data["id"] == bo["id"] and reply.data["is_following"] is True
    assert reply.data["followers_count"] == 1 and reply.data["following_count"] == 0
    assert await following_ids(services, ana) == [bo["id"]]
    assert await follower_ids(services, bo) == [ana["id"]]
    me = await api.call("GET", "/api/v1/users/me", token=ana_token)
    assert me.data["following_count"] == 1 and me.data["followers_count"] == 0


async def test_follow_is_idempotent_and_records_one_follow_activity(api, services):
    ana, ana_token = await api.register()
    bo, _ = await api.register()
    watcher, _ = await api.register_follower([ana])
    for _ in range(3):
        reply = await follow(api, ana_token, bo)
        assert reply.status == 200 and reply.data["followers_count"] == 1
    assert await following_ids(services, ana) == [bo["id"]]
    activities = await follow_activities(services, watcher, ana, bo)
    assert len(activities) == 1
    assert activities[0]["summary"] == f"{ana['username']} started following {bo['username']}"
    assert activities[0]["actor_name"] == ana["username"] and activities[0]["event_id"] is None


async def test_unfollow_removes_both_sides_and_is_idempotent(api, services):
    ana, ana_token = await api.register()
    bo, _ = await api.register()
    await follow(api, ana_token, bo)
    for _ in range(2):
        reply = await follow(api, ana_token, bo, "unfollow")
        assert reply.status == 200
        assert reply.data["is_following"] is False and reply.data["followers_count"] == 0
    assert await following_ids(services, ana) == []
    assert await follower_ids(services, bo) == []


async def test_unfollowing_someone_never_followed_is_a_no_op(api, services):
    ana, ana_token = await api.register()
    bo, _ = await api.register()
    watcher, _ = await api.register_follower([ana])
    reply = await follow(api, ana_token, bo, "unfollow")
    assert reply.status == 200 and reply.data["is_following"] is False
    assert await activities_seen_by(services, watcher) == []
    assert await follower_ids(services, bo) == []


async def test_unfollowing_withdraws_the_activity_and_following_again_records_it_anew(api, services):
    ana, ana_token = await api.register()
    bo, _ = await api.register()
    watcher, _ = await api.register_follower([ana])
    await follow(api, ana_token, bo)
    [first] = await follow_activities(services, watcher, ana, bo)
    await follow(api, ana_token, bo, "unfollow")
    assert await follow_activities(services, watcher, ana, bo) == []
    await follow(api, ana_token, bo)
    [again] = await follow_activities(services, watcher, ana, bo)
    assert again["id"] != first["id"]


async def test_two_users_can_follow_each_other(api, services):
    ana, ana_token = await api.register()
    bo, bo_token = await api.register()
    await follow(api, ana_token, bo)
    reply = await follow(api, bo_token, ana)
    assert reply.data["followers_count"] == 1 and reply.data["following_count"] == 1
    assert await assert_pair_consistent(services, ana, bo)


@pytest.mark.parametrize("verb", ["follow", "unfollow"])
async def test_following_yourself_is_a_400(api, services, verb):
    ana, ana_token = await api.register()
    reply = await follow(api, ana_token, ana, verb)
    assert reply.status == 400 and reply.json["code"] == "cannot_follow_self"
    assert await following_ids(services, ana) == [] and await follower_ids(services, ana) == []


@pytest.mark.parametrize("verb", ["follow", "unfollow"])
@pytest.mark.parametrize("user_id", [unknown_id(), "not-an-id", "0" * 23, "me"])
async def test_following_an_unknown_or_malformed_id_is_a_404(api, verb, user_id):
    _, token = await api.register()
    reply = await follow(api, token, {"id": user_id}, verb)
    assert reply.status == 404 and reply.json["code"] in ("user_not_found", "not_found")


async def test_follow_needs_authentication(api):
    bo, _ = await api.register()
    reply = await api.call("POST", f"/api/v1/users/{bo['id']}/follow")
    assert reply.status == 401


# --- concurrency ----------------------------------------------------------------------------
# Concurrent requests through HTTP: each interleaves with the others wherever it waits for the
# store. That each repository call is atomic, also across processes, is the contract suite's
# to prove (tests/test_repositories.py).

async def test_concurrent_identical_follows_follow_once_with_one_activity(api, services):
    ana, ana_token = await api.register()
    bo, _ = await api.register()
    watcher, _ = await api.register_follower([ana])
    replies = await asyncio.gather(*(follow(api, ana_token, bo) for _ in range(20)))
    assert {reply.status for reply in replies} == {200}
    assert await following_ids(services, ana) == [bo["id"]]
    assert await follower_ids(services, bo) == [ana["id"]]
    assert await assert_pair_consistent(services, ana, bo)
    assert len(await follow_activities(services, watcher, ana, bo)) == 1


# Each turn races a follow against an unfollow: whichever wins, both sides and the counts agree.
async def test_racing_follow_and_unfollow_of_one_pair_end_consistent_every_time(api, services):
    ana, ana_token = await api.register()
    bo, _ = await api.register()
    races = [["follow", "unfollow"], ["unfollow", "follow"], ["follow", "unfollow", "unfollow", "follow"]]
    for turn in range(60):
        verbs = races[turn % len(races)]
        replies = await asyncio.gather(*(follow(api, ana_token, bo, verb) for verb in verbs))
        assert {reply.status for reply in replies} == {200}
        await assert_pair_consistent(services, ana, bo)


@pytest.mark.parametrize("seed", range(4))
async def test_a_storm_of_follows_and_unfollows_of_one_pair_ends_consistent(api, services, seed):
    ana, ana_token = await api.register()
    bo, bo_token = await api.register()
    chooser = random.Random(seed)
    calls = [follow(api, *chooser.choice([(ana_token, bo), (bo_token, ana)]),
                    chooser.choice(["follow", "unfollow"])) for _ in range(60)]
    replies = await asyncio.gather(*calls)
    assert {reply.status for reply in replies} == {200}
    ana_follows_bo = await assert_pair_consistent(services, ana, bo)
    profile = await api.call("GET", f"/api/v1/users/{bo['id']}", token=ana_token)
    assert profile.data["is_following"] is ana_follows_bo
    assert profile.data["followers_count"] == int(ana_follows_bo)
    # Once the storm is over, a plain unfollow still finds and fixes both sides.
    await follow(api, ana_token, bo, "unfollow")
    assert await assert_pair_consistent(services, ana, bo) is False
