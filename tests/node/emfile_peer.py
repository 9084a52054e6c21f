"""Helper process for test_realpeers_tcp: a TCP peer with few file descriptors.

Prints its listen address, then runs a stand-in round loop (a tick every 0.1 s that also
writes a small file, as a checkpoint would) while the test floods the port past
RLIMIT_NOFILE (set a few descriptors above those open); prints ``ticks N received M`` when a
message arrives or after 40 s.
"""

from __future__ import annotations

import asyncio
import os
import resource
import sys
import tempfile
from pathlib import Path

from spargo.node.transports.tcp import TcpConfig, TcpTransport


async def main() -> None:
    config = TcpConfig(seed=0, handshake_timeout_s=1.0, max_inbound_connections=256)
    ticks = 0
    failures = 0
    async with TcpTransport(config, "a") as a:
        # A few descriptors above what is open now: the flood (90 connections, at most 32 of
        # them held in their handshake) must run into EMFILE whatever this process imported.
        in_use = len(os.listdir("/proc/self/fd"))
        resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + 16, in_use + 16))
        print(a.listen_address, flush=True)

        async def round_loop() -> None:
            nonlocal ticks, failures
            scratch = Path(tempfile.gettempdir()) / f"emfile-{a.listen_address.split(':')[1]}"
            while True:
                await asyncio.sleep(0.1)
                try:
                    scratch.write_text(str(ticks))
                except OSError:
                    failures += 1  # a real peer warns and retries next round
                ticks += 1

        loop_task = asyncio.create_task(round_loop())
        received = 0
        try:
            async with asyncio.timeout(40):
                async for _sender, _data in a.incoming():
                    received += 1
                    break
        except TimeoutError:
            pass
        loop_task.cancel()
        print(f"ticks {ticks} received {received} write_failures {failures}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
