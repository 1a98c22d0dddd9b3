"""In-process fan-out of chat frames to the WebSocket connections of each room.

The chat hands the hub one dict per frame (the room feed each stored batch's frames, the broker
presence and typing frames); the hub encodes it to JSON once, builds the WebSocket frame once,
and writes those bytes to every member of this process. Contract with the transport:

- ``join`` only while the connection is open, and ``leave`` from ``on_close`` for every room
  it joined: presence (``online_count``) is released by ``leave`` alone, including for a
  connection the hub itself closed as too slow or broken.
- Every member of a room receives the room's broadcasts in the order of the ``broadcast``
  calls. Frames go out at the end of the IOLoop iteration in which they were broadcast
  (see ``RoomHub``), so a frame the handler writes itself in that same iteration may
  arrive before them; writes after ``join`` (the ``recent_messages`` answer) arrive after
  everything broadcast before the join, and before everything broadcast after it.
- A member's unsent backlog in the server never exceeds ``max_buffer_bytes`` plus one
  flush: past it the member is closed with 1013 (try again later).

Members are ``tornado.websocket.WebSocketHandler`` instances, or anything with
``write_message(text)`` and ``close(code, reason)``; a ``ws_connection`` attribute holding an
uncompressed server-side ``WebSocketProtocol13`` (or a subclass that frames as it does, marked
``frames_like_protocol13``: handlers/sockets.py's) unlocks the prebuilt-frame path.

Tornado internals relied on, checked against 6.6.1: ``WebSocketProtocol13._compressor`` (None
unless permessage-deflate was negotiated) and ``BaseIOStream._write_buffer`` (its length is
the unsent backlog). Bytes sent around the stream skip
the protocol's ``_wire_bytes_out`` statistics and nothing else: the stream's write futures
count only what goes through ``IOStream.write``.
"""

import asyncio
import json
import logging
import struct
from collections.abc import Hashable
from typing import Any

from tornado.iostream import BaseIOStream, SSLIOStream, StreamClosedError
from tornado.websocket import WebSocketClosedError, WebSocketProtocol13

log = logging.getLogger(__name__)

TRY_AGAIN_LATER = 1013
INTERNAL_ERROR = 1011
# The close reason of a slow member: why, then the seconds to wait before reconnecting (the
# protocol's `<why>; retry_after=<seconds>` form, read by clients; handlers/sockets.py).
TOO_SLOW_REASON = "too slow; retry_after=10"

_TEXT_FIN = 0x81

# How a member is written to; see RoomHub._target.
_DIRECT = 0  # plain TCP stream: socket.send, the stream's buffer only for what is left over
_STREAM = 1  # TLS stream: the prebuilt frame goes through IOStream.write
_MESSAGE = 2  # anything else (compression negotiated, not a Tornado handler): write_message

_EXPECTED_WRITE_ERRORS = (OSError, StreamClosedError, WebSocketClosedError)

# (member, its WebSocketProtocol or None, its IOStream or None, how it is written to)
_Target = tuple[Any, Any, BaseIOStream | None, int]


def encode_text_frame(payload: bytes) -> bytes:
    """An unmasked, uncompressed, final WebSocket text frame (RFC 6455 5.2)."""
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", _TEXT_FIN, length)
    elif length <= 0xFFFF:
        header = struct.pack("!BBH", _TEXT_FIN, 126, length)
    else:
        header = struct.pack("!BBQ", _TEXT_FIN, 127, length)
    return header + payload


def encode_json(payload: dict[str, Any]) -> str:
    # ASCII output: a lone surrogate decoded from a client's "\ud800" stays escaped
    # instead of making the frame invalid UTF-8.
    return json.dumps(payload, separators=(",", ":"))


class _Member:
    __slots__ = ("user_id", "active")

    def __init__(self, user_id: Hashable) -> None:
        self.user_id = user_id
        self.active = True


class _Room:
    __slots__ = ("members", "user_connections", "targets", "pending", "skipping")

    def __init__(self) -> None:
        self.members: dict[Any, _Member] = {}
        self.user_connections: dict[Hashable, int] = {}
        # Rebuilt on the first flush after a change, so that a burst of joins costs one
        # rebuild and a flush loops over a snapshot that nothing can mutate.
        self.targets: tuple[_Target, ...] | None = None
        # (JSON text, frame, connection left out or None) per broadcast not yet written, in
        # broadcast order; `skipping` says whether any leaves one out (see RoomHub._flush).
        self.pending: list[tuple[str, bytes, Any]] = []
        self.skipping = False


class RoomHub:
    """Rooms keyed by event id; per-user presence; ordered, bounded fan-out.

    Use it on the IOLoop thread only. ``broadcast`` queues the frame and the room is
    flushed at the end of the current IOLoop iteration: every broadcast to the room in that
    iteration reaches each member in one ``send`` (a system call is most of the cost of a
    delivery, and messages arrive in bursts under load). ``join``, ``leave`` and
    ``close_room`` flush the room first, so a membership change falls exactly between two
    broadcasts, as if each broadcast had been written at once.
    """

    def __init__(self, max_buffer_bytes: int = 1 << 20) -> None:
        self.max_buffer_bytes = max_buffer_bytes
        self.dropped_slow_consumers = 0
        self._rooms: dict[Hashable, _Room] = {}
        self._connections_by_user: dict[Hashable, dict[Any, int]] = {}

    def join(self, room_id: Hashable, conn: Any, user_id: Hashable) -> bool:
        """Adds ``conn``; True when it is the user's first connection in the room."""
        room = self._rooms.get(room_id)
        if room is None:
            room = self._rooms[room_id] = _Room()
        if conn in room.members:
            return False
        self._flush(room)
        room.members[conn] = _Member(user_id)
        room.targets = None
        rooms_of_conn = self._connections_by_user.setdefault(user_id, {})
        rooms_of_conn[conn] = rooms_of_conn.get(conn, 0) + 1
        count = room.user_connections.get(user_id, 0) + 1
        room.user_connections[user_id] = count
        return count == 1

    def leave(self, room_id: Hashable, conn: Any) -> bool:
        """Removes ``conn``; True when it was the user's last connection in the room."""
        room = self._rooms.get(room_id)
        if room is None or conn not in room.members:
            return False
        self._flush(room)
        member = room.members.pop(conn)
        room.targets = None
        self._forget_connection(member.user_id, conn)
        count = room.user_connections[member.user_id] - 1
        if count:
            room.user_connections[member.user_id] = count
        else:
            del room.user_connections[member.user_id]
        if not room.members:
            del self._rooms[room_id]
        return count == 0

    def online_count(self, room_id: Hashable) -> int:
        """Distinct users with at least one connection in the room."""
        room = self._rooms.get(room_id)
        return len(room.user_connections) if room is not None else 0

    def members(self, room_id: Hashable) -> dict[Any, Hashable]:
        """Connection -> user id, for every connection joined and not yet left."""
        room = self._rooms.get(room_id)
        if room is None:
            return {}
        return {conn: member.user_id for conn, member in room.members.items()}

    def connections_of_user(self, user_id: Hashable) -> list[Any]:
        """Every connection the user has in any room (to close them on token revocation)."""
        return list(self._connections_by_user.get(user_id, ()))

    def close_room(self, room_id: Hashable, code: int, reason: str) -> int:
        """Delivers what is queued, closes every connection of the room and forgets the
        room; returns how many connections it had."""
        room = self._rooms.get(room_id)
        if room is None:
            return 0
        self._flush(room)
        del self._rooms[room_id]
        for conn, member in room.members.items():
            self._forget_connection(member.user_id, conn)
            if member.active:
                _close_quietly(conn, code, reason)
        return len(room.members)

    def broadcast(self, room_id: Hashable, payload: dict[str, Any], skip: Any = None) -> None:
        """Queues ``payload``, encoded once as JSON and framed once, for every member but
        ``skip`` (a connection: the sender of a typing indicator)."""
        room = self._rooms.get(room_id)
        if room is None:
            return
        if not room.pending:
            asyncio.get_running_loop().call_soon(self._flush, room)
        text = encode_json(payload)
        room.pending.append((text, encode_text_frame(text.encode("ascii")), skip))
        if skip is not None:
            room.skipping = True

    def _flush(self, room: _Room) -> None:
        """Writes the room's queued frames to every member, in one piece per member.

        Why this cannot reorder frames on a connection: the queue is in broadcast order and
        the loop below runs to completion on the IOLoop thread with no await in it. For one
        connection, either its IOStream buffer is empty, and then every byte written to it
        before (earlier flushes, the handler's own writes, the 101 response) is already in
        the kernel, so ``socket.send`` appends after them; or the buffer holds something,
        and the frames go behind it through ``IOStream.write``, which flushes first in,
        first out. An unsent tail of a direct send becomes the head of the then-empty
        buffer, so anything written later queues behind it.
        """
        pending = room.pending
        if not pending:
            return
        room.pending = []
        targets = room.targets if room.targets is not None else self._rebuild_targets(room)
        slow: list[Any] = []
        broken: list[tuple[Any, Any, Exception]] = []
        if room.skipping:
            # Rare (typing indicators): the connections left out of some frames get the others,
            # framed as one piece too; everyone else gets all of them as usual.
            room.skipping = False
            skipped = {skip for _, _, skip in pending if skip is not None}
            for conn in skipped:
                own = [entry for entry in pending if entry[2] is not conn]
                mine = tuple(target for target in targets if target[0] is conn)
                if own and mine:
                    self._write(mine, own, slow, broken)
            targets = tuple(target for target in targets if target[0] not in skipped)
        self._write(targets, pending, slow, broken)
        if slow:
            self._drop_slow(room, slow)
        if broken:
            self._drop_broken(room, broken)

    def _write(self, targets: tuple[_Target, ...], pending: list[tuple[str, bytes, Any]],
               slow: list[Any], broken: list[tuple[Any, Any, Exception]]) -> None:
        """Writes the frames to each target in one piece; collects the slow and broken ones."""
        if len(pending) == 1:
            data = pending[0][1]
        else:
            data = b"".join([frame for _, frame, _ in pending])
        size = len(data)
        limit = self.max_buffer_bytes - size
        for conn, proto, stream, mode in targets:
            try:
                if mode == _DIRECT:
                    if proto.is_closing():
                        raise WebSocketClosedError()
                    if not stream.writing():
                        try:
                            sent = stream.socket.send(data)
                        except BlockingIOError:
                            sent = 0
                        if sent < size:
                            stream.write(memoryview(data)[sent:])
                    elif _buffered(stream) > limit:
                        slow.append(conn)
                    else:
                        stream.write(data)
                elif mode == _STREAM:
                    if proto.is_closing():
                        raise WebSocketClosedError()
                    if _buffered(stream) > limit:
                        slow.append(conn)
                    else:
                        stream.write(data)
                elif stream is not None and _buffered(stream) > limit:
                    slow.append(conn)
                else:
                    for text, _, _ in pending:
                        conn.write_message(text)
            except Exception as error:  # one member must never stop the others
                broken.append((conn, stream, error))

    def _rebuild_targets(self, room: _Room) -> tuple[_Target, ...]:
        room.targets = tuple(
            self._target(conn) for conn, member in room.members.items() if member.active
        )
        return room.targets

    @staticmethod
    def _target(conn: Any) -> _Target:
        proto = getattr(conn, "ws_connection", None)
        stream = getattr(proto, "stream", None)
        # A subclass may frame differently, so only the exact class qualifies, or one that says
        # it frames as it does.
        framed_by_us = (
            (type(proto) is WebSocketProtocol13 or getattr(type(proto), "frames_like_protocol13", False))
            and not proto.mask_outgoing
            and proto._compressor is None
            and stream is not None
        )
        if not framed_by_us:
            if not isinstance(stream, BaseIOStream):
                stream = None  # nothing to measure the backlog of
            return conn, proto, stream, _MESSAGE
        if isinstance(stream, SSLIOStream):
            return conn, proto, stream, _STREAM
        return conn, proto, stream, _DIRECT

    def _drop_slow(self, room: _Room, conns: list[Any]) -> None:
        for conn in conns:
            self._deactivate(room, conn)
            self.dropped_slow_consumers += 1
            # The close frame queues behind the buffered data; Tornado aborts the socket
            # if the client has not answered it within 5 seconds.
            _close_quietly(conn, TRY_AGAIN_LATER, TOO_SLOW_REASON)

    def _drop_broken(self, room: _Room, failures: list[tuple[Any, Any, Exception]]) -> None:
        for conn, stream, error in failures:
            self._deactivate(room, conn)
            if isinstance(error, OSError) and stream is not None:
                # The socket is unusable; closing the stream ends the handler's read loop,
                # which calls on_close and so leave().
                stream.close(exc_info=error)
            elif isinstance(error, _EXPECTED_WRITE_ERRORS):
                continue  # already closing: its on_close will come
            else:
                log.error("chat member write failed; closing it", exc_info=error)
                _close_quietly(conn, INTERNAL_ERROR, "server error")

    @staticmethod
    def _deactivate(room: _Room, conn: Any) -> None:
        member = room.members.get(conn)
        if member is not None:
            member.active = False
        room.targets = None

    def _forget_connection(self, user_id: Hashable, conn: Any) -> None:
        rooms_of_conn = self._connections_by_user[user_id]
        remaining = rooms_of_conn[conn] - 1
        if remaining:
            rooms_of_conn[conn] = remaining
        else:
            del rooms_of_conn[conn]
            if not rooms_of_conn:
                del self._connections_by_user[user_id]


def _buffered(stream: BaseIOStream) -> int:
    # No public accessor exists; _write_buffer is None once the stream is closed.
    return 0 if stream.closed() else len(stream._write_buffer)


def _close_quietly(conn: Any, code: int, reason: str) -> None:
    try:
        conn.close(code, reason)
    except Exception:
        log.exception("closing a chat member failed")
