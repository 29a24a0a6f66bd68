"""`service inspect --pretty`: docker/cli's serviceInspectPrettyTemplate
(cli/command/service/formatter.go) rendered for a shoal service record, line for line, with the
template's whitespace trimming worked out by hand (golden: service-inspect-pretty.golden)."""

from __future__ import annotations

import time
from typing import Any

from shoal.compose.goyaml import go_duration
from shoal.units import bytes_size, human_duration

SECRET_DIR = "/run/secrets/"


def _dur(seconds: float | None) -> str:
    """A time.Duration as Go's %v prints it (`5s`, `1m30s`, `4ns`)."""
    return go_duration(round((seconds or 0) * 1e9))


def _num(value: float) -> str:
    """A float as Go's %v prints it: `100`, `0.1`, `0`."""
    text = f"{value:g}"
    return text


def _update_block(title: str, cfg: dict[str, Any], order_label: str) -> list[str]:
    out = [f"\n{title}:", f"\n Parallelism:\t{int(cfg.get('parallelism', 1))}"]
    if float(cfg.get("delay") or 0) > 0:
        out.append(f"\n Delay:\t\t{_dur(cfg['delay'])}")
    out.append(f"\n On failure:\t{cfg.get('failure_action') or ''}")
    if float(cfg.get("monitor") or 0) > 0:
        out.append(f"\n Monitoring Period: {_dur(cfg['monitor'])}")
    out.append(f"\n Max failure ratio: {_num(float(cfg.get('max_failure_ratio') or 0))}")
    out.append(f"\n {order_label}{cfg.get('order') or ''}")
    return out


def pretty(svc: dict[str, Any], networks: dict[str, str], now: float | None = None) -> str:
    """One service's block, ending with the newline docker's formatter adds after each."""
    now = time.time() if now is None else now
    spec = svc.get("spec") or {}
    o: list[str] = ["\n", f"ID:\t\t{svc['id']}\n", f"Name:\t\t{svc['name']}"]
    labels = spec.get("labels") or {}
    if labels:
        o.append("\nLabels:")
        o += [f"\n {k}={v}" if v else f"\n {k}" for k, v in sorted(labels.items())]
    o.append("\nService Mode:")
    mode = spec.get("mode") or "replicated"
    if mode == "global":
        o.append("\tGlobal")
    elif mode == "replicated":
        o.append("\tReplicated")
        o.append(f"\n Replicas:\t{int(spec.get('replicas', 1) if spec.get('replicas') is not None else 1)}")
    status = svc.get("update_status") or {}
    if status.get("state"):
        o += ["\nUpdateStatus:", f"\n State:\t\t{status['state']}"]
        if status.get("started_at"):
            o.append(f"\n Started:\t{human_duration(now - status['started_at'])} ago")
        if status["state"] == "completed" and status.get("completed_at"):
            o.append(f"\n Completed:\t{human_duration(now - status['completed_at'])} ago")
        o.append(f"\n Message:\t{status.get('message') or ''}")
    placement = spec.get("placement") or {}
    o.append("\nPlacement:")
    if placement.get("constraints"):
        o.append(f"\n Constraints:\t[{' '.join(placement['constraints'])}]")
    if placement.get("preferences"):
        o.append(f"\n Preferences:   [{' '.join('spread=' + p for p in placement['preferences'])}]")
    if placement.get("max_replicas_per_node"):
        o.append(f"\n Max Replicas Per Node:   {placement['max_replicas_per_node']}")
    if spec.get("update_config") is not None:
        o += _update_block("UpdateConfig", spec["update_config"], "Update order:      ")
    if spec.get("rollback_config") is not None:
        o += _update_block("RollbackConfig", spec["rollback_config"], "Rollback order:    ")
    o += ["\nContainerSpec:", f"\n Image:\t\t{spec.get('image', '')}"]
    if spec.get("cmd"):
        o.append("\n Args:\t\t" + "".join(f"{a} " for a in spec["cmd"]))
    if spec.get("env"):
        o.append("\n Env:\t\t" + "".join(f"{e} " for e in spec["env"]))
    if spec.get("workdir"):
        o.append(f"\n Dir:\t\t{spec['workdir']}")
    if spec.get("init") is not None:
        o.append(f"\n Init:\t\t{'true' if spec['init'] else 'false'}")
    if spec.get("user"):
        o.append(f"\n User: {spec['user']}")
    if spec.get("cap_add") or spec.get("cap_drop"):
        o.append("\nCapabilities:")
        if spec.get("cap_add"):
            o.append(f"\n Add: {', '.join(spec['cap_add'])}")
        if spec.get("cap_drop"):
            o.append(f"\n Drop: {', '.join(spec['cap_drop'])}")
    if spec.get("sysctls"):
        o.append("\nSysCtls:")
        o += [f"\n {k}: {v}" if v else f"\n {k}" for k, v in sorted(spec["sysctls"].items())]
    if spec.get("ulimits"):
        o.append("\nUlimits:")
        o += [f"\n {u['name']}: {u['soft']}:{u['hard']}" for u in sorted(spec["ulimits"], key=lambda u: u["name"])]
    if spec.get("mounts"):
        o.append("\nMounts:")
    for m in spec.get("mounts") or []:
        o.append(f"\n Target:\t{m['target']}\n  Source:\t{m.get('source', '')}\n"
                 f"  ReadOnly:\t{'true' if m.get('read_only') else 'false'}\n  Type:\t\t{m['type']}")
    for title, refs, strip in (("Configs", spec.get("configs"), ""), ("Secrets", spec.get("secrets"), SECRET_DIR)):
        if refs:
            o.append(f"\n{title}:")
            for ref in refs:
                target = ref["target"][len(strip):] if strip and ref["target"].startswith(strip) else ref["target"]
                o.append(f"\n Target:\t{target}\n  Source:\t{ref['source']}")
    log = spec.get("log_driver")
    if log is not None:
        o.append("\nLog Driver:")
        if log.get("name"):
            o.append(f"\n Name:\t\t{log['name']}")
        if log.get("options"):
            o.append("\n LogOpts:")
            o += [f"\n  {k}:       {v}" if v else f"\n  {k}" for k, v in sorted(log["options"].items())]
        o.append("\n")
    resources = spec.get("resources")
    limits = (resources or {}).get("limits") or {}
    if resources is not None:
        o.append("\nResources:")
        reservations = resources.get("reservations") or {}
        if reservations.get("nano_cpus", 0) > 0 or reservations.get("memory_bytes", 0) > 0:
            o.append("\n Reservations:")
            if reservations.get("nano_cpus", 0) > 0:
                o.append(f"\n  CPU:\t\t{_num(reservations['nano_cpus'] / 1e9)}")
            if reservations.get("memory_bytes"):
                o.append(f"\n  Memory:\t{bytes_size(reservations['memory_bytes'])}")
        if limits.get("nano_cpus", 0) > 0 or limits.get("memory_bytes", 0) > 0 or limits.get("pids", 0) > 0:
            o.append("\n Limits:")
            if limits.get("nano_cpus", 0) > 0:
                o.append(f"\n  CPU:\t\t{_num(limits['nano_cpus'] / 1e9)}")
            if limits.get("memory_bytes"):
                o.append(f"\n  Memory:\t{bytes_size(limits['memory_bytes'])}")
    if limits.get("pids", 0) > 0:
        o.append(f"\n  PIDs:\t\t{limits['pids']}")
    attached = spec.get("networks") or []
    if attached:
        o.append("\nNetworks:" + "".join(f" {networks.get(n['target'], n['target'])}" for n in attached) + " ")
    o.append(f"\nEndpoint Mode:\t{(spec.get('endpoint') or {}).get('mode', '')}")
    ports = (svc.get("endpoint") or {}).get("ports")
    if ports is None:
        ports = (spec.get("endpoint") or {}).get("ports") or []
    if ports:
        o.append("\nPorts:")
        for port in ports:
            o.append(f"\n PublishedPort = {port.get('published', 0)}\n  Protocol = {port.get('protocol', '')}\n"
                     f"  TargetPort = {port.get('target', 0)}\n  PublishMode = {port.get('mode', port.get('publish_mode', ''))}")
        o.append(" ")
    check = spec.get("healthcheck")
    if check is not None:
        o.append(f"\n Healthcheck:\n  Interval = {_dur(check.get('interval'))}\n  Retries = {check.get('retries', 0)}\n"
                 f"  StartPeriod =\t{_dur(check.get('start_period'))}\n  Timeout =\t{_dur(check.get('timeout'))}")
        if check.get("test"):
            o.append("\n  Tests:" + "".join(f"\n\t Test = {t}" for t in check["test"]) + " ")
    o.append("\n\n")
    return "".join(o)
