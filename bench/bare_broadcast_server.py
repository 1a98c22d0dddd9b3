"""Reference chat server for the benchmark: plain Tornado, textbook fan-out.

No auth, no storage: ``?token=`` is taken as the user id. The protocol is the subset of the
"WebSocket chat" contract (shared/API.md) that the benchmark drives: ``join_chat`` (answered
with an empty ``recent_messages`` and a ``user_joined`` to the room), ``leave_chat``,
``send_message`` (broadcast as ``new_message`` to the room, sender included).

The fan-out encodes the JSON once per message, then calls ``write_message`` on every
member. Tornado's chat demo re-encodes per member; this baseline does not, so that the
comparison measures the write path alone.

    python -m bench.bare_broadcast_server --port 8001
"""

import argparse
import asyncio
import itertools
import json
import resource
import time
from collections.abc import Hashable
from typing import Any

import tornado.web
import tornado.websocket


class BareRooms:
    """Room membership and per-user presence; fans out with ``write_message``."""

    def __init__(self) -> None:
        self._members: dict[Hashable, dict[Any, Hashable]] = {}
        self._user_connections: dict[Hashable, dict[Hashable, int]] = {}

    def join(self, room_id: Hashable, conn: Any, user_id: Hashable) -> bool:
        self._members.setdefault(room_id, {})[conn] = user_id
        counts = self._user_connections.setdefault(room_id, {})
        counts[user_id] = counts.get(user_id, 0) + 1
        return counts[user_id] == 1

    def leave(self, room_id: Hashable, conn: Any) -> bool:
        user_id = self._members.get(room_id, {}).pop(conn, None)
        if user_id is None:
            return False
        counts = self._user_connections[room_id]
        counts[user_id] -= 1
        if counts[user_id]:
            return False
        del counts[user_id]
        if not counts:
            del self._members[room_id], self._user_connections[room_id]
        return True

    def online_count(self, room_id: Hashable) -> int:
        return len(self._user_connections.get(room_id, ()))

    def broadcast(self, room_id: Hashable, payload: dict[str, Any]) -> int:
        text = json.dumps(payload, separators=(",", ":"))
        delivered = 0
        for conn in list(self._members.get(room_id, ())):
            try:
                conn.write_message(text)
                delivered += 1
            except tornado.websocket.WebSocketClosedError:
                pass
        return delivered


class ChatSocket(tornado.websocket.WebSocketHandler):
    """The benchmark's chat protocol over whatever ``rooms`` fans out with."""

    _message_ids = itertools.count(1)

    def initialize(self, rooms: Any) -> None:
        self.rooms = rooms
        self.room_id: str | None = None
        self.joined = False

    def check_origin(self, origin: str) -> bool:
        return True

    def open(self, room_id: str) -> None:
        self.room_id = room_id
        self.user_id = self.get_argument("token")
        self.set_nodelay(True)  # a chat frame must not wait for the previous one's ACK

    def on_message(self, message: str | bytes) -> None:
        frame = json.loads(message)
        kind = frame.get("type")
        if kind == "join_chat" and not self.joined:
            self.joined = True
            self.write_message({"type": "recent_messages", "messages": []})
            if self.rooms.join(self.room_id, self, self.user_id):
                self._announce("user_joined")
        elif kind == "leave_chat" and self.joined:
            self._leave()
        elif kind == "send_message" and self.joined:
            self.rooms.broadcast(
                self.room_id, {"type": "new_message", "message": self._message(frame)}
            )

    def on_close(self) -> None:
        if self.joined:
            self._leave()

    def _leave(self) -> None:
        self.joined = False
        if self.rooms.leave(self.room_id, self):
            self._announce("user_left")

    def _announce(self, kind: str) -> None:
        self.rooms.broadcast(
            self.room_id,
            {
                "type": kind,
                "user": {"id": self.user_id, "username": self.user_id},
                "online_count": self.rooms.online_count(self.room_id),
            },
        )

    def _message(self, frame: dict[str, Any]) -> dict[str, Any]:
        message = {
            "id": f"{next(self._message_ids):024x}",
            "event_id": self.room_id,
            "user_id": self.user_id,
            "username": self.user_id,
            "text": frame.get("text", ""),
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        if "client_msg_id" in frame:
            message["client_msg_id"] = frame["client_msg_id"]
        return message


def raise_open_file_limit() -> int:
    """Lifts the soft limit on open files to the hard one (thousands of sockets)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def command_line(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--address", default="127.0.0.1")
    return parser


def serve(rooms: Any, port: int, address: str) -> None:
    raise_open_file_limit()

    async def run() -> None:
        app = tornado.web.Application([(r"/ws/chat/(\w+)", ChatSocket, {"rooms": rooms})])
        app.listen(port, address, backlog=1024)
        await asyncio.Event().wait()

    asyncio.run(run())


if __name__ == "__main__":
    args = command_line(__doc__).parse_args()
    serve(BareRooms(), args.port, args.address)
