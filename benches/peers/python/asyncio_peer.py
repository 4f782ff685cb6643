"""revecho's protocol on Python's asyncio, standard library only.

    python3 asyncio_peer.py [--listen HOST:PORT] [--framing burst|eof] [--linger]

Burst framing: one read of whatever has arrived. Eof framing: everything up
to the client's end of stream. The reply is the message reversed; then a
plain close, or with --linger the lingering close (write_eof, read until the
client's end of stream, close). Prints "listening on ADDR" like revecho.
"""

import argparse
import asyncio
import resource


async def exchange(reader, writer, eof_framing, linger):
    try:
        message = await (reader.read() if eof_framing else reader.read(65536))
        writer.write(message[::-1])
        await writer.drain()
        if linger and not reader.at_eof():
            writer.write_eof()
            while await reader.read(4096):
                pass
    except OSError:
        pass
    finally:
        writer.close()


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--framing", choices=["burst", "eof"], default="burst")
    parser.add_argument("--linger", action="store_true")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    eof_framing = args.framing == "eof"
    server = await asyncio.start_server(
        lambda reader, writer: exchange(reader, writer, eof_framing, args.linger),
        host,
        int(port),
        backlog=1024,
        limit=32 << 20,
    )
    host, port = server.sockets[0].getsockname()[:2]
    print(f"listening on {host}:{port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
