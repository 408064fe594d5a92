"""A caller hanging up as the server closes must end that one connection, not the server.

Real sockets on loopback against hypercorn's trio worker. Without the repair in
``adapters.app.hypercorn_repair`` the first test ends with ``trio.BusyResourceError`` out
of ``serve`` (see docs/hypercorn-close-race.md).
"""

from __future__ import annotations

import logging
import os
import struct
import subprocess
import sys
from importlib.metadata import version

import pytest
import trio
import trio.testing
from hypercorn.config import Config
from hypercorn.trio import serve
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext

from adapters.app import hypercorn_repair

HANDSHAKE = (
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def client_frame(opcode: int, payload: bytes) -> bytes:
    mask = os.urandom(4)
    masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked


async def closes_on_first_message(scope, receive, send) -> None:
    """Like the media socket after a hangup: the server closes as the caller does."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await receive()
    await send({"type": "websocket.accept"})
    await receive()
    await send({"type": "websocket.close", "code": 1000})


async def hang_up_while_the_server_closes(port: int, yields: int) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(HANDSHAKE)
        response = b""
        while b"\r\n\r\n" not in response:
            response += await stream.receive_some(4096)
        assert response.startswith(b"HTTP/1.1 101")
        await stream.send_all(client_frame(0x1, b"bye"))
        for _ in range(yields):  # spread the caller's Close across the server's closing
            await trio.sleep(0)
        await stream.send_all(client_frame(0x8, struct.pack("!H", 1000)))
        try:
            while await stream.receive_some(4096):
                pass
        except trio.BrokenResourceError:
            pass


async def test_simultaneous_closes_leave_the_server_serving() -> None:
    hypercorn_repair.install()
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            lambda task_status: serve(closes_on_first_message, config, task_status=task_status)
        )
        port = int(binds[0].rsplit(":", 1)[1])
        for _ in range(30):
            async with trio.open_nursery() as callers:
                for yields in range(10):
                    callers.start_soon(hang_up_while_the_server_closes, port, yields)
        await hang_up_while_the_server_closes(port, 0)  # still accepting
        nursery.cancel_scope.cancel()


async def test_a_stream_error_ends_that_connection_alone(caplog) -> None:
    """Another task is writing to the socket when hypercorn answers a bad request on it."""
    hypercorn_repair.install()
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listener.socket.getsockname()[1]
    async with listener, await trio.open_tcp_stream("127.0.0.1", port) as client:
        stream = await listener.accept()

        async def hog() -> None:  # the client never reads, so this write blocks
            with pytest.raises(trio.ClosedResourceError):
                await stream.send_all(b"x" * 50_000_000)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(hog)
            await trio.testing.wait_all_tasks_blocked()
            await client.send_all(b"NOT HTTP\r\n\r\n")  # hypercorn replies 400 from its reader
            server = TCPServer(closes_on_first_message, Config(), WorkerContext(None), {}, stream)
            with caplog.at_level(logging.ERROR, logger="voice_agent.server"):
                await server.run()  # BusyResourceError, contained
    assert "a connection failed inside hypercorn" in caplog.text
    assert "BusyResourceError" in caplog.text


async def test_any_other_error_is_not_hidden() -> None:
    hypercorn_repair.install()
    broken = TCPServer(None, Config(), None, None, stream=object())  # no socket at all
    with pytest.raises(AttributeError):
        await broken.run()


def test_an_unknown_hypercorn_is_left_alone_and_says_so() -> None:
    check = (
        "import logging, hypercorn.trio.tcp_server as t; from adapters.app import hypercorn_repair; "
        "logging.basicConfig(); print(hypercorn_repair.install('0.19.0')); "
        "print(t.TCPServer._close.__module__, t.TCPServer.run.__module__)"
    )
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True)
    assert done.stdout.split() == [
        "False",
        "hypercorn.trio.tcp_server",
        "hypercorn.trio.tcp_server",
    ]
    assert "hypercorn 0.19.0 is not a version the close-race repair was written for" in done.stderr
    assert "not patched" in done.stderr


def test_the_installed_hypercorn_is_one_the_repair_knows() -> None:
    """The pin in pyproject.toml and the versions the repair accepts move together."""
    assert version("hypercorn") in hypercorn_repair.KNOWN_VERSIONS
    assert hypercorn_repair.install() is True


def test_hypercorns_own_command_line_gets_the_repairs_too() -> None:
    """``hypercorn -k trio adapters.app.asgi:app`` never calls serve_app: the import must repair."""
    check = (
        "import adapters.app.asgi, hypercorn.trio.tcp_server as t; "
        "print(t.TCPServer._close.__module__, t.TCPServer.run.__module__)"
    )
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    done = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, env=env, check=True
    )
    assert done.stdout.split() == ["adapters.app.hypercorn_repair", "adapters.app.hypercorn_repair"]
