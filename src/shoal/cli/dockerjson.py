"""`service inspect` and `node inspect` JSON in Docker's shape: the manager's records (snake_case,
seconds as floats, see model/records.py and model/cluster.py) turned into moby's API types
(api/types/swarm: Service, ServiceSpec, TaskSpec, ContainerSpec, Node ...), so a Docker user's
`--format '{{.Spec.Mode.Replicated.Replicas}}'` or `'{{.Status.State}}'` works.

The rules are Go's encoding/json on those structs: keys in the structs' field order, a field
tagged `omitempty` left out when it is zero (a nil pointer, "", 0, false, an empty slice or map)
but a struct value never left out, time.Duration as an integer of nanoseconds, time.Time as
RFC 3339 with nanoseconds in UTC, []byte as base64 (the records already keep TLS info so).

The spec's parts that are nil pointers in Swarm when the client left them out (the record
fills them with Swarm's defaults and lists them in `defaulted`: model/service.py `given`) are
printed as moby prints them: `service inspect` asks with InsertDefaults (swarmkit's
InterpolateService fills StopGracePeriod, DNSConfig, RestartPolicy and its Delay, UpdateConfig
and RollbackConfig, but never Resources' Limits or Reservations: a stack service shows only
those its Compose file set); a PreviousSpec and a task's Spec are printed as stored, without
them. A stack service's ContainerSpec has the Privileges docker/cli's convert always sets."""

from __future__ import annotations

from typing import Any

from datetime import datetime, timezone

from shoal.model.service import given

SECRET_DIR = "/run/secrets/"
# What an ID lookup returns for a name the manager does not know (kept as the name).
Ids = dict[str, str]


def dumps(objects: list[dict[str, Any]]) -> str:
    """What docker/cli's IndentedInspector prints: json.Marshal (UTF-8 as it is, but <, >, &,
    U+2028 and U+2029 escaped, as Go does) indented by 4 spaces. Those characters only occur
    inside JSON strings, so replacing them in the whole text is safe."""
    import json

    text = json.dumps(objects, indent=4, ensure_ascii=False)
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                          ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escaped)
    return text


def _ns(seconds: float | None) -> int:
    """A time.Duration: integer nanoseconds."""
    return round((seconds or 0) * 1e9)


def _omit(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Go's omitempty for every pair given: zero values ("", 0, False, None, [], {}) dropped."""
    return {k: v for k, v in pairs if v not in (None, "", 0, False, [], {})}


def go_time(ts: float | None) -> str:
    """time.Time's MarshalJSON (RFC3339Nano): UTC, the fraction's trailing zeros dropped, no
    fraction at all for a whole second; the zero time for a time never set."""
    if not ts:
        return "0001-01-01T00:00:00Z"
    whole = int(ts)
    nanos = round((ts - whole) * 1e9)
    if nanos >= 1_000_000_000:
        whole, nanos = whole + 1, nanos - 1_000_000_000
    text = datetime.fromtimestamp(whole, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    fraction = f"{nanos:09d}".rstrip("0")
    return f"{text}.{fraction}Z" if fraction else f"{text}Z"


def _map(value: dict[str, Any] | None) -> dict[str, Any]:
    """A Go map: encoding/json writes its keys sorted."""
    return {k: (value or {})[k] for k in sorted(value or {})}


def _mount(m: dict[str, Any], stack: bool = False) -> dict[str, Any]:
    """mount.Mount: the runtime's option strings become the typed options Docker keeps. A
    stack's named volume always has VolumeOptions, `{}` for an external one (docker/cli's
    handleVolumeToMount sets them before it looks at External), where `--mount` sets them
    only for a volume option."""
    out = _omit([("Type", m.get("type")), ("Source", m.get("source")), ("Target", m.get("target")),
                 ("ReadOnly", bool(m.get("read_only")))])
    bind: dict[str, Any] = {}
    volume: dict[str, Any] = {}
    tmpfs: dict[str, Any] = {}
    labels: dict[str, str] = {}
    driver: dict[str, Any] = {}
    for opt in m.get("options") or []:
        key, _, value = str(opt).partition("=")
        if key in ("rprivate", "private", "rshared", "shared", "rslave", "slave"):
            bind["Propagation"] = key
        elif key == "nocopy":
            volume["NoCopy"] = True
        elif key == "volume-label":
            label, _, label_value = value.partition("=")
            labels[label] = label_value
        elif key == "subpath" and value:
            volume["Subpath"] = value
        elif key == "volume-driver" and value:
            driver["Name"] = value
        elif key == "volume-opt":
            opt_key, _, opt_value = value.partition("=")
            driver.setdefault("Options", {})[opt_key] = opt_value
        elif key == "size" and value:
            from shoal.units import parse_ram_bytes

            tmpfs["SizeBytes"] = int(value) if value.isdigit() else parse_ram_bytes(value)
        elif key == "mode" and value:
            tmpfs["Mode"] = int(value, 8)
    if bind and m.get("type") == "bind":
        out["BindOptions"] = bind
    # mount.VolumeOptions' field order: NoCopy, Labels, Subpath, DriverConfig (a stack's
    # volume: its labels, and its driver and options when it names any).
    if labels:
        volume = {**({"NoCopy": True} if volume.get("NoCopy") else {}), "Labels": _map(labels),
                  **{k: val for k, val in volume.items() if k != "NoCopy"}}
    if driver:
        volume["DriverConfig"] = _omit([("Name", driver.get("Name")),
                                        ("Options", _map(driver.get("Options")) or None)])
    if (volume or (stack and m.get("source"))) and m.get("type") == "volume":
        out["VolumeOptions"] = volume
    if tmpfs and m.get("type") == "tmpfs":
        out["TmpfsOptions"] = tmpfs
    return out


def _privileges(opts: list[str]) -> dict[str, Any] | None:
    """swarm.Privileges from --security-opt strings (CredentialSpec and SELinuxContext carry no
    omitempty: null)."""
    if not opts:
        return None
    out: dict[str, Any] = {"CredentialSpec": None, "SELinuxContext": None}
    for opt in opts:
        key, _, value = opt.partition("=")
        if key == "seccomp":
            if value == "unconfined":
                out["Seccomp"] = {"Mode": "unconfined"}
            else:
                import base64

                out["Seccomp"] = {"Mode": "custom", "Profile": base64.b64encode(value.encode()).decode()}
        elif key == "apparmor":
            out["AppArmor"] = {"Mode": "disabled" if value == "unconfined" else "default"}
    out["NoNewPrivileges"] = any(o.split("=")[0].split(":")[0] == "no-new-privileges"
                                 and o.partition("=")[2] in ("", "true") for o in opts)
    return out


def _healthcheck(h: dict[str, Any] | None) -> dict[str, Any] | None:
    if h is None:
        return None
    return _omit([("Test", list(h.get("test") or [])), ("Interval", _ns(h.get("interval"))),
                  ("Timeout", _ns(h.get("timeout"))), ("StartPeriod", _ns(h.get("start_period"))),
                  ("StartInterval", _ns(h.get("start_interval"))), ("Retries", int(h.get("retries") or 0))])


def _file_ref(ref: dict[str, Any], kind: str, ids: Ids) -> dict[str, Any]:
    """SecretReference / ConfigReference: a secret's File.Name is relative to /run/secrets, as
    docker/cli writes a default target."""
    name = str(ref.get("target") or ref.get("source") or "")
    if kind == "Secret" and name.startswith(SECRET_DIR):
        name = name[len(SECRET_DIR):]
    source = str(ref.get("source") or "")
    return {"File": {"Name": name, "UID": str(ref.get("uid", "0")), "GID": str(ref.get("gid", "0")),
                     "Mode": int(ref.get("mode", 0o444))},
            f"{kind}ID": ids.get(source, ""), f"{kind}Name": source}


# compose convert's `Privileges: &privileges`: set for every stack service, nothing in it.
_STACK_PRIVILEGES = {"CredentialSpec": None, "SELinuxContext": None, "NoNewPrivileges": False}


def _container_spec(spec: dict[str, Any], ids: Ids, defaults: bool = True) -> dict[str, Any]:
    entrypoint, cmd = spec.get("entrypoint"), spec.get("cmd")
    # The service's entrypoint is ContainerSpec.Command and its command Args (docker/cli
    # convert: --entrypoint -> Command, positional args -> Args).
    dns = _omit([("Nameservers", list(spec.get("dns") or [])), ("Search", list(spec.get("dns_search") or [])),
                 ("Options", list(spec.get("dns_options") or []))])
    out = _omit([
        ("Image", spec.get("image")), ("Labels", _map(spec.get("container_labels") or {})),
        ("Command", list(entrypoint or [])), ("Args", list(cmd or [])), ("Hostname", spec.get("hostname")),
        ("Env", list(spec.get("env") or [])), ("Dir", spec.get("workdir")), ("User", spec.get("user")),
        ("Groups", list(spec.get("groups") or [])),
        ("Privileges", _privileges(list(spec.get("security_opt") or []))
         or (dict(_STACK_PRIVILEGES) if spec.get("stack") else None)),
    ])
    if spec.get("init") is not None:  # *bool: false is printed when it was set
        out["Init"] = bool(spec["init"])
    out.update(_omit([
        ("StopSignal", spec.get("stop_signal")), ("TTY", bool(spec.get("tty"))),
        ("OpenStdin", bool(spec.get("open_stdin"))), ("ReadOnly", bool(spec.get("read_only"))),
        ("Mounts", [_mount(m, bool(spec.get("stack"))) for m in spec.get("mounts") or []]),
    ]))
    if defaults or given(spec, "stop_grace_period"):  # *time.Duration
        out["StopGracePeriod"] = _ns(spec.get("stop_grace_period"))
    out.update(_omit([("Healthcheck", _healthcheck(spec.get("healthcheck"))),
                      ("Hosts", list(spec.get("extra_hosts") or []))]))
    if defaults or given(spec, "dns_config"):  # *DNSConfig
        out["DNSConfig"] = dns
    out.update(_omit([("Secrets", [_file_ref(r, "Secret", ids) for r in spec.get("secrets") or []]),
                      ("Configs", [_file_ref(r, "Config", ids) for r in spec.get("configs") or []])]))
    out["Isolation"] = "default"
    out.update(_omit([
        ("Sysctls", _map(spec.get("sysctls") or {})), ("CapabilityAdd", list(spec.get("cap_add") or [])),
        ("CapabilityDrop", list(spec.get("cap_drop") or [])),
        ("Ulimits", [{"Name": u["name"], "Hard": int(u["hard"]), "Soft": int(u["soft"])}
                     for u in spec.get("ulimits") or []]),
        ("OomScoreAdj", int(spec.get("oom_score_adj") or 0)),
    ]))
    return out


def _resources(spec: dict[str, Any]) -> dict[str, Any]:
    """ResourceRequirements: Limits and Reservations are pointers no default fills in."""
    res = spec.get("resources") or {}
    limits = res.get("limits") or {}
    reservations = res.get("reservations") or {}
    generic = [{"DiscreteResourceSpec": _omit([("Kind", g.get("kind")), ("Value", int(g.get("value") or 0))])}
               for g in reservations.get("generic_resources") or []]
    out: dict[str, Any] = {}
    if given(spec, "resources.limits"):
        out["Limits"] = _omit([("NanoCPUs", int(limits.get("nano_cpus") or 0)),
                               ("MemoryBytes", int(limits.get("memory_bytes") or 0)),
                               ("Pids", int(limits.get("pids") or 0))])
    if given(spec, "resources.reservations"):
        out["Reservations"] = _omit([("NanoCPUs", int(reservations.get("nano_cpus") or 0)),
                                     ("MemoryBytes", int(reservations.get("memory_bytes") or 0)),
                                     ("GenericResources", generic)])
    return out


def _restart_policy(spec: dict[str, Any], defaults: bool) -> dict[str, Any] | None:
    """Delay is printed when given or filled in (InterpolateService); MaxAttempts always
    (restartPolicyFromGRPC points at it); Window only when given."""
    if not (defaults or given(spec, "restart_policy")):
        return None
    rp = spec.get("restart_policy") or {}
    out: dict[str, Any] = _omit([("Condition", rp.get("condition"))])
    if defaults or given(spec, "restart_policy.delay"):
        out["Delay"] = _ns(rp.get("delay"))
    out["MaxAttempts"] = int(rp.get("max_attempts") or 0)
    if rp.get("window"):
        out["Window"] = _ns(rp["window"])
    return out


def _placement(p: dict[str, Any]) -> dict[str, Any]:
    prefs = [{"Spread": {"SpreadDescriptor": str(d).removeprefix("spread=")}} for d in p.get("preferences") or []]
    return _omit([("Constraints", list(p.get("constraints") or [])), ("Preferences", prefs),
                  ("MaxReplicas", int(p.get("max_replicas_per_node") or 0))])


def _update_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """swarm.UpdateConfig: Parallelism, MaxFailureRatio and Order have no omitempty."""
    out: dict[str, Any] = {"Parallelism": int(cfg.get("parallelism", 1))}
    out.update(_omit([("Delay", _ns(cfg.get("delay"))), ("FailureAction", cfg.get("failure_action")),
                      ("Monitor", _ns(cfg.get("monitor")))]))
    ratio = float(cfg.get("max_failure_ratio") or 0)
    out["MaxFailureRatio"] = int(ratio) if ratio == int(ratio) else ratio  # Go prints float32 0 as 0
    out["Order"] = cfg.get("order") or ""
    return out


def _ports(ports: list[dict[str, Any]], published_key: str, mode_key: str) -> list[dict[str, Any]]:
    return [_omit([("Protocol", p.get("protocol")), ("TargetPort", int(p.get("target") or 0)),
                   ("PublishedPort", int(p.get(published_key) or 0)), ("PublishMode", p.get(mode_key))])
            for p in ports]


def _endpoint_spec(ep: dict[str, Any]) -> dict[str, Any]:
    return _omit([("Mode", ep.get("mode") or "vip"),
                  ("Ports", _ports(list(ep.get("ports") or []), "published", "publish_mode"))])


def _mode(spec: dict[str, Any]) -> dict[str, Any]:
    mode = spec.get("mode") or "replicated"
    replicas = int(spec.get("replicas") or 0)
    if mode == "global":
        return {"Global": {}}
    if mode == "global-job":
        return {"GlobalJob": {}}
    if mode == "replicated-job":
        concurrent = spec.get("max_concurrent")
        return {"ReplicatedJob": {"MaxConcurrent": replicas if concurrent is None else int(concurrent),
                                  "TotalCompletions": replicas}}
    return {"Replicated": {"Replicas": replicas}}  # *uint64: 0 is printed, it was set


def service_spec(spec: dict[str, Any], ids: Ids, defaults: bool = True) -> dict[str, Any]:
    """swarm.ServiceSpec from a ServiceSpec's dict; `defaults`: with Swarm's defaults in the
    parts the client left out, as GetService with InsertDefaults answers."""
    task: dict[str, Any] = {"ContainerSpec": _container_spec(spec, ids, defaults), "Resources": _resources(spec)}
    restart = _restart_policy(spec, defaults)
    if restart is not None:
        task["RestartPolicy"] = restart
    task["Placement"] = _placement(spec.get("placement") or {})
    networks = [_omit([("Target", ids.get(n["target"], n["target"])), ("Aliases", list(n.get("aliases") or [])),
                       ("DriverOpts", _map(n.get("driver_opts") or {}))]) for n in spec.get("networks") or []]
    if networks:
        task["Networks"] = networks
    if spec.get("log_driver"):
        task["LogDriver"] = _omit([("Name", spec["log_driver"].get("name")),
                                   ("Options", _map(spec["log_driver"].get("options") or {}))])
    task["ForceUpdate"] = int(spec.get("force_update") or 0)
    task["Runtime"] = "container"
    out: dict[str, Any] = {
        "Name": spec.get("name", ""),
        "Labels": _map(spec.get("labels") or {}),  # Annotations.Labels: no omitempty
        "TaskTemplate": task,
        "Mode": _mode(spec),
    }
    for key, name in (("update_config", "UpdateConfig"), ("rollback_config", "RollbackConfig")):
        if defaults or given(spec, key):
            out[name] = _update_config(spec.get(key) or {})
    out["EndpointSpec"] = _endpoint_spec(spec.get("endpoint") or {})
    return out


def _version(index: int) -> dict[str, Any]:
    return _omit([("Index", int(index or 0))])


def service(record: dict[str, Any], ids: Ids | None = None) -> dict[str, Any]:
    """swarm.Service from the API's service record. ids maps the names of networks, secrets and
    configs to the IDs Docker prints (a name not in it stays as it is)."""
    ids = ids or {}
    spec = service_spec(record["spec"], ids)
    out: dict[str, Any] = {
        "ID": record["id"],
        "Version": _version(record.get("version") or record.get("spec_version") or 0),
        "CreatedAt": go_time(record.get("created_at")),
        "UpdatedAt": go_time(record.get("updated_at") or record.get("created_at")),
        "Spec": spec,
    }
    if record.get("previous_spec"):
        out["PreviousSpec"] = service_spec(record["previous_spec"], ids, defaults=False)  # as stored
    endpoint = record.get("endpoint") or {}
    # Endpoint.Spec is the spec's EndpointSpec as the allocator took it; a service that needs
    # neither a VIP nor a port is never allocated, and Docker prints `"Endpoint": {"Spec": {}}`.
    allocated = bool(endpoint.get("vips") or endpoint.get("ports"))
    out["Endpoint"] = _omit([
        ("Spec", spec["EndpointSpec"] if allocated else {}),
        ("Ports", _ports(list(endpoint.get("ports") or []), "published", "mode")),
        ("VirtualIPs", [_omit([("NetworkID", ids.get(v["network"], v["network"])), ("Addr", v.get("addr"))])
                        for v in endpoint.get("vips") or []]),
    ]) or {"Spec": {}}
    out["Endpoint"].setdefault("Spec", {})
    status = record.get("update_status")
    if status:
        out["UpdateStatus"] = _omit([
            ("State", status.get("state")),
            ("StartedAt", go_time(status["started_at"]) if status.get("started_at") else None),
            ("CompletedAt", go_time(status["completed_at"]) if status.get("completed_at") else None),
            ("Message", status.get("message")),
        ])
    return out


def node(record: dict[str, Any]) -> dict[str, Any]:
    """swarm.Node from the API's node record (model.cluster.Node.to_dict)."""
    platform = record.get("platform") or {}
    resources = record.get("resources") or {}
    engine = record.get("engine") or {}
    tls = record.get("tls_info") or {}
    status = record.get("status") or {}
    generic = [{"DiscreteResourceSpec": {"Kind": k, "Value": int(v)}}
               for k, v in sorted((resources.get("generic") or {}).items())]
    out: dict[str, Any] = {
        "ID": record["id"],
        "Version": _version(record.get("version") or 0),
        "CreatedAt": go_time(record.get("created_at")),
        "UpdatedAt": go_time(record.get("updated_at") or record.get("created_at")),
        "Spec": {"Labels": _map(record.get("labels") or {}),
                 **_omit([("Role", record.get("role")), ("Availability", record.get("availability"))])},
        "Description": {
            **_omit([("Hostname", record.get("hostname"))]),
            "Platform": _omit([("Architecture", platform.get("architecture")), ("OS", platform.get("os"))]),
            "Resources": _omit([("NanoCPUs", int(resources.get("nano_cpus") or 0)),
                                ("MemoryBytes", int(resources.get("memory_bytes") or 0)),
                                ("GenericResources", generic)]),
            "Engine": _omit([("EngineVersion", engine.get("engine_version")),
                             ("Labels", _map(engine.get("labels") or {})),
                             ("Plugins", [_omit([("Type", p.get("type")), ("Name", p.get("name"))])
                                          for p in engine.get("plugins") or []])]),
            "TLSInfo": _omit([("TrustRoot", tls.get("trust_root")),
                              ("CertIssuerSubject", tls.get("cert_issuer_subject")),
                              ("CertIssuerPublicKey", tls.get("cert_issuer_public_key"))]),
        },
        "Status": _omit([("State", status.get("state")), ("Message", status.get("message")),
                         ("Addr", status.get("addr"))]),
    }
    manager = record.get("manager_status")
    if manager:
        out["ManagerStatus"] = _omit([("Leader", bool(manager.get("leader"))),
                                      ("Reachability", manager.get("reachability")), ("Addr", manager.get("addr"))])
    return out


def _ipam_configs(configs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """swarm.IPAMConfig: netip values, omitzero."""
    return [_omit([("Subnet", c.get("subnet")), ("Range", c.get("ip_range")), ("Gateway", c.get("gateway"))])
            for c in configs]


def network(record: dict[str, Any]) -> dict[str, Any]:
    """swarm.Network (what a task's NetworksAttachments carry) from the manager's network record
    (model/stack.py NetworkSpec + the allocator's `allocation`), as moby's networkFromGRPC."""
    spec = record.get("spec") or {}
    alloc = record.get("allocation") or {}
    ipam = spec.get("ipam") or {}
    driver = spec.get("driver") or "overlay"
    out_spec: dict[str, Any] = {"Name": record.get("name", ""), "Labels": _map(spec.get("labels") or {}),
                                "DriverConfiguration": _omit([("Name", driver),
                                                              ("Options", _map(spec.get("driver_opts") or {}))])}
    out_spec.update(_omit([("Internal", bool(spec.get("internal"))), ("Attachable", bool(spec.get("attachable"))),
                           ("Ingress", bool(spec.get("ingress")))]))
    if ipam.get("driver") or ipam.get("config"):  # the IPAM the client asked for, as it asked
        out_spec["IPAMOptions"] = _omit([("Driver", _omit([("Name", ipam.get("driver"))])),
                                         ("Configs", _ipam_configs(list(ipam.get("config") or [])))])
    out_spec["Scope"] = "swarm"
    out: dict[str, Any] = {
        "ID": record.get("id", ""),
        "Version": _version(record.get("version") or 0),
        "CreatedAt": go_time(record.get("created_at")),
        "UpdatedAt": go_time(record.get("updated_at") or record.get("created_at")),
        "Spec": out_spec,
        "DriverState": _omit([("Name", driver), ("Options", _map(alloc.get("options") or {}))]),
    }
    if alloc.get("subnet"):  # what the allocator gave: swarmkit's IPAM is always "default"
        out["IPAMOptions"] = {"Driver": {"Name": "default"},
                              "Configs": _ipam_configs([{"subnet": alloc["subnet"], "gateway": alloc.get("gateway")}])}
    return out


def _address(addr: str, record: dict[str, Any] | None) -> str:
    """A task's address on a network as swarmkit keeps it: with its subnet's prefix length."""
    if "/" in addr or record is None:
        return addr
    subnet = str((record.get("allocation") or {}).get("subnet") or "")
    return f"{addr}/{subnet.partition('/')[2]}" if "/" in subnet else addr


def task(record: dict[str, Any], networks: dict[str, dict[str, Any]], ids: Ids | None = None) -> dict[str, Any]:
    """swarm.Task (api/types/swarm/task.go) from the API's task record, as `docker inspect TASK`
    prints it (moby's TaskFromGRPC). `networks` maps network names to the manager's records;
    `ids` the names of networks, secrets and configs to their IDs, as for a service."""
    ids = ids or {}
    status = record.get("status") or {}
    # The service's TaskSpec as the task was made with it: stored as given, no defaults added.
    spec = service_spec(record.get("spec") or {}, ids, defaults=False)["TaskTemplate"]
    out: dict[str, Any] = {
        "ID": record["id"],
        "Version": _version(record.get("version") or 0),
        "CreatedAt": go_time(record.get("created_at")),
        "UpdatedAt": go_time(status.get("timestamp") or record.get("created_at")),
        "Labels": {},  # annotationsFromGRPC: a task has none, and the map is never nil
        "Spec": spec,
    }
    out.update(_omit([("ServiceID", record.get("service_id")), ("Slot", int(record.get("slot") or 0)),
                      ("NodeID", record.get("node_id"))]))
    out_status = _omit([("Timestamp", go_time(status["timestamp"]) if status.get("timestamp") else None),
                        ("State", status.get("state")), ("Message", status.get("message")),
                        ("Err", status.get("err"))])
    if status.get("container_id"):  # set once the node made the container
        out_status["ContainerStatus"] = {"ContainerID": status["container_id"], "PID": int(status.get("pid") or 0),
                                         "ExitCode": int(status.get("exit_code") or 0)}
    out_status["PortStatus"] = {}  # a struct: never left out
    out["Status"] = out_status
    out.update(_omit([("DesiredState", record.get("desired_state"))]))
    attachments = []
    for attachment in record.get("networks") or []:
        name = str(attachment.get("network") or "")
        found = networks.get(name)
        net = network(found) if found is not None else {"ID": ids.get(name, name), "Version": {},
                                                          "CreatedAt": go_time(0), "UpdatedAt": go_time(0),
                                                          "Spec": {"Name": name, "Labels": {}, "Scope": "swarm"},
                                                          "DriverState": {}}
        attachments.append(_omit([("Network", net),
                                  ("Addresses", [_address(a, found) for a in attachment.get("addresses") or []])]))
    if attachments:
        out["NetworksAttachments"] = attachments
    out["Volumes"] = None  # []VolumeAttachment without omitempty: null when the task has none
    return out
