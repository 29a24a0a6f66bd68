"""shoald's HTTP+JSON API (versioned under /v1) on a root-only unix socket, and its client."""

API_VERSION = "v1"
