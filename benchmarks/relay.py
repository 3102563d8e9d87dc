"""A TCP/unix-socket relay, optionally a delay line: added network latency.

    python -m benchmarks.relay --listen tcp:127.0.0.1:0 \\
        --upstream tcp:127.0.0.1:5432 --delay 0.001

prints ``listening <address>`` once it accepts connections, then relays
every connection to the upstream, both ways, until killed. With
``--delay``, the server's replies reach the client ``delay`` seconds after
the relay got them (in order, at full throughput): one round trip costs
``delay`` more, as with ``tc netem`` on the path. Addresses are
``tcp:HOST:PORT`` (port 0: any free one) or ``unix:PATH``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
from collections.abc import Sequence

CHUNK = 65536


async def open_address(
    address: str,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    kind, _, rest = address.partition(":")
    if kind == "unix":
        return await asyncio.open_unix_connection(rest)
    host, _, port = rest.rpartition(":")
    return await asyncio.open_connection(host, int(port))


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


async def serve(listen: str, upstream: str, delay: float) -> None:
    async def relay(
        client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        try:
            server_reader, server_writer = await open_address(upstream)
        except OSError:
            client_writer.close()
            return
        with contextlib.suppress(asyncio.CancelledError):  # the relay stops
            await asyncio.gather(
                pipe(client_reader, server_writer, 0.0),
                pipe(server_reader, client_writer, delay),
            )

    kind, _, rest = listen.partition(":")
    if kind == "unix":
        server = await asyncio.start_unix_server(relay, rest)
        where = f"unix:{rest}"
    else:
        host, _, port = rest.rpartition(":")
        server = await asyncio.start_server(relay, host, int(port))
        bound = server.sockets[0].getsockname()
        where = f"tcp:{bound[0]}:{bound[1]}"
    print(f"listening {where}", flush=True)
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
    try:
        await stop
    finally:
        server.close()  # (not wait_closed(): open connections end with the loop)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.relay")
    parser.add_argument("--listen", required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.listen, args.upstream, args.delay))
    if args.listen.startswith("unix:"):
        with contextlib.suppress(OSError):
            os.unlink(args.listen[5:])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
