"""`shoal build`: runs a parsed Dockerfile against the image store, the way Docker's classic
builder does (moby daemon/builder/dockerfile): one image per step, committed untagged, a layer
for each step that changes files, a cache probe before every step, and its output lines.

Step output:
    Step 2/7 : WORKDIR /app
     ---> Running in 56562eb9c685
    Removing intermediate container 56562eb9c685
     ---> 9e06c3c5d3f7
"""

from __future__ import annotations

import copy
import datetime as _dt
import os
import platform
import posixpath
import re
import signal as _signal
import stat
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from shoal.build import dockerfile as dfmod
from shoal.build import fs
from shoal.build.buildargs import BuildArgs
from shoal.build.cache import BuildCache, step_key
from shoal.build.context import BuildContext, contains_wildcards
from shoal.build.dockerfile import (
    ArgCommand, Command, CopyCommand, Dockerfile, HealthcheckCommand, KeyValueCommand,
    ListCommand, OnbuildCommand, ShellFormCommand, Stage, WordCommand,
)
from shoal.build.shell import Lex, ShellError, env_map
from shoal.build.sources import ContextSource, DirSource
from shoal import paths
from shoal.gofmt import quote as _go_quote
from shoal.units import human_size
from shoal.errors import InvalidArgument, NotFound, ShoalError
from shoal.ids import new_id, short_id

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_SHELL = ["/bin/sh", "-c"]
HEREDOC_DIR = "/dev/pipes"   # where a RUN heredoc with a #! is mounted read-only (BuildKit's place)


class BuildFailed(ShoalError):
    """A step failed; printed bare, as Docker prints the daemon's error in the build stream."""


@dataclass
class BuildOptions:
    context_dir: Path
    dockerfile: Path | None = None
    tags: list[str] = field(default_factory=list)
    build_args: dict[str, str | None] = field(default_factory=dict)
    target: str = ""
    no_cache: bool = False
    pull: bool = False
    quiet: bool = False
    network: str = "default"   # RUN steps: default (own namespace, NAT), host or none


@dataclass
class BuildResult:
    image_id: str
    tags: list[str]


# --- Go-style formatting of history comments --------------------------------------------------

def _go_q_list(items: list[str] | None) -> str:
    return "[" + " ".join(_go_quote(i) for i in (items or [])) + "]"


def _go_v_list(items: list[str] | None) -> str:
    return "[" + " ".join(items or []) + "]"


def _go_duration(ns: int) -> str:
    if ns == 0:
        return "0s"
    if ns < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if ns >= size:
                return f"{ns / size:g}{unit}"
    seconds = ns / 1e9
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    text = ""
    if h:
        text += f"{int(h)}h"
    if h or m:
        text += f"{int(m)}m"
    return text + f"{s:g}s"


def _now() -> str:
    t = time.time_ns()
    sec, nanos = divmod(t, 1_000_000_000)
    base = _dt.datetime.fromtimestamp(sec, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    frac = f"{nanos:09d}".rstrip("0")
    return base + (f".{frac}" if frac else "") + "Z"


def _host_arch() -> str:
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}.get(platform.machine(), platform.machine())


def _signal_ok(text: str) -> bool:
    # ASCII digits only: str.isdigit() takes "²", which int() then refuses.
    if re.fullmatch(r"[0-9]{1,3}", text):
        return 0 < int(text) < 65
    name = text.upper().removeprefix("SIG")
    return (name.isascii() and name.isalnum() and hasattr(_signal, "SIG" + name)) \
        or re.fullmatch(r"RTM(IN|AX)([+-][0-9]{1,2})?", name) is not None


def _shown(text: str, limit: int = 64) -> str:
    """A user's value in a one-line error: control characters escaped, long ones cut."""
    shown = text if len(text) <= limit else text[:limit] + "..."
    return shown.encode("unicode_escape").decode("ascii") if not shown.isprintable() else shown


def check_stop_signal(text: str) -> None:
    if not _signal_ok(text):
        raise BuildFailed(f"Invalid signal: {_shown(text)}")


_PORT_RE = re.compile(r"([0-9]{1,5})(?:-([0-9]{1,5}))?")


def _expose_ports(ports: list[str]) -> list[str]:
    out: list[str] = []
    for raw in ports:
        parts = raw.split(":")
        container = parts[-1]
        port, _, proto = container.partition("/")
        proto = (proto or "tcp").lower()
        if not port:
            raise BuildFailed(f"no port specified: {_shown(raw)}<empty>")
        if proto not in ("tcp", "udp", "sctp"):
            raise BuildFailed(f"invalid proto: {_shown(proto)}")
        m = _PORT_RE.fullmatch(port)   # at most 5 ASCII digits: int() never sees 5,000 of them
        if not m:
            raise BuildFailed(f"invalid containerPort: {_shown(port)}")
        start = int(m.group(1))
        end = int(m.group(2) or start)
        if end < start or end > 65535:
            raise BuildFailed(f"invalid containerPort: {_shown(port)}")
        out += [f"{p}/{proto}" for p in range(start, end + 1)]
    return out


def _check_path(path: str) -> None:
    if "\x00" in path:   # no system call takes it: an error here rather than a ValueError later
        raise BuildFailed(f"invalid path {_shown(path)}: contains a NUL byte")


def normalize_dest(workdir: str, requested: str) -> str:
    """moby normalizeDest: relative destinations are under WORKDIR; a trailing / is kept."""
    _check_path(requested)
    if requested.startswith("/"):
        return requested
    dest = posixpath.join("/", workdir or "/", requested)
    dest = posixpath.normpath(dest)
    if requested.endswith("/") or requested in (".", "./"):
        dest = dest.rstrip("/") + "/"
    return dest


def normalize_workdir(current: str, requested: str) -> str:
    if not requested:
        raise BuildFailed("cannot normalize nothing")
    _check_path(requested)
    path = requested if requested.startswith("/") else posixpath.join(current or "/", requested)
    return posixpath.normpath(path) if path != "/" else "/"


def _is_url(s: str) -> bool:
    return s.startswith("http://") or s.startswith("https://")


# --- state -----------------------------------------------------------------------------------

@dataclass
class _State:
    """moby dispatchState: the image so far and the config the next step starts from."""

    args: BuildArgs
    image: Any = None               # shoal.image.store.Image or None (scratch / nothing yet)
    run_config: dict[str, Any] = field(default_factory=dict)
    base_config: dict[str, Any] = field(default_factory=dict)   # the whole config of `image`
    stage_name: str = ""
    cmd_set: bool = False
    author: str = ""

    @property
    def image_id(self) -> str:
        return self.image.id if self.image is not None else ""

    @property
    def layers(self) -> list[Any]:
        return list(self.image.layers) if self.image is not None else []

    def lowerdirs(self) -> list[Path]:
        return self.image.rootfs_dirs() if self.image is not None else []

    def env(self) -> list[str]:
        return list(self.run_config.get("Env") or [])

    def shell(self) -> list[str]:
        return list(self.run_config.get("Shell") or DEFAULT_SHELL)

    def set_image(self, image: Any) -> None:
        self.image = image
        self.base_config = image.config if image is not None else {}
        self.run_config = _normalized_run_config((self.base_config or {}).get("config"))
        if image is not None:
            self.run_config["Image"] = image.id


def _normalized_run_config(cfg: dict[str, Any] | None) -> dict[str, Any]:
    """The container config in the shape Docker writes it into an image."""
    out: dict[str, Any] = {
        "Hostname": "", "Domainname": "", "User": "", "AttachStdin": False, "AttachStdout": False,
        "AttachStderr": False, "Tty": False, "OpenStdin": False, "StdinOnce": False, "Env": None,
        "Cmd": None, "Image": "", "Volumes": None, "WorkingDir": "", "Entrypoint": None,
        "OnBuild": None, "Labels": None,
    }
    for k, v in (cfg or {}).items():
        out[k] = copy.deepcopy(v)
    return out


class _Writer:
    """Docker's output stream: text lines and raw RUN output on one binary stream."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        self.stream.write(text.encode(errors="surrogateescape"))   # a file name as its bytes
        self.stream.flush()
        return len(text)

    def line(self, text: str) -> None:
        self.write(text + "\n")

    def flush(self) -> None:
        self.stream.flush()


# --- the builder ------------------------------------------------------------------------------

class Builder:
    def __init__(self, store: Any, out: BinaryIO) -> None:
        self.store = store
        self.out = _Writer(out)
        self.raw_out = out
        self.cache = BuildCache(Path(store.root) / "build-cache.json")
        self.stage_images: list[str] = []
        self.stage_names: dict[str, str] = {}
        self.opts = BuildOptions(Path("."))
        self.context: BuildContext | None = None
        self.scratch = Path(store.root) / "build-tmp"
        self.lex = Lex()

    # entry point -------------------------------------------------------------------------------

    def build(self, opts: BuildOptions) -> BuildResult:
        from shoal.image import reference

        self.opts = opts
        tags = []
        for t in opts.tags:
            try:
                tags.append(reference.parse(t))
            except InvalidArgument as exc:
                raise InvalidArgument(f'invalid argument "{t}" for "-t, --tag" flag: {exc}') from None
            except ShoalError as exc:
                raise InvalidArgument(f'invalid argument "{t}" for "-t, --tag" flag: {exc}') from None
        context_dir = Path(opts.context_dir)
        if not context_dir.is_dir():
            raise ShoalError(f'unable to prepare context: path "{opts.context_dir}" not found')
        dockerfile_path = Path(opts.dockerfile) if opts.dockerfile else context_dir / "Dockerfile"
        if not dockerfile_path.is_file():
            raise ShoalError("unable to prepare context: unable to evaluate symlinks in Dockerfile path: "
                             f"lstat {dockerfile_path.absolute()}: no such file or directory")
        try:
            rel = os.path.relpath(dockerfile_path.resolve(), context_dir.resolve())
        except ValueError:
            rel = ""
        rel_in_context = rel if not rel.startswith("..") else None
        display_name = str(opts.dockerfile) if opts.dockerfile else "Dockerfile"

        self.context = BuildContext.load(context_dir, rel_in_context)
        size = self.context.tar_size()
        self.out.line(f"Sending build context to Docker daemon {human_size(size, 4):>8}")
        self.context.drop_build_files(rel_in_context)

        df = dfmod.parse(dockerfile_path.read_text(errors="replace"), display_name)
        self.lex = Lex(df.escape)
        stages = df.stages
        if opts.target:
            idx = df.stage_index(opts.target)
            if idx is None:
                raise ShoalError(f'target stage "{opts.target}" could not be found')
            stages = stages[: idx + 1]

        from shoal.build import network as build_network
        from shoal.runtime import build_step

        opts.network = build_network.check_mode(opts.network)
        paths.ensure_private_dir(self.scratch)
        # What a killed build left (issue 10 item 13) goes before this build adds its own.
        build_step.collect_leftovers()
        build_network.collect_leftovers()
        fs.collect_scratch(self.scratch, build_step.owner_alive)
        scratch = Path(tempfile.mkdtemp(prefix=f"b{build_step.owner_tag()}-", dir=self.scratch))
        self.scratch_run = scratch
        try:
            with build_network.build_in_use(opts.network):
                state = self._run(df, stages)
        finally:
            fs.remove_tree(scratch)
        if state.image is None:
            raise BuildFailed("No image was generated. Is your Dockerfile empty?")
        image_id = state.image_id
        unused = state.args.unused()
        if unused:
            self.out.line(f"[Warning] One or more build-args [{' '.join(unused)}] were not consumed")
        self.out.line(f"Successfully built {short_id(image_id)}")
        tagged = []
        for ref in tags:
            self.store.tag(image_id, str(ref))
            self.out.line(f"Successfully tagged {ref.familiar()}")
            tagged.append(ref.familiar())
        return BuildResult(image_id, tagged)

    def _run(self, df: Dockerfile, stages: list[Stage]) -> _State:
        total = len(df.meta_args) + len(stages) + sum(len(s.commands) for s in stages)
        step = 0
        args = BuildArgs(dict(self.opts.build_args))
        for meta in df.meta_args:
            step += 1
            self.out.line(f"Step {step}/{total} : {meta.code}")
            env = args.all_allowed()
            for key, value in meta.args:
                key = self._expand(key, env)
                value = self._expand(value, env) if value is not None else None
                args.add_arg(key, value)
                args.add_meta_arg(key, value)
        state = _State(args=args)
        for stage in stages:
            if stage.name and stage.name in self.stage_names:
                raise BuildFailed(f"{stage.name} stage name already used")
            state = _State(args=args.clone_for_stage(), stage_name=stage.name)
            step += 1
            self.out.line(f"Step {step}/{total} : {stage.code}")
            self._init_stage(state, stage)
            self.out.line(f" ---> {short_id(state.image_id) if state.image_id else ''}")
            for cmd in stage.commands:
                step += 1
                self.out.line(f"Step {step}/{total} : {cmd.code}")
                self._dispatch(state, cmd)
                self.out.line(f" ---> {short_id(state.image_id) if state.image_id else ''}")
            args.merge_referenced(state.args)
            if stage.name:
                self.stage_names[stage.name] = state.image_id
            self.stage_images.append(state.image_id)
        state.args = args
        return state

    # FROM ---------------------------------------------------------------------------------------

    def _init_stage(self, state: _State, stage: Stage) -> None:
        name = self._expand(stage.base, state.args.all_meta())
        if not name:
            raise BuildFailed(f"base name ({stage.base}) should not be blank")
        image = self._image_or_stage(name)
        state.set_image(image)
        env = state.run_config.get("Env") or []
        if not any(e.partition("=")[0] == "PATH" for e in env):
            state.run_config["Env"] = list(env) + [f"PATH={DEFAULT_PATH}"]
        triggers = list(state.run_config.get("OnBuild") or [])
        if triggers:
            state.run_config["OnBuild"] = None
            self.out.line(f"# Executing {len(triggers)} build trigger{'s' if len(triggers) > 1 else ''}")
            for trigger in triggers:
                cmd = dfmod.parse_onbuild_trigger(trigger)
                self._dispatch(state, cmd)

    def _image_or_stage(self, name: str) -> Any:
        if name.lower() in self.stage_names:
            image_id = self.stage_names[name.lower()]
            return self.store.get(image_id) if image_id else None
        if name == "scratch":
            return None
        return self._pull_or_get(name)

    def _pull_or_get(self, name: str) -> Any:
        from shoal.image import reference

        try:
            ref = reference.parse(name)
        except ShoalError as exc:
            raise BuildFailed(str(exc)) from None
        if not self.opts.pull:
            try:
                return self.store.resolve(name)
            except NotFound:
                pass
        try:
            from shoal.image import registry  # type: ignore[attr-defined]
        except ImportError:
            if self.opts.pull:
                try:
                    return self.store.resolve(name)
                except NotFound:
                    pass
            raise BuildFailed(f"pull access denied for {ref.familiar_name()}, repository does not exist "
                              "or may require 'docker login': denied: requested access to the resource is denied") from None
        try:
            return registry.pull(self.store, name, out=self.out)  # type: ignore[arg-type]
        except ShoalError as exc:
            raise BuildFailed(str(exc)) from None

    # dispatch -----------------------------------------------------------------------------------

    def _expand(self, word: str, env: dict[str, str]) -> str:
        try:
            return self.lex.process_word(word, env)
        except ShellError as exc:
            raise BuildFailed(str(exc)) from None

    def _dispatch(self, st: _State, cmd: Command) -> None:
        env = env_map(st.env() + st.args.filter_allowed(st.env()))
        x = lambda w: self._expand(w, env)  # noqa: E731
        rc = st.run_config
        if isinstance(cmd, KeyValueCommand) and cmd.name == "env":
            pairs = [(x(k), x(v)) for k, v in cmd.pairs]
            current = list(rc.get("Env") or [])
            for k, v in pairs:
                for i, e in enumerate(current):
                    if e.partition("=")[0] == k:
                        current[i] = f"{k}={v}"
                        break
                else:
                    current.append(f"{k}={v}")
            rc["Env"] = current
            self._commit(st, "ENV " + " ".join(f"{k}={v}" for k, v in pairs))
        elif isinstance(cmd, KeyValueCommand):   # LABEL
            pairs = [(x(k), x(v)) for k, v in cmd.pairs]
            labels = dict(rc.get("Labels") or {})
            labels.update(pairs)
            rc["Labels"] = labels
            self._commit(st, "LABEL " + " ".join(f"{k}={v}" for k, v in pairs))
        elif isinstance(cmd, ArgCommand):
            parts = []
            for key, value in cmd.args:
                key = x(key)
                value = x(value) if value is not None else None
                parts.append(key if value is None else f"{key}={value}")
                st.args.add_arg(key, value)
            self._commit(st, "ARG " + " ".join(parts))
        elif isinstance(cmd, WordCommand) and cmd.name == "maintainer":
            st.author = cmd.value
            self._commit(st, "MAINTAINER " + cmd.value)
        elif isinstance(cmd, WordCommand) and cmd.name == "user":
            rc["User"] = x(cmd.value)
            self._commit(st, f"USER {rc['User']}")
        elif isinstance(cmd, WordCommand) and cmd.name == "stopsignal":
            sig = x(cmd.value)
            check_stop_signal(sig)
            rc["StopSignal"] = sig
            self._commit(st, f"STOPSIGNAL {sig}")
        elif isinstance(cmd, WordCommand):       # WORKDIR
            self._workdir(st, x(cmd.value))
        elif isinstance(cmd, ListCommand) and cmd.name == "expose":
            words: list[str] = []
            for p in cmd.values:
                try:
                    words += self.lex.process_words(p, env)
                except ShellError as exc:
                    raise BuildFailed(str(exc)) from None
            ports = dict(rc.get("ExposedPorts") or {})
            for p in _expose_ports(words):
                ports[p] = {}
            rc["ExposedPorts"] = ports
            self._commit(st, "EXPOSE " + " ".join(words))
        elif isinstance(cmd, ListCommand) and cmd.name == "volume":
            vols = dict(rc.get("Volumes") or {})
            values = [x(v) for v in cmd.values]
            for v in values:
                if not v:
                    raise BuildFailed("VOLUME specified can not be an empty string")
                vols[v] = {}
            rc["Volumes"] = vols
            self._commit(st, f"VOLUME {_go_v_list(values)}")
        elif isinstance(cmd, ListCommand):       # SHELL
            rc["Shell"] = list(cmd.values)
            self._commit(st, f"SHELL {_go_v_list(cmd.values)}")
        elif isinstance(cmd, HealthcheckCommand):
            old = rc.get("Healthcheck")
            if old and old.get("Test") and old["Test"][0] != "NONE":
                self.out.line(f"Note: overriding previous HEALTHCHECK: {_go_v_list(old['Test'])}")
            hc: dict[str, Any] = {"Test": cmd.test}
            for key, value in (("Interval", cmd.interval), ("Timeout", cmd.timeout),
                               ("StartPeriod", cmd.start_period), ("StartInterval", cmd.start_interval),
                               ("Retries", cmd.retries)):
                if value:
                    hc[key] = value
            rc["Healthcheck"] = hc
            self._commit(st, "HEALTHCHECK &{Test:" + _go_v_list(cmd.test)
                         + f" Interval:{_go_duration(cmd.interval)} Timeout:{_go_duration(cmd.timeout)}"
                         + f" StartPeriod:{_go_duration(cmd.start_period)}"
                         + f" StartInterval:{_go_duration(cmd.start_interval)} Retries:{cmd.retries}}}")
        elif isinstance(cmd, OnbuildCommand):
            rc["OnBuild"] = list(rc.get("OnBuild") or []) + [cmd.expression]
            self._commit(st, "ONBUILD " + cmd.expression)
        elif isinstance(cmd, ShellFormCommand) and cmd.name == "run":
            self._run_step(st, cmd)
        elif isinstance(cmd, ShellFormCommand):  # CMD, ENTRYPOINT
            argv = self._cmdline(st, cmd)
            if cmd.name == "cmd":
                rc["Cmd"] = argv
                self._commit(st, f"CMD {_go_q_list(argv)}")
                if cmd.cmdline:
                    st.cmd_set = True
            else:
                rc["Entrypoint"] = argv
                if not st.cmd_set:
                    rc["Cmd"] = None
                self._commit(st, f"ENTRYPOINT {_go_q_list(argv)}")
        elif isinstance(cmd, CopyCommand):
            self._copy(st, cmd, env)
        else:  # pragma: no cover - the parser produces nothing else
            raise BuildFailed(f"unsupported command: {cmd.name}")

    def _cmdline(self, st: _State, cmd: ShellFormCommand) -> list[str] | None:
        if cmd.cmdline is None:
            return None
        if cmd.prepend_shell:
            return st.shell() + [" ".join(cmd.cmdline)] if cmd.cmdline else st.shell() + [""]
        return list(cmd.cmdline)

    # commits ------------------------------------------------------------------------------------

    def _probe(self, st: _State, key: str) -> bool:
        if self.opts.no_cache:
            return False
        cached = self.cache.get(key)
        if not cached:
            return False
        try:
            image = self.store.get(cached)
        except NotFound:
            self.cache.forget({cached})
            return False
        self.out.line(" ---> Using cache")
        st.set_image(image)
        return True

    def _new_image(self, st: _State, created_by: str, layer: Any | None, key: str) -> None:
        parent_cfg = st.base_config or {}
        now = _now()
        cfg: dict[str, Any] = {
            "architecture": parent_cfg.get("architecture") or _host_arch(),
            "os": parent_cfg.get("os") or "linux",
        }
        if parent_cfg.get("variant"):
            cfg["variant"] = parent_cfg["variant"]
        if st.author:
            cfg["author"] = st.author
        run_config = copy.deepcopy(st.run_config)
        run_config["Image"] = st.image_id
        cfg["config"] = run_config
        cfg["created"] = now
        entry: dict[str, Any] = {"created": now, "created_by": created_by}
        if st.author:
            entry["author"] = st.author
        if layer is None:
            entry["empty_layer"] = True
        cfg["history"] = list(parent_cfg.get("history") or []) + [entry]
        layers = st.layers + ([layer] if layer is not None else [])
        image = self.store.create_image(cfg, layers, parent=st.image_id)
        self.cache.put(key, image.id)
        st.set_image(image)

    def _key(self, st: _State, kind: str, **extra: Any) -> str:
        config = copy.deepcopy(st.run_config)
        config["Image"] = st.image_id
        return step_key(st.image_id, {"kind": kind, "config": config, **extra})

    def _commit(self, st: _State, comment: str) -> None:
        """A metadata-only step: a new config, no layer (moby builder.commit)."""
        created_by = " ".join(st.shell() + ["#(nop) ", comment])
        key = self._key(st, "meta", created_by=created_by, author=st.author)
        if self._probe(st, key):
            return
        cid = short_id(new_id())
        self.out.line(f" ---> Running in {cid}")
        self._new_image(st, created_by, None, key)
        self.out.line(f"Removing intermediate container {cid}")

    @contextmanager
    def _upper(self) -> Iterator[Path]:
        upper = Path(tempfile.mkdtemp(prefix="upper-", dir=self.scratch_run))
        os.chmod(upper, 0o755)
        try:
            yield upper
        finally:
            fs.remove_tree(upper)

    def _layer(self, upper: Path) -> Any | None:
        if fs.dir_is_empty(upper):
            return None
        return self.store.layer_from_dir(upper)

    # WORKDIR ------------------------------------------------------------------------------------

    def _workdir(self, st: _State, path: str) -> None:
        workdir = normalize_workdir(st.run_config.get("WorkingDir") or "", path)
        st.run_config["WorkingDir"] = workdir
        created_by = " ".join(st.shell() + [f"#(nop) WORKDIR {workdir}"])
        key = self._key(st, "workdir", created_by=created_by)
        if self._probe(st, key):
            return
        cid = short_id(new_id())
        self.out.line(f" ---> Running in {cid}")
        with self._upper() as upper:
            with fs.writable_root(st.lowerdirs(), upper, self.scratch_run) as root:
                try:
                    fs.Copier(root, (0, 0), None).mkdirs(workdir)
                except (fs.CopyError, OSError) as exc:
                    raise BuildFailed(f"WORKDIR {workdir}: {exc}") from None
            layer = self._layer(upper)
        self._new_image(st, created_by, layer, key)
        self.out.line(f"Removing intermediate container {cid}")

    # RUN ----------------------------------------------------------------------------------------

    def _run_step(self, st: _State, cmd: ShellFormCommand) -> None:
        script: tuple[str, str] | None = None   # (name, data) of a heredoc with a shebang
        if cmd.files:
            args = cmd.cmdline or []
            if len(args) != 1 or not cmd.prepend_shell:
                raise BuildFailed(f"parsing produced an invalid run command: {args}")
            heredoc = dfmod.parse_heredoc(args[0])
            if heredoc is not None:
                data = cmd.files[0].data()
                if data.startswith("#!"):
                    try:
                        dfmod.check_heredoc_file_name(cmd.files[0].name)
                    except ValueError as exc:
                        raise BuildFailed(str(exc)) from None
                    script = (cmd.files[0].name, data)
                    argv = [f"{HEREDOC_DIR}/{cmd.files[0].name}"]
                else:
                    argv = st.shell() + [data]
            else:
                text = args[0]
                for f in cmd.files:
                    text += "\n" + f.content + f.name
                argv = st.shell() + [text]
        else:
            argv = self._cmdline(st, cmd) or []
        build_env = st.args.filter_allowed(st.env())
        save_cmd = list(argv)
        if build_env:
            shown = sorted(e for e in build_env if st.args.is_referenced_or_not_builtin(e.partition("=")[0]))
            save_cmd = [f"|{len(shown)}"] + shown + argv
        key = self._key(st, "run", cmd=save_cmd, script=script)
        if self._probe(st, key):
            return
        from shoal.runtime import run_build_step  # type: ignore[attr-defined]

        cid = short_id(new_id())
        self.out.line(f" ---> Running in {cid}")
        with self._upper() as upper:
            self.out.flush()
            from shoal.build import network as build_network

            with build_network.step_netns(self.opts.network, cid) as netns:
                code = run_build_step(
                    lowerdirs=st.lowerdirs(), upperdir=upper, argv=argv,
                    env=st.env() + build_env, user=st.run_config.get("User") or "0",
                    workdir=st.run_config.get("WorkingDir") or "/", stdout=self.raw_out,
                    script=script, network="host" if self.opts.network == "host" else "none",
                    netns=netns,
                )
            if code != 0:
                raise BuildFailed(f"The command '{' '.join(argv)}' returned a non-zero code: {code}")
            try:
                fs.check_depth(upper)
            except fs.CopyError as exc:
                raise BuildFailed(f"The command '{' '.join(argv)}' made a layer shoal cannot store: {exc}") from None
            fs.prune_copied_up_dirs(upper, st.lowerdirs())
            layer = self._layer(upper)
        self._new_image(st, " ".join(save_cmd), layer, key)
        self.out.line(f"Removing intermediate container {cid}")

    # COPY / ADD ---------------------------------------------------------------------------------

    def _copy(self, st: _State, cmd: CopyCommand, env: dict[str, str]) -> None:
        name = cmd.name.upper()
        is_add = cmd.name == "add"
        if cmd.exclude:
            raise BuildFailed(f"{name} --exclude is not supported by shoal build")
        if cmd.parents:   # was taken and ignored: the files landed without their parent directories
            raise BuildFailed(f"{name} --parents is not supported by shoal build")
        sources = [self._expand(s, env) for s in cmd.sources]
        dest = self._expand(cmd.dest, env)
        chown = self._expand(cmd.chown, env) if cmd.chown else ""
        chmod = self._expand(cmd.chmod, env) if cmd.chmod else ""
        from_name = self._expand(cmd.from_stage, env) if cmd.from_stage else ""
        raw_lex = Lex(self.lex.escape, raw_quotes=True, raw_escapes=True)
        raw_lex.expanded = self.lex.expanded  # heredocs draw on the build's expansion budget too
        contents = []
        for c in cmd.contents:
            data = c.data
            if c.expand:
                try:
                    data = raw_lex.process_word(data, env)
                except ShellError as exc:
                    raise BuildFailed(str(exc)) from None
                finally:
                    self.lex.expanded = raw_lex.expanded
            contents.append((c.path, data))
        mode = fs.parse_chmod(chmod) if chmod else None
        # buildkit verifies an ADD'ed URL against --checksum; shoal took the flag and ignored
        # it, so a download that was not the file pinned went into the image unnoticed
        checksum = self._expand(cmd.checksum, env) if is_add and cmd.checksum else ""
        if checksum:
            algo, _, hexpart = checksum.partition(":")
            if _DIGEST_HEX.get(algo) != len(hexpart) or not re.fullmatch(r"[0-9a-f]+", hexpart):
                raise BuildFailed(f"invalid checksum digest format: {checksum}")
            if not sources or not all(_is_url(s) for s in sources):
                raise BuildFailed("checksum can't be specified for non-HTTP(S) sources")

        with ExitStack() as stack:
            if from_name:
                image = self._copy_from_image(from_name)
                lowers = image.rootfs_dirs() if image is not None else []
                root = stack.enter_context(fs.readonly_root(lowers, self.scratch_run))
                source: ContextSource | DirSource = DirSource(root, image.id if image is not None else "scratch")
            else:
                assert self.context is not None
                source = ContextSource(self.context)
            infos = self._source_infos(source, sources, name, is_add, dest, stack, checksum)
            infos += [("content", path, data) for path, data in contents]
            if not infos:
                raise BuildFailed(f"{name} failed: no source files were specified")
            if len(infos) > 1 and not dest.endswith("/"):
                raise BuildFailed(f"When using {name} with more than one source file, "
                                  f"the destination must be a directory and end with a /")
            hashes = [i[2] if i[0] != "content" else "content:" + _sha(i[2]) for i in infos]
            src_hash = hashes[0] if len(hashes) == 1 else "multi:" + _sha(",".join(hashes))
            chown_comment = f"--chown={chown} " if chown else ""
            created_by = " ".join(st.shell() + [f"#(nop) {name} {chown_comment}{src_hash} in {dest} "])
            key = self._key(st, "copy", created_by=created_by, chmod=chmod)
            if self._probe(st, key):
                return
            dest_path = normalize_dest(st.run_config.get("WorkingDir") or "", dest)
            with self._upper() as upper:
                with fs.writable_root(st.lowerdirs(), upper, self.scratch_run) as root:
                    try:
                        owner = fs.parse_chown(chown, root) if chown else (None if from_name else (0, 0))
                        self._do_copy(source, infos, root, dest_path, fs.Copier(root, owner, mode),
                                      is_add, cmd.unpack)
                    except fs.CopyError as exc:
                        raise BuildFailed(f"{name} failed: {exc}") from None
                    except OSError as exc:
                        raise BuildFailed(f"{name} failed: failed to copy files: {exc}") from None
                layer = self._layer(upper)
            self._new_image(st, created_by, layer, key)

    def _copy_from_image(self, name: str) -> Any:
        lowered = name.lower()
        if lowered in self.stage_names:
            image_id = self.stage_names[lowered]
            return self.store.get(image_id) if image_id else None
        if name.isdigit():
            ix = int(name)
            if ix == len(self.stage_images):
                raise BuildFailed(f"invalid from flag value {name}: refers to current build stage")
            if ix > len(self.stage_images):
                raise BuildFailed(f"invalid from flag value {name}: index out of bounds")
            image_id = self.stage_images[ix]
            return self.store.get(image_id) if image_id else None
        if name == "scratch":
            return None
        try:
            return self._pull_or_get(name)
        except BuildFailed as exc:
            raise BuildFailed(f"invalid from flag value {name}: {exc}") from None

    def _source_infos(self, source: ContextSource | DirSource, sources: list[str], name: str,
                      is_add: bool, dest: str, stack: ExitStack, checksum: str = "") -> list[tuple[str, str, str]]:
        """(kind, path, hash) per source, as moby calcCopyInfo: wildcards match whole paths."""
        infos: list[tuple[str, str, str]] = []
        for orig in sources:
            if _is_url(orig):
                if not is_add:
                    raise BuildFailed(f"{name} failed: source can't be a URL for COPY")
                infos.append(self._download(orig, dest, stack, checksum))
                continue
            _check_path(orig)
            path = orig.lstrip("/")
            path = path[2:] if path.startswith("./") else path
            candidates = [path]
            if contains_wildcards(path):
                candidates = source.glob(posixpath.normpath(path))
                if not candidates:
                    continue
            for rel in candidates:
                norm = posixpath.normpath(rel) if rel else "."
                norm = "" if norm == "." else norm
                resolved = source.resolve(norm)
                st = source.stat(resolved) if resolved is not None else None
                if st is None:
                    if source.is_context:
                        raise BuildFailed(f"{name} failed: file not found in build context or excluded by "
                                          f".dockerignore: stat {rel}: file does not exist")
                    raise BuildFailed(f"{name} failed: stat {rel}: file does not exist")
                kind = "dir" if stat.S_ISDIR(st.st_mode) else "file"
                assert resolved is not None
                try:
                    infos.append((kind, resolved, source.hash(resolved)))
                except fs.CopyError as exc:
                    raise BuildFailed(f"{name} failed: {exc}") from None
        return infos

    def _download(self, url: str, dest: str, stack: ExitStack, checksum: str = "") -> tuple[str, str, str]:
        import httpx

        import hashlib

        filename = posixpath.basename(httpx.URL(url).path.rstrip("/")) if not httpx.URL(url).path.endswith("/") else ""
        if filename in (".", ".."):  # `/%2e%2e` decoded: no name, and not a path to join (moby's "." and "/")
            filename = ""
        tmp = Path(tempfile.mkdtemp(prefix="dl-", dir=self.scratch_run))
        path = tmp / "download"
        sha = hashlib.sha256()
        algo = checksum.partition(":")[0]
        # the download is hashed once when it is pinned by its sha256, the digest it has anyway
        pinned = None if not checksum else sha if algo == "sha256" else hashlib.new(algo)
        # Streamed to the scratch directory as it arrives (as dockerd does): the whole body in
        # memory took a builder's memory with one large file (1.2GiB: a MemoryError traceback
        # under a 1.2GB address-space limit).
        try:
            with httpx.stream("GET", url, follow_redirects=True, timeout=30) as resp:
                if resp.status_code >= 400:
                    raise BuildFailed(f"ADD failed: failed to GET {url} with status {resp.status_code} "
                                      f"{resp.reason_phrase}")
                if not filename and dest.endswith("/"):
                    raise BuildFailed(f"ADD failed: cannot determine filename for source {url}")
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
                with os.fdopen(fd, "wb") as out:
                    for chunk in resp.iter_bytes(1 << 20):
                        sha.update(chunk)
                        if pinned is not None and pinned is not sha:
                            pinned.update(chunk)
                        out.write(chunk)
        except httpx.HTTPError as exc:
            raise BuildFailed(f'ADD failed: Get "{url}": {exc}') from None
        except OSError as exc:  # the scratch file system full
            raise BuildFailed(f"ADD failed: {url}: {exc.strerror or exc}") from None
        if pinned is not None and f"{pinned.name}:{pinned.hexdigest()}" != checksum:
            raise BuildFailed(f"ADD failed: digest mismatch {pinned.name}:{pinned.hexdigest()}: {checksum}")
        named = tmp / (filename or "__unnamed__")
        os.rename(path, named)
        return ("url", str(named), "file:" + sha.hexdigest())

    def _do_copy(self, source: ContextSource | DirSource, infos: list[tuple[str, str, str]], root: Path,
                 dest_path: str, copier: fs.Copier, is_add: bool, unpack: bool | None = None) -> None:
        """ADD unpacks a local archive unless --unpack=false, a URL's only with --unpack (the
        Dockerfile reference: remote archives are not extracted)."""
        dir_hint = dest_path.endswith("/")
        for kind, rel, data in infos:
            # moby createDestInfo: the destination with its symlinks (the last one too)
            # followed inside the image's root.
            target = fs.root_rel(root, fs.scoped_path(root, dest_path))
            if kind == "dir":
                with fs.open_beneath(source.root, rel) as (parent, name):
                    with fs.opened_dir(parent, name, rel) as top:
                        copier.copy_tree(".", target, source.include(rel), dir_fd=top)
                continue
            into_dir = dir_hint or fs.is_dir_in_root(root, target)
            if kind == "content":
                copier.write_file(data.encode(), posixpath.join(target, rel) if into_dir else target)
                continue
            dest = posixpath.join(target, posixpath.basename(rel)) if into_dir else target
            if kind == "url":
                if is_add and unpack is True and fs.is_archive(Path(rel)):
                    fs.extract_archive(Path(rel), target, root, self.scratch_run)
                else:
                    copier.copy_file(Path(rel), dest)
                continue
            with fs.open_beneath(source.root, rel) as (parent, name):
                if is_add and unpack is not False:
                    with fs.opened_file(parent, name, rel) as fd:
                        # read through the descriptor opened here: the path may be swapped
                        if fd is not None and fs.is_archive(Path(f"/proc/self/fd/{fd}")):
                            fs.extract_archive(Path(f"/proc/self/fd/{fd}"), target, root, self.scratch_run,
                                               name=posixpath.basename(rel))
                            continue
                copier.copy_file(name, dest, dir_fd=parent)


# the algorithms of a digest (opencontainers/go-digest) and their hex lengths
_DIGEST_HEX = {"sha256": 64, "sha384": 96, "sha512": 128}


def _sha(text: str) -> str:
    return _sha_bytes(text.encode(errors="surrogateescape"))


def _sha_bytes(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()
