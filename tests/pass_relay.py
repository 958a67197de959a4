"""`python tests/pass_relay.py CONFIG`: the relay core alone, every message passed.

A real `serve` process (own loop, signals, upstream pool) with a pipeline that
passes everything and no hold store or audit: what the relay's process tests
drive (bench/relay.py runs the whole product instead). Not a mock of mailguard:
only the scan/decide stage is left out.
"""

import asyncio
import sys

from mailguard.config import load_config
from mailguard.log import configure_logging
from mailguard.policy import Decision
from mailguard.server import App, Services, local_hostname, loop_factory
from mailguard.upstream import UpstreamPool


class PassAll:
    async def inspect(self, mail_from, rcpt_tos, data):
        return Decision("pass", "pass-all")


async def main(config, path: str) -> int:
    configure_logging(config.log.level)
    pool = UpstreamPool(config.upstream, local_hostname=local_hostname(config))
    return await App(config, path, services=Services(PassAll(), pool)).run()


if __name__ == "__main__":
    # The loop serve would run (server.event_loop), so these tests cover it.
    config = load_config(sys.argv[1])
    with asyncio.Runner(loop_factory=loop_factory(config.server.event_loop)) as runner:
        sys.exit(runner.run(main(config, sys.argv[1])))
