"""Capability names as docker/cli's opts/capabilities.go writes them into a service spec, for
`service create --cap-add/--cap-drop` and a stack's `cap_add`/`cap_drop` alike."""

from __future__ import annotations

from collections.abc import Iterable

ALL = "ALL"
RESET = "RESET"  # only meaningful to `service update`; dropped on create, as Docker does


def normalize(capability: str) -> str:
    """NormalizeCapability: trimmed, upper-cased and CAP_-prefixed, except ALL and RESET."""
    cap = capability.strip().upper()
    if cap in (ALL, RESET) or cap.startswith("CAP_"):
        return cap
    return "CAP_" + cap


def effective(add: Iterable[str], drop: Iterable[str]) -> tuple[list[str], list[str]]:
    """EffectiveCapAddCapDrop: normalized, deduplicated and sorted; ALL in a list stands for the
    whole list; a capability both added and dropped is added (adding takes precedence)."""
    add_caps = {normalize(c) for c in add}
    drop_caps = {normalize(c) for c in drop}
    if ALL in add_caps:
        add_caps = {ALL}
    if ALL in drop_caps:
        drop_caps = {ALL}
    cap_drop = sorted(c for c in drop_caps if c not in add_caps and c != RESET)
    cap_add = sorted(c for c in add_caps if c != RESET)
    return cap_add, cap_drop
