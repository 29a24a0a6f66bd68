"""A manager's image store served as the manager's TCP listener will serve it: the
distribution sub-application (image/distserver.py) mounted at /v2 under a TLS listener built
with tlsconfig.server_context from a node's certificates, on 127.0.0.1 at a free port (printed
as `PORT n`). Used by test_image_distribution.py and bench/bench_image_distribution.py."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from aiohttp import web

from shoal.image.distserver import DIST_API_PREFIX, make_distribution_app
from shoal.image.store import ImageStore
from shoal.manager.ca import CertStore
from shoal.tlsconfig import CLUSTER_ID_KEY, server_context


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--certs", required=True)
    parser.add_argument("--store", required=True)
    args = parser.parse_args()

    certs = CertStore(Path(args.certs))
    root_ca = certs.load_root_ca()
    me = certs.identity()
    app = web.Application()
    app[CLUSTER_ID_KEY] = me.cluster_id
    app.add_subapp(DIST_API_PREFIX, make_distribution_app(ImageStore(Path(args.store))))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0,
                       ssl_context=server_context(certs.cert_path, certs.key_path, root_ca.cert_pem))
    await site.start()
    print(f"PORT {runner.addresses[0][1]}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
