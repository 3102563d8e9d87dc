"""A TCP relay that delays the server's replies: added network latency.

    python -m benchmarks.relay UPSTREAM_HOST:PORT DELAY

listens on a free port of 127.0.0.1, prints ``listening 127.0.0.1:PORT``,
then relays every connection to the upstream, both ways, until terminated.
The server's replies reach the client ``DELAY`` seconds after the relay got
them (in order, at full throughput): one round trip costs ``DELAY`` more, as
with ``tc netem`` on the path. A process of its own, so that its CPU does not
count as the benchmark's.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys

CHUNK = 65536


async def pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float
) -> None:
    """Copy ``reader`` to ``writer``, each chunk ``delay`` seconds later."""
    loop = asyncio.get_running_loop()
    line: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def send() -> None:
        while True:
            due, data = await line.get()
            if not data:
                return
            if (wait := due - loop.time()) > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()

    sender = asyncio.create_task(send())
    try:
        while data := await reader.read(CHUNK):
            if delay:
                line.put_nowait((loop.time() + delay, data))
            else:
                writer.write(data)
                await writer.drain()
    except ConnectionError:
        pass
    finally:
        line.put_nowait((0.0, b""))
        with contextlib.suppress(ConnectionError):
            await sender
        writer.close()


async def serve(upstream: str, delay: float) -> None:
    host, _, port = upstream.rpartition(":")

    async def relay(
        client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(
                host, int(port)
            )
        except OSError:
            client_writer.close()
            return
        with contextlib.suppress(asyncio.CancelledError):  # the relay stops
            await asyncio.gather(
                pipe(client_reader, server_writer, 0.0),
                pipe(server_reader, client_writer, delay),
            )

    server = await asyncio.start_server(relay, "127.0.0.1", 0)
    bound = server.sockets[0].getsockname()
    print(f"listening {bound[0]}:{bound[1]}", flush=True)
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
    try:
        await stop
    finally:
        server.close()  # (not wait_closed(): open connections end with the loop)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(sys.argv[1], float(sys.argv[2])))
