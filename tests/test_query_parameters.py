"""Query parameters an operation does not take are a 400 that names the ones it takes and the one
likely meant, on every REST operation (their list is the one in the OpenAPI document) and the chat
handshake; never silently ignored, as `radius=0.5` once searched the default 10 km."""
import urllib.parse

import pytest

from tests.event_builders import PARIS, publish

pytestmark = pytest.mark.gen_test


async def refused(api, path, bearer=None, method="GET", **params):
    reply = await api.call(method, f"{path}?{urllib.parse.urlencode(params)}", token=bearer)
    assert (reply.status, reply.json["code"]) == (400, "unknown_query_parameter"), reply
    return reply.json


def documented_query(services, path, method="get"):
    return [parameter["name"] for parameter in services.openapi["paths"][path][method]["parameters"]
            if parameter["in"] == "query"]


async def test_radius_in_a_nearby_search_is_refused_suggesting_radius_km(api, services):
    _, token = await api.register()
    error = await refused(api, "/api/v1/events", token, lat=PARIS[1], lng=PARIS[0], radius=0.5)
    assert error["accepted"] == documented_query(services, "/api/v1/events")
    assert {"lat", "lng", "radius_km", "limit", "cursor"} <= set(error["accepted"])
    assert error["errors"] == [{"path": "radius", "message": "unknown query parameter; did you mean radius_km?",
                                "suggestion": "radius_km"}]
    assert "radius_km" in error["message"] and "category" in error["message"]


async def test_latitude_and_longitude_are_refused_suggesting_lat_and_lng(api):
    _, token = await api.register()
    error = await refused(api, "/api/v1/events", token, latitude=PARIS[1], longitude=PARIS[0])
    assert [(e["path"], e["suggestion"]) for e in error["errors"]] == [("latitude", "lat"), ("longitude", "lng")]
    assert "latitude (did you mean lat?), longitude (did you mean lng?)" in error["message"]
    error = await refused(api, "/api/v1/events", token, lat=PARIS[1], lon=PARIS[0])
    assert error["errors"][0]["suggestion"] == "lng"


@pytest.mark.parametrize("name, meant", [("categroy", "category"), ("Limit", "limit"), ("organizerid", "organizer_id"),
                                         ("search", "q"), ("start_date", "from"), ("page_size", "limit")])
async def test_a_misspelt_or_foreign_discovery_parameter_gets_the_likely_one(api, name, meant):
    _, token = await api.register()
    error = await refused(api, "/api/v1/events", token, **{name: "x"})
    assert error["errors"][0]["suggestion"] == meant


async def test_a_parameter_like_no_other_is_refused_without_a_suggestion(api):
    _, token = await api.register()
    error = await refused(api, "/api/v1/events", token, zzz="1")
    assert error["errors"] == [{"path": "zzz", "message": "unknown query parameter"}]


async def test_a_paged_list_takes_limit_and_cursor_only(api, services):
    user, token = await api.register()
    path = f"/api/v1/users/{user['id']}/followers"
    error = await refused(api, path, token, page=2)
    assert error["accepted"] == documented_query(services, "/api/v1/users/{user_id}/followers") == ["limit", "cursor"]
    assert error["errors"][0]["suggestion"] == "cursor"
    assert (await refused(api, path, token, per_page=5))["errors"][0]["suggestion"] == "limit"
    assert (await api.call("GET", f"{path}?limit=5", token=token)).status == 200


async def test_a_suggestion_is_only_ever_a_parameter_the_operation_takes(api):
    # `radius` means radius_km, which the organizer's own list does not take.
    _, token = await api.register(role="organizer")
    error = await refused(api, "/api/v1/organizer/events", token, radius=3)
    assert error["accepted"] == ["limit", "cursor"] and "suggestion" not in error["errors"][0]


async def test_an_operation_without_parameters_takes_none(api):
    user, token = await api.register()
    error = await refused(api, "/api/v1/users/me", token, fields="email")
    assert error["accepted"] == [] and "takes none" in error["message"]
    error = await refused(api, f"/api/v1/users/{user['id']}/follow", token, method="POST", debug=1)
    assert error["accepted"] == []


async def test_every_method_is_checked_against_its_own_parameters(api):
    # GET /api/v1/events takes filters; POST on the same path takes none.
    _, token = await api.register(role="organizer")
    error = await refused(api, "/api/v1/events", token, method="POST", category="music")
    assert error["accepted"] == []


async def test_the_values_of_unknown_parameters_are_never_quoted(api):
    _, token = await api.register()
    error = await refused(api, "/api/v1/auth/login", method="POST", password="hunter2-secret")
    assert "hunter2-secret" not in str(error)
    # A token belongs in the Authorization header on REST: in a query string it is refused too.
    error = await refused(api, "/api/v1/users/me", token, token=token)
    assert token not in str(error)


async def test_a_parameter_without_a_name_or_a_value_is_unknown_too(api):
    _, token = await api.register()
    for query in ("=1", "verbose", "lat=1&=2"):
        reply = await api.call("GET", f"/api/v1/events?{query}", token=token)
        assert (reply.status, reply.json["code"]) == (400, "unknown_query_parameter"), (query, reply)
    assert "(empty name)" in reply.json["message"]


async def test_a_very_long_parameter_name_is_not_echoed_whole(api):
    _, token = await api.register()
    reply = await api.call("GET", "/api/v1/events?" + "x" * 5000 + "=1", token=token)
    assert reply.status == 400 and len(reply.text) < 1000


async def test_a_public_operation_checks_its_query_too(api):
    assert (await refused(api, "/healthz", verbose=1))["accepted"] == []
    assert (await refused(api, "/api/v1/openapi.json", format="yaml"))["accepted"] == []


async def test_a_request_without_a_token_is_still_a_401_first(api):
    reply = await api.call("GET", "/api/v1/events?radius=1")
    assert reply.status == 401


async def test_the_parameters_an_operation_takes_still_work(api):
    _, token = await api.register(role="organizer")
    event = await publish(api, token)
    found = await api.call("GET", f"/api/v1/events?lat={PARIS[1]}&lng={PARIS[0]}&radius_km=1&limit=5", token=token)
    assert found.status == 200 and [item["id"] for item in found.data["items"]] == [event["id"]]
