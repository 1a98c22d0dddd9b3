"""The benchmark's chat server fanning out through RoomHub.

A stand-in until the real chat handler exists: the same protocol and handler as
``bench.bare_broadcast_server``; only the fan-out differs.

    python -m bench.hub_demo_server --port 8002 [--max-buffer-bytes 1048576]
"""

from bench.bare_broadcast_server import command_line, serve
from handlers.chat_hub import RoomHub

if __name__ == "__main__":
    parser = command_line(__doc__)
    parser.add_argument("--max-buffer-bytes", type=int, default=1 << 20)
    args = parser.parse_args()
    serve(RoomHub(max_buffer_bytes=args.max_buffer_bytes), args.port, args.address)
