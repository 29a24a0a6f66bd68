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


def resolve_user(spec: str, passwd: str | None, group: str | None) -> ExecUser:
    user_part, _, group_part = (spec or "0").partition(":")
    user_part = user_part or "0"
    users = _parse(passwd, 7)
    groups = _parse(group, 4)

    entry = next((u for u in users if u[0] == user_part), None)
    if entry is None and user_part.isdigit():
        entry = next((u for u in users if u[2] == user_part), None)
    if entry is None:
        if not user_part.isdigit():
            raise ShoalError(f"unable to find user {user_part}: no matching entries in passwd file")
        uid, gid, home, name = int(user_part), 0, "/", ""
    else:
        uid, gid, home, name = int(entry[2]), int(entry[3] or 0), entry[5] or "/", entry[0]

    additional: list[int] = []
    if group_part:
        match = next((g for g in groups if g[0] == group_part), None)
        if match is None and group_part.isdigit():
            gid = int(group_part)
        elif match is None:
            raise ShoalError(f"unable to find group {group_part}: no matching entries in group file")
        else:
            gid = int(match[2])
    elif name:
        # Supplementary groups only when no group was asked for, as moby does.
        for g in groups:
            members = [m for m in g[3].split(",") if m]
            if name in members and g[2].isdigit() and int(g[2]) != gid:
                additional.append(int(g[2]))
    return ExecUser(uid=uid, gid=gid, additional_gids=additional, home=home)


def additional_groups(wanted: list[str], group: str | None) -> list[int]:
    """`--group-add` / a service's Groups, as moby/sys/user GetAdditionalGroups: a name or GID
    found in the image's /etc/group, else a number taken as a GID; anything else is an error."""
    groups = _parse(group, 4)
    out: list[int] = []
    for want in wanted:
        match = next((g for g in groups if (g[0] == want or g[2] == want) and g[2].isdigit()), None)
        if match is not None:
            gid = int(match[2])
        elif want.isdigit():
            gid = int(want)
            if gid > 2**31 - 1:
                raise ShoalError("user: cannot set uid/gid to a value outside the allowed range")
        else:
            raise ShoalError(f"Unable to find group {want}: no matching entries in group file")
        if gid not in out:
            out.append(gid)
    return out
