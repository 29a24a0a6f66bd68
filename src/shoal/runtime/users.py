"""`--user name[:group]` resolved against the image's own /etc/passwd and /etc/group, following
moby's rules (github.com/moby/sys/user GetExecUser): numeric IDs need no entry, names must
exist, the user's supplementary groups come from /etc/group, HOME from passwd (default /)."""

from __future__ import annotations

from dataclasses import dataclass, field

from shoal.errors import ShoalError


@dataclass
class ExecUser:
    uid: int
    gid: int
    additional_gids: list[int] = field(default_factory=list)
    home: str = "/"


def _parse(text: str | None, fields: int) -> list[list[str]]:
    rows = []
    for line in (text or "").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        parts += [""] * (fields - len(parts))
        rows.append(parts)
    return rows


_MAX_ID = 2**31 - 1  # moby/sys/user's maxID, "for 32-bit systems compatibility"
_RANGE = f"uids and gids must be in range 0-{_MAX_ID}"


def _atoi(text: str) -> int | None:
    """Go's strconv.Atoi: an optional sign and ASCII digits (int() also takes "١٢", spaces and
    underscores), or None."""
    digits = text[1:] if text[:1] in ("+", "-") else text
    if not (digits.isascii() and digits.isdigit()):
        return None
    return int(text)


def _field(text: str) -> int:
    """A numeric field of passwd or group: moby parses it with the error ignored (0), so one
    malformed line of an image's file is no traceback; a number past the id range is refused
    (moby keeps Atoi's clamped value, which the runtime then refuses)."""
    value = _atoi(text)
    if value is None:
        return 0
    if not 0 <= value <= 0xFFFFFFFF:
        raise ShoalError(_RANGE)
    return value


def _numeric_arg(text: str) -> int | None:
    """moby/sys/user parseNumeric: a name (None), or an id within its range."""
    value = _atoi(text)
    if value is None:
        return None
    if not 0 <= value <= _MAX_ID:
        raise ShoalError(_RANGE)
    return value


def resolve_user(spec: str, passwd: str | None, group: str | None) -> ExecUser:
    user_part, _, group_part = (spec or "0").partition(":")
    user_part = user_part or "0"
    users = _parse(passwd, 7)
    groups = _parse(group, 4)

    user_id = _numeric_arg(user_part)
    group_id = _numeric_arg(group_part) if group_part else None
    entry = next((u for u in users if u[0] == user_part), None)
    if entry is None and user_id is not None:
        entry = next((u for u in users if u[2] == user_part), None)
    if entry is None:
        if user_id is None:
            raise ShoalError(f"unable to find user {user_part}: no matching entries in passwd file")
        uid, gid, home, name = user_id, 0, "/", ""
    else:
        uid, gid, home, name = _field(entry[2]), _field(entry[3]), entry[5] or "/", entry[0]

    additional: list[int] = []
    if group_part:
        match = next((g for g in groups if g[0] == group_part), None)
        if match is None and group_id is not None:
            gid = group_id
        elif match is None:
            raise ShoalError(f"unable to find group {group_part}: no matching entries in group file")
        else:
            gid = _field(match[2])
    elif name:
        # Supplementary groups only when no group was asked for, as moby does.
        for g in groups:
            members = [m for m in g[3].split(",") if m]
            if name in members and _atoi(g[2]) is not None and _field(g[2]) != gid:
                additional.append(_field(g[2]))
    return ExecUser(uid=uid, gid=gid, additional_gids=additional, home=home)


def additional_groups(wanted: list[str], group: str | None) -> list[int]:
    """`--group-add` / a service's Groups, as moby/sys/user GetAdditionalGroups: a name or GID
    found in the image's /etc/group, else a number taken as a GID; anything else is an error."""
    groups = _parse(group, 4)
    out: list[int] = []
    for want in wanted:
        match = next((g for g in groups if (g[0] == want or g[2] == want) and _atoi(g[2]) is not None), None)
        wanted_id = _numeric_arg(want)
        if match is not None:
            gid = _field(match[2])
            if gid > _MAX_ID:
                raise ShoalError(_RANGE)
        elif wanted_id is not None:
            gid = wanted_id
        else:
            raise ShoalError(f"Unable to find group {want}: no matching entries in group file")
        if gid not in out:
            out.append(gid)
    return out
