"""An image config's field types, checked when an image enters the store (load, pull).

moby decodes a config into typed Go structs (image.Image, container.Config), so a config whose
`Env` is a number or whose `Labels` is a list fails `docker load` and `docker pull` with
json's "cannot unmarshal" error. shoal reads configs as plain JSON where it needs a field, and
such a config reached `shoal run` or a build as a Python traceback (AttributeError,
TypeError...). Checked here once, with Go's rules: null is always allowed (a zero value), a
string list may not hold anything else, and Cmd, Entrypoint and Shell (strslice.StrSlice)
may also be one string."""

from __future__ import annotations

from typing import Any

from shoal.errors import ShoalError

_STRINGS = ("Hostname", "Domainname", "User", "WorkingDir", "StopSignal", "Image", "MacAddress")
_BOOLS = ("AttachStdin", "AttachStdout", "AttachStderr", "Tty", "OpenStdin", "StdinOnce", "ArgsEscaped",
          "NetworkDisabled")
_STRING_LISTS = ("Env", "OnBuild")
_STR_SLICES = ("Cmd", "Entrypoint", "Shell")
_SETS = ("ExposedPorts", "Volumes")   # map[string]struct{}
_HEALTH_INTS = ("Interval", "Timeout", "StartPeriod", "StartInterval", "Retries")
_TOP_STRINGS = ("architecture", "os", "variant", "author", "created", "docker_version", "comment")


def _go_kind(value: Any) -> str:
    """The JSON kind as Go's decoder names it in its error."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


class _Checker:
    def __init__(self, label: str) -> None:
        self.label = label

    def fail(self, where: str, value: Any, want: str) -> ShoalError:
        return ShoalError(f"{self.label}: json: cannot unmarshal {_go_kind(value)} into Go struct field "
                          f"{where} of type {want}")

    def string(self, where: str, value: Any) -> None:
        if value is not None and not isinstance(value, str):
            raise self.fail(where, value, "string")

    def strings(self, where: str, value: Any, one_string_too: bool = False) -> None:
        if value is None or (one_string_too and isinstance(value, str)):
            return
        if not isinstance(value, list):
            raise self.fail(where, value, "[]string")
        for item in value:
            if not isinstance(item, str):
                raise self.fail(where, item, "string")

    def mapping(self, where: str, value: Any, want: str) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(where, value, want)
        return value

    def integer(self, where: str, value: Any, want: str) -> None:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise self.fail(where, value, want)

    def container_config(self, where: str, cfg: Any) -> None:
        cfg = self.mapping(where, cfg, "container.Config")
        for key in _STRINGS:
            self.string(f"{where}.{key}", cfg.get(key))
        for key in _BOOLS:
            if cfg.get(key) is not None and not isinstance(cfg[key], bool):
                raise self.fail(f"{where}.{key}", cfg[key], "bool")
        for key in _STRING_LISTS:
            self.strings(f"{where}.{key}", cfg.get(key))
        for key in _STR_SLICES:
            self.strings(f"{where}.{key}", cfg.get(key), one_string_too=True)
        for key in _SETS:
            for value in self.mapping(f"{where}.{key}", cfg.get(key), "map[string]struct {}").values():
                self.mapping(f"{where}.{key}", value, "struct {}")
        for value in self.mapping(f"{where}.Labels", cfg.get("Labels"), "map[string]string").values():
            self.string(f"{where}.Labels", value)
        self.integer(f"{where}.StopTimeout", cfg.get("StopTimeout"), "int")
        health = self.mapping(f"{where}.Healthcheck", cfg.get("Healthcheck"), "container.HealthConfig")
        self.strings(f"{where}.Healthcheck.Test", health.get("Test"))
        for key in _HEALTH_INTS:
            self.integer(f"{where}.Healthcheck.{key}", health.get(key), "int" if key == "Retries" else "time.Duration")


def check_image_config(config: Any, label: str) -> None:
    """Refuse an image config whose known fields have the wrong JSON types, as moby's decoder
    does; `label` starts the one-line error (which image, from where)."""
    check = _Checker(label)
    if not isinstance(config, dict):
        raise check.fail("image.Image", config, "image.Image")
    for key in _TOP_STRINGS:
        check.string(f"Image.{key}", config.get(key))
    check.container_config("Image.config", config.get("config"))
    check.container_config("Image.container_config", config.get("container_config"))
    rootfs = check.mapping("Image.rootfs", config.get("rootfs"), "image.RootFS")
    check.strings("Image.rootfs.diff_ids", rootfs.get("diff_ids"))
    history = config.get("history")
    if history is not None:
        if not isinstance(history, list):
            raise check.fail("Image.history", history, "[]image.History")
        for entry in history:
            entry = check.mapping("Image.history", entry, "image.History")
            for key in ("created", "author", "created_by", "comment"):
                check.string(f"Image.history.{key}", entry.get(key))
            if entry.get("empty_layer") is not None and not isinstance(entry["empty_layer"], bool):
                raise check.fail("Image.history.empty_layer", entry["empty_layer"], "bool")


def normalize_str_slices(config: Any) -> Any:
    """Cmd, Entrypoint and Shell given as one string become a list of it, in the parsed config
    only (its bytes, and so the image ID, stay): moby's StrSlice decodes them so, and inspect
    shows the list. Read as a string, `list()` cut "echo hi" into letters and ran "e"."""
    if not isinstance(config, dict):
        return config
    for section in ("config", "container_config"):
        cfg = config.get(section)
        if isinstance(cfg, dict):
            for key in _STR_SLICES:
                if isinstance(cfg.get(key), str):
                    cfg[key] = [cfg[key]]
    return config
