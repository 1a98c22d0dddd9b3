"""What every endpoint shares: JSON errors, body limits, headers, request ids."""
import json

import pytest
import tornado.httpclient

pytestmark = pytest.mark.gen_test


async def test_an_unknown_path_is_a_json_404(api):
    reply = await api.call("GET", "/api/v1/nothing-here")
    assert reply.status == 404 and reply.json["code"] == "not_found"
    assert reply.headers["Content-Type"].startswith("application/json")


async def test_an_unsupported_method_is_a_json_405_with_allow(api):
    reply = await api.call("DELETE", "/api/v1/auth/login")
    assert reply.status == 405 and reply.json["code"] == "method_not_allowed"
    assert "POST" in reply.headers["Allow"]


async def test_a_body_over_the_limit_is_a_413_before_it_is_read(api):
    reply = await api.call("POST", "/api/v1/auth/register", raw="x" * (1024 * 1024 + 1))
    assert reply.status == 413 and reply.json["code"] == "too_large"


@pytest.mark.settings(max_body_bytes=1000)
async def test_a_chunked_body_over_the_limit_is_a_413(http_client, base_url):
    async def producer(write):
        for _ in range(20):
            await write(b"x" * 200)

    request = tornado.httpclient.HTTPRequest(base_url + "/api/v1/auth/login", method="POST",
                                             body_producer=producer, headers={"Transfer-Encoding": "chunked"})
    response = await http_client.fetch(request, raise_error=False)
    assert response.code == 413 and json.loads(response.body)["code"] == "too_large"


async def test_every_response_has_a_request_id_and_safe_headers(api):
    reply = await api.call("GET", "/healthz")
    assert len(reply.headers["X-Request-ID"]) >= 16
    assert reply.headers["X-Content-Type-Options"] == "nosniff"
    assert "Server" not in reply.headers


async def test_a_sane_incoming_request_id_is_kept(api):
    reply = await api.call("GET", "/healthz", headers={"X-Request-ID": "edge-1234abcd"})
    assert reply.headers["X-Request-ID"] == "edge-1234abcd"
    odd = await api.call("GET", "/healthz", headers={"X-Request-ID": "<script>"})
    assert odd.headers["X-Request-ID"] != "<script>"


async def test_readyz_reports_the_store_ready_by_its_kind(api, services):
    reply = await api.call("GET", "/readyz")
    assert reply.status == 200 and reply.data == {"status": "ready", "database": services.store.kind}


@pytest.mark.settings(allowed_origins=["https://app.example.com"])
async def test_cors_is_granted_only_to_allowed_origins(api):
    allowed = await api.call("OPTIONS", "/api/v1/auth/login", headers={"Origin": "https://app.example.com"})
    assert allowed.status == 204
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    other = await api.call("OPTIONS", "/api/v1/auth/login", headers={"Origin": "https://evil.example.com"})
    assert "Access-Control-Allow-Origin" not in other.headers
