"""The node's container runtime: OCI bundles run by crun (or runc) under conmon."""
