"""A manager's CA service in a process of its own, as shoald will mount it: the sub-application
from manager/caserver.py under a TLS listener on 127.0.0.1 (a free port, printed as `PORT n`),
plus a few routes that stand in for the daemon's authenticated ones:

    GET  /test/whoami          any node of the cluster (require_node)
    GET  /test/manager-only    managers only (require_role swarm-manager)
    POST /test/rotate/{role}   managers only: `join-token --rotate`, answers the new token
    POST /test/remove/{id}     managers only: `node rm`, the node can no longer renew
    POST /test/demote/{id}     managers only: `node demote`, the next renewal is a worker's
    POST /test/ca/rotate-begin managers only: `swarm ca --rotate`, first step
    POST /test/ca/rotate-finish  managers only: the rotation's last step, answers the new tokens

`--serve-ca FILE` makes it a man in the middle: it answers /rootca with FILE (say, the real
cluster's public CA certificate) while its TLS certificate is from its own CA."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from aiohttp import web

from shoal.errors import ShoalError
from shoal.manager.ca import (CA_API_PREFIX, MANAGER_ROLE, CertStore, JoinTokens, begin_rotation,
                              finish_rotation, generate_csr)
from shoal.manager.caserver import CA_SERVER_KEY, NodeJoin, make_ca_app
from shoal.tlsconfig import CLUSTER_ID_KEY, require_node, require_role, server_context


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--certs", required=True)
    parser.add_argument("--tokens", required=True)
    parser.add_argument("--serve-ca")
    args = parser.parse_args()

    store = CertStore(Path(args.certs))
    root_ca = store.load_root_ca()
    me = store.identity()
    tokens = JoinTokens.from_dict(json.loads(Path(args.tokens).read_text()))
    roles: dict[str, str] = {me.node_id: me.role}
    hostnames: set[str] = set()

    def on_node_joined(join: NodeJoin) -> None:
        if join.hostname in hostnames:
            raise ShoalError(f'a node with hostname "{join.hostname}" is already in the swarm')
        hostnames.add(join.hostname)
        roles[join.node_id] = join.role

    ca_app = make_ca_app(root_ca, tokens, on_node_joined, cluster_id=me.cluster_id, role_of=roles.get)
    async def whoami(request: web.Request) -> web.Response:
        ident = require_node(request)
        return web.json_response({"NodeID": ident.node_id, "Role": ident.role, "ClusterID": ident.cluster_id})

    async def manager_only(request: web.Request) -> web.Response:
        require_role(request, "swarm-manager")
        return web.json_response({"ok": True})

    async def rotate(request: web.Request) -> web.Response:
        require_role(request, "swarm-manager")
        server = ca_app[CA_SERVER_KEY]
        return web.json_response({"Token": server.tokens.rotate(request.match_info["role"], server.root_ca)})

    async def demote(request: web.Request) -> web.Response:
        require_role(request, "swarm-manager")
        roles[request.match_info["id"]] = "swarm-worker"
        return web.json_response({"ok": True})

    async def remove(request: web.Request) -> web.Response:
        require_role(request, "swarm-manager")
        roles.pop(request.match_info["id"], None)
        return web.json_response({"ok": True})

    tls = server_context(store.cert_path, store.key_path, root_ca.cert_pem)

    def reissue_own_cert() -> None:
        """The manager is a node too: a certificate from the current signer, served from now on."""
        server = ca_app[CA_SERVER_KEY]
        csr, key = generate_csr()
        store.save_node(server.root_ca.sign_csr(csr, me.node_id, MANAGER_ROLE, me.cluster_id), key)
        tls.load_cert_chain(str(store.cert_path), str(store.key_path))

    async def rotate_begin(request: web.Request) -> web.Response:
        require_role(request, "swarm-manager")
        server = ca_app[CA_SERVER_KEY]
        server.root_ca = begin_rotation(server.root_ca)
        store.save_root_ca(server.root_ca)
        reissue_own_cert()
        return web.json_response({"ok": True})

    async def rotate_finish(request: web.Request) -> web.Response:
        require_role(request, "swarm-manager")
        server = ca_app[CA_SERVER_KEY]
        server.root_ca, server.tokens = finish_rotation(server.root_ca)
        store.save_root_ca(server.root_ca)
        # The listener keeps its certificate issued during the rotation (new key + cross-signed
        # root): nodes that still trust only the old root reach it until they renew.
        tls.load_verify_locations(cadata=server.root_ca.cert_pem.decode())
        return web.json_response(server.tokens.to_dict())

    app = web.Application()
    app[CLUSTER_ID_KEY] = me.cluster_id
    app.router.add_post("/test/ca/rotate-begin", rotate_begin)
    app.router.add_post("/test/ca/rotate-finish", rotate_finish)
    if args.serve_ca:
        fake = Path(args.serve_ca).read_bytes()

        async def rootca(request: web.Request) -> web.Response:
            return web.Response(body=fake, content_type="application/x-pem-file")

        app.router.add_get(CA_API_PREFIX + "/rootca", rootca)  # found before the sub-app's route
    app.router.add_get("/test/whoami", whoami)
    app.router.add_get("/test/manager-only", manager_only)
    app.router.add_post("/test/rotate/{role}", rotate)
    app.router.add_post("/test/remove/{id}", remove)
    app.router.add_post("/test/demote/{id}", demote)
    app.add_subapp(CA_API_PREFIX, ca_app)

    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
    await site.start()
    port = runner.addresses[0][1]
    print(f"PORT {port}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
