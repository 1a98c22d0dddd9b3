import asyncio
import datetime
import json
import socket
import struct

import pytest
import tornado.web
import tornado.websocket
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from handlers.chat_hub import RoomHub, encode_json, encode_text_frame

ROOM = "e1"
SLOW_BOUND = 256 * 1024


class MemberSocket(tornado.websocket.WebSocketHandler):
    """Joins the hub on open (unless ``?join=0``) and leaves on close, like the real handler."""

    def initialize(self, hub: RoomHub, sockets: dict) -> None:
        self.hub = hub
        self.sockets = sockets

    def get_compression_options(self):
        return {} if self.get_argument("deflate", "") else None

    def open(self, room_id: str) -> None:
        self.room_id = room_id
        self.user_id = self.get_argument("user")
        self.sockets[self.user_id] = self
        if self.get_argument("small_sndbuf", None):
            # A small kernel buffer makes a non-reading client back up after a few frames.
            self.ws_connection.stream.socket.setsockopt(
                socket.SOL_SOCKET, socket.SO_SNDBUF, 32 * 1024
            )
        if self.get_argument("join", "1") == "1":
            self.hub.join(room_id, self, self.user_id)
        self.write_message({"type": "ready"})

    def on_close(self) -> None:
        self.hub.leave(self.room_id, self)


@pytest.fixture
def hub():
    return RoomHub(max_buffer_bytes=SLOW_BOUND)


@pytest.fixture
def sockets():
    return {}


@pytest.fixture
def app(hub, sockets):
    return tornado.web.Application(
        [(r"/ws/(\w+)", MemberSocket, {"hub": hub, "sockets": sockets})]
    )


@pytest.fixture
def connect(io_loop):
    """Opens a client that has been joined (unless join="0") and greeted; closes it after."""
    opened = []

    async def connect(port: int, user: str, scheme="ws", join="1", deflate="", **options):
        url = f"{scheme}://127.0.0.1:{port}/ws/{ROOM}?user={user}&join={join}&deflate={deflate}"
        request = HTTPRequest(url, validate_cert=False)
        conn = await websocket_connect(request, **options)
        opened.append(conn)
        assert json.loads(await conn.read_message()) == {"type": "ready"}
        return conn

    yield connect
    for conn in opened:
        conn.close()


async def read_json(conn) -> dict:
    message = await conn.read_message()
    assert message is not None, "connection closed"
    return json.loads(message)


def test_frames_use_the_7_16_and_64_bit_length_forms():
    assert encode_text_frame(b"x" * 125)[:2] == b"\x81\x7d"
    assert encode_text_frame(b"x" * 126)[:4] == b"\x81\x7e\x00\x7e"
    assert encode_text_frame(b"x" * 65535)[:4] == b"\x81\x7e\xff\xff"
    assert encode_text_frame(b"x" * 65536)[:10] == b"\x81\x7f" + (65536).to_bytes(8, "big")
    assert encode_text_frame(b"abc")[2:] == b"abc"


def test_presence_counts_users_not_connections():
    hub = RoomHub()
    phone, laptop, other = object(), object(), object()

    assert hub.join(ROOM, phone, "ann") is True
    assert hub.join(ROOM, laptop, "ann") is False
    assert hub.join(ROOM, other, "bob") is True
    assert hub.join(ROOM, other, "bob") is False  # joining twice changes nothing
    assert hub.online_count(ROOM) == 2
    assert hub.members(ROOM) == {phone: "ann", laptop: "ann", other: "bob"}
    assert set(hub.connections_of_user("ann")) == {phone, laptop}

    assert hub.leave(ROOM, phone) is False
    assert hub.online_count(ROOM) == 2
    assert hub.leave(ROOM, laptop) is True
    assert hub.leave(ROOM, laptop) is False  # leaving twice changes nothing
    assert hub.online_count(ROOM) == 1
    assert hub.connections_of_user("ann") == []
    assert hub.online_count("unknown") == 0


def test_presence_is_per_room():
    hub = RoomHub()
    conn = object()

    assert hub.join("e1", conn, "ann") is True
    assert hub.join("e2", conn, "ann") is True
    assert hub.leave("e1", conn) is True
    assert hub.online_count("e1") == 0
    assert hub.online_count("e2") == 1
    assert hub.connections_of_user("ann") == [conn]


@pytest.mark.gen_test
async def test_every_member_receives_every_broadcast_in_the_same_order(
    hub, connect, http_server, http_port
):
    clients = [await connect(http_port, f"u{i}") for i in range(5)]
    sequence = 0
    for burst in (1, 30, 1, 1, 17, 50):
        # A burst lands in one IOLoop iteration, so its frames share one write per member.
        for _ in range(burst):
            hub.broadcast(ROOM, {"type": "new_message", "seq": sequence})
            sequence += 1
        await asyncio.sleep(0)

    for client in clients:
        received = [(await read_json(client))["seq"] for _ in range(sequence)]
        assert received == list(range(sequence))


@pytest.mark.gen_test
async def test_a_broadcast_can_leave_one_connection_out_and_keeps_the_order_for_it(
    hub, connect, http_server, http_port, sockets
):
    clients = [await connect(http_port, f"u{i}") for i in range(3)]
    typist = sockets["u0"]
    # In one IOLoop iteration: frames for everyone around one that skips u0.
    hub.broadcast(ROOM, {"seq": 0})
    hub.broadcast(ROOM, {"seq": 1, "typing": True}, skip=typist)
    hub.broadcast(ROOM, {"seq": 2})
    await asyncio.sleep(0)
    hub.broadcast(ROOM, {"seq": 3, "typing": True}, skip=typist)  # first in its flush
    hub.broadcast(ROOM, {"seq": 4})
    await asyncio.sleep(0)

    assert [(await read_json(clients[0]))["seq"] for _ in range(3)] == [0, 2, 4]
    for client in clients[1:]:
        assert [(await read_json(client))["seq"] for _ in range(5)] == [0, 1, 2, 3, 4]


@pytest.mark.gen_test
async def test_payloads_of_every_length_form_decode_on_a_real_client(
    hub, connect, http_server, http_port
):
    client = await connect(http_port, "u1")
    envelope = len(encode_json({"type": "big", "text": ""}))
    # JSON text lengths at the edges of the 7-bit, 16-bit and 64-bit length encodings.
    lengths = [125, 126, 65535, 65536, 300_000]
    for length in lengths:
        hub.broadcast(ROOM, {"type": "big", "text": "x" * (length - envelope)})

    for length in lengths:
        message = await client.read_message()
        assert len(message) == length
        assert json.loads(message) == {"type": "big", "text": "x" * (length - envelope)}


@pytest.mark.gen_test
async def test_non_ascii_text_arrives_intact(hub, connect, http_server, http_port):
    client = await connect(http_port, "u1")
    hub.broadcast(ROOM, {"type": "new_message", "text": "Grüße 👋 \ud800"})

    assert await read_json(client) == {"type": "new_message", "text": "Grüße 👋 \ud800"}


@pytest.mark.gen_test
async def test_a_member_joining_between_two_broadcasts_receives_only_the_second(
    hub, connect, sockets, http_server, http_port
):
    early = await connect(http_port, "early")
    late = await connect(http_port, "late", join="0")

    hub.broadcast(ROOM, {"seq": 1})
    hub.join(ROOM, sockets["late"], "late")
    hub.broadcast(ROOM, {"seq": 2})

    assert [(await read_json(early))["seq"] for _ in range(2)] == [1, 2]
    assert (await read_json(late))["seq"] == 2


@pytest.mark.gen_test
async def test_a_member_leaving_between_two_broadcasts_receives_only_the_first(
    hub, connect, sockets, http_server, http_port
):
    leaving = await connect(http_port, "leaving")
    staying = await connect(http_port, "staying")

    hub.broadcast(ROOM, {"seq": 1})
    assert hub.leave(ROOM, sockets["leaving"]) is True
    hub.broadcast(ROOM, {"seq": 2})
    sockets["leaving"].write_message({"seq": "direct"})

    assert [(await read_json(staying))["seq"] for _ in range(2)] == [1, 2]
    assert [(await read_json(leaving))["seq"] for _ in range(2)] == [1, "direct"]


@pytest.mark.gen_test
async def test_a_connection_with_compression_still_receives_broadcasts_in_order(
    hub, connect, http_server, http_port
):
    plain = await connect(http_port, "plain")
    deflated = await connect(http_port, "deflated", deflate="1", compression_options={})

    for sequence in range(20):
        hub.broadcast(ROOM, {"seq": sequence, "text": "z" * 500})

    for client in (plain, deflated):
        assert [(await read_json(client))["seq"] for _ in range(20)] == list(range(20))


class ExplodingMember:
    """A member whose every write fails, as a buggy connection type would."""

    def __init__(self) -> None:
        self.closed_with = None

    def write_message(self, text: str) -> None:
        raise RuntimeError("boom")

    def close(self, code: int, reason: str) -> None:
        self.closed_with = code


@pytest.mark.gen_test
async def test_members_that_fail_or_are_closing_are_dropped_and_the_others_still_receive(
    hub, connect, sockets, http_server, http_port
):
    first = await connect(http_port, "first")
    closing = await connect(http_port, "closing")
    exploding = ExplodingMember()
    hub.join(ROOM, exploding, "exploding")
    last = await connect(http_port, "last")
    hub.broadcast(ROOM, {"seq": 0})
    await asyncio.sleep(0)
    sockets["closing"].close(4401, "token revoked")  # still a member until its on_close

    for sequence in (1, 2):
        hub.broadcast(ROOM, {"seq": sequence})
        await asyncio.sleep(0)

    for client in (first, last):
        assert [(await read_json(client))["seq"] for _ in range(3)] == [0, 1, 2]
    assert exploding.closed_with == 1011
    assert (await read_json(closing))["seq"] == 0
    assert await closing.read_message() is None
    assert closing.close_code == 4401


@pytest.fixture
def ssl_options(tmp_path):
    """A throwaway self-signed certificate for 127.0.0.1."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    certfile.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return {"certfile": str(certfile), "keyfile": str(keyfile)}


@pytest.mark.gen_test
async def test_tls_connections_receive_the_prebuilt_frames_in_order(
    hub, connect, https_server, https_port
):
    clients = [await connect(https_port, f"u{i}", scheme="wss") for i in range(2)]
    big = "y" * 20_000
    sequence = 0
    for burst in (1, 5, 1):
        for _ in range(burst):
            hub.broadcast(ROOM, {"seq": sequence, "text": big})
            sequence += 1
        await asyncio.sleep(0)

    for client in clients:
        received = [await read_json(client) for _ in range(sequence)]
        assert [message["seq"] for message in received] == list(range(sequence))
        assert all(message["text"] == big for message in received)


class RawClient:
    """A WebSocket client on a bare socket that reads only when told to."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    @classmethod
    async def connect(cls, url_path: str, port: int) -> "RawClient":
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, ("127.0.0.1", port))
        await loop.sock_sendall(
            sock,
            (
                f"GET {url_path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode(),
        )
        client = cls(sock)
        while b"\r\n\r\n" not in client.buffer:
            await client._receive()
        head, client.buffer = client.buffer.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101")
        return client

    async def _receive(self) -> None:
        chunk = await asyncio.get_running_loop().sock_recv(self.sock, 65536)
        assert chunk, "server closed the socket"
        self.buffer += chunk

    async def read_frame(self) -> tuple[int, bytes]:
        while True:
            frame = self._parse_frame()
            if frame is not None:
                return frame
            await self._receive()

    def _parse_frame(self) -> tuple[int, bytes] | None:
        if len(self.buffer) < 2:
            return None
        opcode, length = self.buffer[0] & 0x0F, self.buffer[1] & 0x7F
        start = 2
        if length == 126:
            start, (length,) = 4, struct.unpack("!H", self.buffer[2:4])
        elif length == 127:
            start, (length,) = 10, struct.unpack("!Q", self.buffer[2:10])
        if len(self.buffer) < start + length:
            return None
        payload = self.buffer[start : start + length]
        self.buffer = self.buffer[start + length :]
        return opcode, payload

    async def answer_close(self) -> None:
        await asyncio.get_running_loop().sock_sendall(
            self.sock, b"\x88\x82\0\0\0\0" + struct.pack("!H", 1000)
        )

    def close(self) -> None:
        self.sock.close()


@pytest.mark.gen_test(timeout=20)
async def test_a_client_that_never_reads_is_closed_with_1013_while_the_others_get_everything(
    hub, connect, http_server, http_port
):
    readers = [await connect(http_port, f"reader{i}") for i in range(2)]
    stalled = await RawClient.connect(f"/ws/{ROOM}?user=stalled&small_sndbuf=1", http_port)
    try:
        assert (await stalled.read_frame())[1] == b'{"type": "ready"}'
        big = "x" * (100 * 1024)

        sent = 0
        while hub.dropped_slow_consumers == 0:
            assert sent < 100, "the stalled client was never dropped"
            hub.broadcast(ROOM, {"seq": sent, "text": big})
            sent += 1
            for reader in readers:  # the readers keep up, so their buffers stay empty
                assert (await read_json(reader))["seq"] == sent - 1
        assert hub.online_count(ROOM) == 3  # presence waits for the handler's leave()
        for _ in range(5):
            hub.broadcast(ROOM, {"seq": sent, "text": big})
            sent += 1
            for reader in readers:
                assert (await read_json(reader))["seq"] == sent - 1

        # The stalled client, reading at last, finds a prefix of the broadcasts, then 1013.
        received = []
        opcode, payload = await stalled.read_frame()
        while opcode == 0x1:
            received.append(json.loads(payload)["seq"])
            opcode, payload = await stalled.read_frame()
        assert opcode == 0x8
        assert struct.unpack("!H", payload[:2])[0] == 1013
        assert received == list(range(len(received)))
        assert len(received) < sent

        await stalled.answer_close()
        for _ in range(500):  # the server completes the close, then its on_close leaves
            if hub.online_count(ROOM) == 2:
                break
            await asyncio.sleep(0.01)
        assert hub.online_count(ROOM) == 2
        assert hub.dropped_slow_consumers == 1
    finally:
        stalled.close()


@pytest.mark.gen_test
async def test_a_member_whose_socket_was_reset_is_dropped_and_the_others_still_receive(
    hub, connect, http_server, http_port
):
    reader = await connect(http_port, "reader")
    reset = await RawClient.connect(f"/ws/{ROOM}?user=reset", http_port)
    assert (await reset.read_frame())[1] == b'{"type": "ready"}'
    hub.broadcast(ROOM, {"seq": 0})
    assert (await read_json(reader))["seq"] == 0
    assert json.loads((await reset.read_frame())[1])["seq"] == 0

    reset.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    reset.close()  # an RST, which the server meets first in the hub's send
    for sequence in (1, 2):
        hub.broadcast(ROOM, {"seq": sequence})
        await asyncio.sleep(0)

    assert [(await read_json(reader))["seq"] for _ in range(2)] == [1, 2]
    for _ in range(500):  # closing the stream ends the handler, whose on_close leaves
        if hub.online_count(ROOM) == 1:
            break
        await asyncio.sleep(0.01)
    assert hub.online_count(ROOM) == 1


@pytest.mark.gen_test
async def test_closing_a_room_delivers_what_was_queued_then_closes_everyone(
    hub, connect, http_server, http_port
):
    clients = [await connect(http_port, f"u{i}") for i in range(3)]

    hub.broadcast(ROOM, {"seq": 1})
    assert hub.close_room(ROOM, 4404, "event deleted") == 3

    for client in clients:
        assert (await read_json(client))["seq"] == 1
        assert await client.read_message() is None
        assert client.close_code == 4404
    assert hub.online_count(ROOM) == 0
    assert hub.connections_of_user("u0") == []
