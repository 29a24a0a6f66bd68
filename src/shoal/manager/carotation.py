"""The root CA rotation's bookkeeping, as swarmkit's ca/reconciler.go and docker/cli's
progress/root_rotation.go count it: which nodes already hold a certificate from the new
signer (TLS certificates rotated), which already trust the new root (CA certificates rotated),
and whether the rotation may finish.

Pure functions over node records (dicts as the store holds them); the daemon's reconciler loop
(api/tcp.py) calls them and does the writing (manager/swarmnode.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shoal.model.cluster import Node

ISSUER_KEYS = ("CertIssuerSubject", "CertIssuerPublicKey")


@dataclass(frozen=True)
class Progress:
    nodes: int  # nodes counted (those not down)
    tls_rotated: int  # nodes whose certificate comes from the desired issuer
    ca_rotated: int  # nodes whose trusted root is the desired one

    def to_api(self) -> dict[str, int]:
        return {"Nodes": self.nodes, "TLSRotated": self.tls_rotated, "CARotated": self.ca_rotated}


def _node_tls(record: dict[str, Any]) -> dict[str, str]:
    return Node.from_dict(record).tls_info.to_api()


def _counted(record: dict[str, Any]) -> bool:
    """swarmkit's reconciler leaves out nodes that are down: a node that is away would hold a
    rotation forever; it renews when it comes back (if it still can)."""
    return Node.from_dict(record).state != "down"


def issuer_matches(record: dict[str, Any], desired: dict[str, str]) -> bool:
    info = _node_tls(record)
    return all(info[k] and info[k] == desired.get(k) for k in ISSUER_KEYS)


def progress(records: list[dict[str, Any]], desired: dict[str, str]) -> Progress:
    counted = [r for r in records if _counted(r)]
    return Progress(len(counted), sum(1 for r in counted if issuer_matches(r, desired)),
                    sum(1 for r in counted if _node_tls(r)["TrustRoot"] == desired.get("TrustRoot")))


def may_finish(records: list[dict[str, Any]], desired: dict[str, str]) -> bool:
    """The reconciler's decision: every node that is not down holds a certificate from the new
    signer (swarmkit then sets the new root as the only trusted one). At least one node (the
    manager itself) must be counted, so an empty view never finishes a rotation."""
    counted = [r for r in records if _counted(r)]
    return bool(counted) and all(issuer_matches(r, desired) for r in counted)
