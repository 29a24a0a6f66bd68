"""Build arguments with moby's scoping rules (daemon/builder/dockerfile/buildargs.go): an ARG
is visible from its declaration to the end of its stage, a stage must re-declare a meta ARG
(one before the first FROM) to see it, --build-arg values override defaults, and the proxy
variables are allowed without a declaration."""

from __future__ import annotations

from dataclasses import dataclass, field

BUILTIN_ALLOWED = (
    "HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy",
    "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy",
)


@dataclass
class BuildArgs:
    from_options: dict[str, str | None]
    allowed: dict[str, str | None] = field(default_factory=dict)
    meta: dict[str, str | None] = field(default_factory=dict)
    referenced: set[str] = field(default_factory=set)

    def clone_for_stage(self) -> BuildArgs:
        """What a new stage starts with: meta args known, nothing allowed yet."""
        return BuildArgs(self.from_options, {}, dict(self.meta), set(self.referenced))

    def add_arg(self, key: str, value: str | None) -> None:
        self.allowed[key] = value
        self.referenced.add(key)

    def add_meta_arg(self, key: str, value: str | None) -> None:
        self.meta[key] = value

    def _get(self, key: str, mapping: dict[str, str | None]) -> tuple[str, bool]:
        default = mapping.get(key)
        exists = key in mapping
        option = self.from_options.get(key)
        if key in self.from_options and option is not None:
            return option, True
        if default is None:
            meta = self.meta.get(key)
            if meta is not None:
                return meta, True
            return "", False
        return default, exists

    def _all(self, mapping: dict[str, str | None]) -> dict[str, str]:
        out: dict[str, str] = {}
        for key in list(mapping) + [k for k in BUILTIN_ALLOWED if k not in mapping]:
            value, ok = self._get(key, mapping)
            if ok:
                out[key] = value
        return out

    def all_allowed(self) -> dict[str, str]:
        return self._all(self.allowed)

    def all_meta(self) -> dict[str, str]:
        return self._all(self.meta)

    def filter_allowed(self, env: list[str]) -> list[str]:
        """Allowed args as K=V, minus those the image's Env already sets (Env wins)."""
        keys = {e.partition("=")[0] for e in env}
        return [f"{k}={v}" for k, v in sorted(self.all_allowed().items()) if k not in keys]

    def is_referenced_or_not_builtin(self, key: str) -> bool:
        return key in self.allowed or key not in BUILTIN_ALLOWED

    def merge_referenced(self, other: BuildArgs) -> None:
        self.referenced |= other.referenced

    def unused(self) -> list[str]:
        return sorted(k for k in self.from_options if k not in self.referenced and k not in BUILTIN_ALLOWED)
