"""The server speaks systemd's notify protocol: a real process, a datagram socket the test opens."""
import os

from domain.systemd import SystemdNotifier, socket_address, watchdog_interval
from tests.running_server import RunningServer, free_port


def test_the_server_reports_ready_then_watchdog_pings_then_stopping_and_exits_0():
    with RunningServer({"WATCHDOG_USEC": "200000"}) as server:
        status = f"STATUS=listening on 127.0.0.1:{server.port}; database answering"
        assert status in server.ready_message.split("\n")
        assert server.request("GET", "/healthz")[0] == 200

        server.notify.wait_for("WATCHDOG=1", server.process)
        server.notify.wait_for("WATCHDOG=1", server.process)
        stopping = server.terminate()
        assert "STATUS=shutting down: finishing requests in flight" in stopping.split("\n")
        assert server.wait() == 0


def test_ready_is_sent_while_the_database_is_down_because_the_server_serves_and_retries():
    database_down = {"MONGO_URI": f"mongodb://127.0.0.1:{free_port()}/events", "MONGO_TIMEOUT_MS": "200"}
    with RunningServer(database_down) as server:
        assert "database not answering yet, retrying" in server.ready_message
        assert server.request("GET", "/healthz")[0] == 200
        assert server.request("GET", "/readyz")[0] == 503
        server.terminate()
        assert server.wait() == 0


def test_an_abstract_namespace_notify_socket_is_understood():
    with RunningServer(abstract_notify_socket=True) as server:
        assert server.notify.environment_value.startswith("@")
        assert "READY=1" in server.ready_message.split("\n")
        server.terminate()
        assert server.wait() == 0


def test_no_watchdog_pings_are_owed_when_the_watchdog_belongs_to_another_process():
    assert watchdog_interval({"WATCHDOG_USEC": "4000000"}) == 2.0
    assert watchdog_interval({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())}) == 2.0
    assert watchdog_interval({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({}) is None


def test_at_means_the_abstract_namespace_and_anything_else_a_path():
    assert socket_address("@sd-notify") == "\0sd-notify"
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"


def test_without_notify_socket_notifying_does_nothing():
    notifier = SystemdNotifier.from_environment({})
    assert not notifier.enabled
    assert notifier.ready("listening") is False
