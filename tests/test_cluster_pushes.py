"""Notification pushes on every process (issue 14): a notification stored by one server process
reaches the user's /ws/notifications socket on another, once; real processes and a real Redis."""
import json

import pytest

from tests.processes import ServerProcesses, bearer, open_socket, published_event, registered

pytestmark = pytest.mark.gen_test(timeout=60)


async def test_an_edit_on_one_process_is_pushed_to_the_goers_sockets_on_every_process_once(redis_server):
    with ServerProcesses(2, redis_server.url) as (first, second):
        organizer, _ = registered(first, "organizer")
        goer, _ = registered(first)
        event_id = published_event(first, organizer, goer)
        sockets = [await open_socket(server, "/ws/notifications", goer) for server in (first, second)]
        status, _ = first.request("PATCH", f"/api/v1/events/{event_id}", {"title": "Jazz Night II"},
                                  headers=bearer(organizer))
        assert status == 200
        for socket in sockets:
            frame = json.loads(await socket.read_message())
            assert (frame["notification"]["type"], frame["notification"]["fields"]) == ("event_changed", ["title"])
        # Once on each: the next frame is the next notification, not a copy of this one.
        status, _ = second.request("PATCH", f"/api/v1/events/{event_id}", {"category": "jazz"},
                                   headers=bearer(organizer))
        assert status == 200
        for socket in sockets:
            frame = json.loads(await socket.read_message())
            assert frame["notification"]["fields"] == ["category"]
