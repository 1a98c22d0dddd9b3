"""GET /metrics: Prometheus text, per-route figures, and the optional token and address list."""
import pytest
import tornado.httpclient
import tornado.httpserver
import tornado.testing
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from handlers.app import build_services, make_app
from handlers.metrics import ServerMetrics
from storage.sqlite import SqliteStore

pytestmark = pytest.mark.gen_test

REGISTER = "/api/v1/auth/register"
LOGIN = "/api/v1/auth/login"


def samples(text):
    """{(sample name, frozenset of labels): value} from the Prometheus text format."""
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(text, name, **labels):
    return samples(text).get((name, frozenset(labels.items())), 0.0)


async def test_metrics_are_prometheus_text_not_the_json_envelope(api):
    reply = await api.call("GET", "/metrics")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert reply.json is None
    assert "# TYPE http_requests_total counter" in reply.text
    assert value(reply.text, "http_requests_in_flight") == 1.0  # the /metrics request itself


async def test_a_scraper_asking_for_openmetrics_gets_openmetrics(api):
    reply = await api.call("GET", "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert reply.headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
    assert reply.text.endswith("# EOF\n")


async def test_requests_are_counted_by_route_template_method_and_status(api):
    await api.register()
    await api.call("POST", REGISTER, {"username": "x"})
    await api.call("GET", "/api/v1/no/such/thing/42")
    text = (await api.call("GET", "/metrics")).text
    assert value(text, "http_requests_total", route=REGISTER, method="POST", status="201") == 1
    assert value(text, "http_requests_total", route=REGISTER, method="POST", status="400") == 1
    assert value(text, "http_requests_total", route="NotFoundHandler", method="GET", status="404") == 1
    assert value(text, "http_request_duration_seconds_count", route=REGISTER, method="POST") == 2
    assert value(text, "http_request_duration_seconds_bucket", route=REGISTER, method="POST", le="+Inf") == 2


async def test_an_unknown_method_is_counted_as_other_so_labels_stay_bounded(api):
    assert (await api.call("BREW", "/healthz")).status == 405
    text = (await api.call("GET", "/metrics")).text
    assert value(text, "http_requests_total", route="/healthz", method="other", status="405") == 1
    assert "BREW" not in text


@pytest.mark.settings(login_attempts_per_email=1)
async def test_rate_limit_refusals_are_counted(api):
    credentials = {"email": "nobody@example.com", "password": "wrong password"}
    assert (await api.call("POST", LOGIN, credentials)).status == 401
    assert (await api.call("POST", LOGIN, credentials)).status == 429
    text = (await api.call("GET", "/metrics")).text
    assert value(text, "rate_limit_refusals_total", route=LOGIN) == 1


async def test_database_errors_are_counted(settings, http_client):
    store = SqliteStore(":memory:")
    await store.open()
    await store.close()  # every call now raises StoreUnavailable, as when the database is gone
    services = build_services(settings, store=store)
    server = tornado.httpserver.HTTPServer(make_app(services))
    listening, port = tornado.testing.bind_unused_port()
    server.add_sockets([listening])
    try:
        request = tornado.httpclient.HTTPRequest(
            f"http://127.0.0.1:{port}{REGISTER}", method="POST", headers={"Content-Type": "application/json"},
            body='{"username": "someone", "email": "s@example.com", "password": "password123"}')
        assert (await http_client.fetch(request, raise_error=False)).code == 503
        text = (await http_client.fetch(f"http://127.0.0.1:{port}/metrics")).body.decode()
    finally:
        server.stop()
    assert value(text, "database_errors_total", route=REGISTER) == 1


async def test_the_chat_figures_are_exported_from_the_services_metrics(api, services):
    services.metrics.open_websockets.inc()
    services.metrics.rooms.set(1)
    services.metrics.chat_messages_in.inc()
    services.metrics.chat_messages_out.inc(3)
    services.metrics.slow_consumers_dropped.inc()
    text = (await api.call("GET", "/metrics")).text
    assert value(text, "chat_open_websockets") == 1
    assert value(text, "chat_rooms") == 1
    assert value(text, "chat_messages_received_total") == 1
    assert value(text, "chat_messages_sent_total") == 3
    assert value(text, "chat_slow_consumers_dropped_total") == 1


async def test_each_application_counts_in_a_registry_of_its_own():
    first, second = ServerMetrics(), ServerMetrics()
    first.chat_messages_in.inc()
    assert value(generate_latest(second.registry).decode(), "chat_messages_received_total") == 0


@pytest.mark.settings(metrics_token="a-long-random-metrics-token")
async def test_with_a_metrics_token_set_requests_without_it_get_401_json(api):
    missing = await api.call("GET", "/metrics")
    assert missing.status == 401 and missing.json["code"] == "metrics_token_required"
    wrong = await api.call("GET", "/metrics", headers={"Authorization": "Bearer not-it"})
    assert wrong.status == 401
    right = await api.call("GET", "/metrics", headers={"Authorization": "Bearer a-long-random-metrics-token"})
    assert right.status == 200 and "http_requests_total" in right.text


@pytest.mark.settings(metrics_allowed_addresses=["10.0.0.0/8"])
async def test_an_address_outside_the_allow_list_gets_403_json(api):
    reply = await api.call("GET", "/metrics")
    assert reply.status == 403 and reply.json["code"] == "address_not_allowed"


@pytest.mark.settings(metrics_allowed_addresses=["10.1.2.3", "127.0.0.1"])
async def test_an_allowed_address_reads_the_metrics(api):
    assert (await api.call("GET", "/metrics")).status == 200


@pytest.mark.settings(metrics_allowed_addresses=["203.0.113.0/24"], trusted_proxies=["127.0.0.1"])
async def test_behind_a_trusted_proxy_the_allow_list_sees_the_forwarded_client(api):
    inside = await api.call("GET", "/metrics", headers={"X-Forwarded-For": "203.0.113.9"})
    outside = await api.call("GET", "/metrics", headers={"X-Forwarded-For": "198.51.100.1"})
    assert (inside.status, outside.status) == (200, 403)


@pytest.mark.settings(metrics_allowed_addresses=["203.0.113.0/24"])
async def test_a_forwarded_address_from_an_untrusted_peer_does_not_open_the_allow_list(api):
    reply = await api.call("GET", "/metrics", headers={"X-Forwarded-For": "203.0.113.9"})
    assert reply.status == 403
