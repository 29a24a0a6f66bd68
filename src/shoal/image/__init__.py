"""Images: the OCI content store, references, layer snapshots, archives and registry client."""
