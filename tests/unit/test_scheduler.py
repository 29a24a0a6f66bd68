"""The scheduler as swarmkit's (manager/scheduler, manager/constraint): constraint parsing and
matching, every filter with its explanation (texts from swarmkit's scheduler_test.go), spread
preferences, fewest tasks of the service then in all, host ports, max replicas, reservations
given back when a task ends, preassigned (global) tasks; then the store pass on a real SQLite
store, incremental between passes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shoal.errors import InvalidArgument
from shoal.manager import scheduler
from shoal.manager.constraints import matches, node_matches, parse, parse_all
from shoal.manager.scheduling import Scheduler, TaskInfo, describe_spec
from shoal.model.cluster import (EngineDescription, Node, NodeResources, NodeStatus, Platform, Task, TaskState,
                                 TLSInfo)
from shoal.store import SQLiteStore

GB = 1 << 30
PENDING, ASSIGNED, RUNNING = int(TaskState.PENDING), int(TaskState.ASSIGNED), int(TaskState.RUNNING)


def mknode(node_id: str, *, state: str = "ready", availability: str = "active", cpus: float = 0, memory: int = 0,
           labels: dict[str, str] | None = None, engine_labels: dict[str, str] | None = None, role: str = "worker",
           os: str = "linux", arch: str = "x86_64", addr: str = "", hostname: str = "") -> Node:
    return Node(id=node_id, hostname=hostname or f"host-{node_id}", role=role, availability=availability,
                labels=labels or {}, platform=Platform(os, arch),
                resources=NodeResources(int(cpus * 1e9), memory),
                engine=EngineDescription(labels=engine_labels or {}), status=NodeStatus(state=state, addr=addr))


_order = [0]


def mktask(task_id: str, service: str = "svc", *, node: str = "", state: int = PENDING, desired: int = RUNNING,
           version: int = 1, **spec: Any) -> TaskInfo:
    _order[0] += 1
    return TaskInfo(task_id, service, version, node, state, desired, describe_spec(spec), (_order[0], task_id))


def schedule(nodes: list[Node], tasks: list[TaskInfo]) -> tuple[Scheduler, dict[str, TaskInfo]]:
    s = Scheduler()
    s.load(nodes, tasks)
    decisions = s.process_preassigned() + s.tick()
    return s, {d.new.id: d.new for d in decisions}


def placed(result: dict[str, TaskInfo]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in result.values():
        if t.state == ASSIGNED:
            counts[t.node_id] = counts.get(t.node_id, 0) + 1
    return counts


def errors(result: dict[str, TaskInfo]) -> set[str]:
    return {t.err for t in result.values() if t.state == PENDING}


# -- constraints (manager/constraint/constraint_test.go) -----------------------------------------

@pytest.mark.parametrize(("text", "message"), [
    ("", "constraint expected one operator from ==, !="),
    (" ", "constraint expected one operator from ==, !="),
    ("nodeabc", "constraint expected one operator from ==, !="),
    ("node ~ abc", "constraint expected one operator from ==, !="),
    ("1node==a2", "key '1node' is invalid"),
    ("no de== node1", "key 'no de' is invalid"),
    ("no*de==node1", "key 'no*de' is invalid"),
    ("==node1", "key '' is invalid"),
    ("node==", "value '' is invalid"),
    ("node== ", "value '' is invalid"),
    ("no$de==node1", "key 'no$de' is invalid"),
    ("node==a>b", "value 'a>b' is invalid"),
    ("node!==b", "key 'node!' is invalid"),  # == is looked for first
    ("node==a\vb", "value 'a\vb' is invalid"),  # Go's \s has no vertical tab
    ("node==ä", "value 'ä' is invalid"),
    ("İd==x", "key 'İd' is invalid"),  # Python's (?i) would take it, Go's does not
])
def test_constraint_parse_errors_are_swarmkits(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        parse(text)
    assert str(err.value) == message


def test_constraint_parse_accepts_what_swarmkit_accepts() -> None:
    assert parse(" node == node1") == parse("node==node1")
    assert parse("NoDe==node1").key == "NoDe"
    assert parse("no.de==node1").key == "no.de"
    assert parse("_node==_node1").exp == "_node1"
    assert parse("node==[a-b]+c*(n|b)/").exp == "[a-b]+c*(n|b)/"
    assert parse("node==node 1").exp == "node 1"
    assert parse("node==x\n").exp == "x"  # trimmed, and `$` is the end of the text only
    assert parse("node.labels.a!=b").equal is False
    assert parse("\u212aey==v").key == "\u212aey"  # the Kelvin sign folds to k in Go's (?i)
    with pytest.raises(InvalidArgument):
        parse_all(["node.role==manager", "bad"])


def test_constraint_match_is_whole_and_case_insensitive() -> None:
    eq, ne, glob = parse("node.name==foo"), parse("node.name!=foo"), parse("node.name==f*o")
    assert eq.match("foo") and eq.match("FOO") and not eq.match("fo") and not eq.match("fooE")
    assert not ne.match("foo") and ne.match("bar") and ne.match("fooExtra")
    assert glob.match("f*o") and glob.match("F*o") and not glob.match("foo")
    assert glob.match("foo", "f*o", "bar") and not glob.match("foo", "fo", "bar")
    assert parse("node.name==f.-$o").match("f.-$o") and not parse("node.name==f.-$o").match("fa-$o")


def test_constraint_keys_match_node_fields() -> None:
    n = mknode("abc", labels={"zone": "EU", "Disk": "ssd"}, engine_labels={"gpu": "yes"}, role="manager",
               addr="10.1.2.3", hostname="web1", arch="x86_64")

    def ok(*texts: str) -> bool:
        return node_matches(parse_all(texts), n)

    assert ok("node.id==abc") and not ok("node.id!=abc")
    assert ok("node.hostname==WEB1") and ok("node.hostname!=web2")
    assert ok("node.role==manager") and not ok("node.role==worker")
    assert ok("node.platform.os==linux")
    assert ok("node.platform.arch==x86_64") and not ok("node.platform.arch==amd64")  # not normalised here
    assert ok("node.labels.zone==eu", "node.labels.Disk==ssd")
    assert not ok("node.labels.disk==ssd")  # label keys are case-sensitive: a missing label is ""
    assert ok("node.labels.rack!=r1") and not ok("node.labels.rack==r1")
    assert ok("NODE.LABELS.zone==eu")  # the prefix is not
    assert ok("engine.labels.gpu==yes") and not ok("engine.labels.gpu!=yes")
    assert ok("node.ip==10.1.2.3") and ok("node.ip==10.0.0.0/8") and ok("node.ip!=192.168.0.0/16")
    assert not ok("node.ip==10.1.2.4") and not ok("node.ip==not-an-ip")
    assert ok("node.ip==::ffff:10.1.2.3")
    assert not ok("node.zone==eu")  # a key outside the syntax never matches
    assert not ok("node.id!=nope", "node.role==worker")  # every constraint must match
    # A stored constraint that does not parse constrains nothing (swarmkit's orchestrators and
    # ConstraintFilter ignore the parse error: it was refused when the service was made).
    assert matches(["node.role==worker", "bad"], n)
    _, result = schedule([n], [mktask("t", placement={"constraints": ["node.labels.zone==nope", "1bad==x"]})])
    assert placed(result) == {"abc": 1}


# -- filters and their explanations (manager/scheduler/scheduler_test.go) ---------------------------

def test_ready_filter() -> None:
    nodes = [mknode("down", state="down"), mknode("drained", availability="drain"),
             mknode("paused", availability="pause"), mknode("ok")]
    _, result = schedule(nodes, [mktask("t1"), mktask("t2")])
    assert placed(result) == {"ok": 2}
    _, result = schedule(nodes[:3], [mktask("t1")])
    assert errors(result) == {"no suitable node (3 nodes not available for new tasks)"}
    _, result = schedule(nodes[:1], [mktask("t1")])
    assert errors(result) == {"no suitable node (1 node not available for new tasks)"}
    _, result = schedule([], [mktask("t1")])
    assert errors(result) == {"no suitable node"}


def test_resource_filter_explanation_with_unready_nodes() -> None:
    # swarmkit TestSchedulerResourceConstraint: one node too small, two not ready.
    nodes = [mknode("underprovisioned", cpus=1, memory=GB), mknode("nonready1", state="unknown", cpus=2, memory=2 * GB),
             mknode("nonready2", state="unknown", cpus=2, memory=2 * GB)]
    reserve = {"resources": {"reservations": {"memory_bytes": 2 * GB}}}
    s, result = schedule(nodes, [mktask("id1", **reserve)])
    assert errors(result) == {"no suitable node (2 nodes not available for new tasks; insufficient resources on 1 node)"}
    s.add_or_update_node(mknode("bignode", cpus=4, memory=8 * GB))
    assert placed({d.new.id: d.new for d in s.tick()}) == {"bignode": 1}


def test_resources_are_reserved_per_task_and_given_back_when_a_task_ends() -> None:
    nodes = [mknode("n1", cpus=2, memory=4 * GB), mknode("n2", cpus=1, memory=4 * GB)]
    reserve = {"resources": {"reservations": {"nano_cpus": 1_000_000_000, "memory_bytes": GB}}}
    tasks = [mktask(f"t{i}", **reserve) for i in range(4)]
    s, result = schedule(nodes, tasks)
    assert placed(result) == {"n1": 2, "n2": 1}
    (left,) = [t for t in result.values() if t.state == PENDING]
    assert left.err == "no suitable node (insufficient resources on 2 nodes)"
    assert s.nodes["n1"].cpu == 0 and s.nodes["n1"].memory == 2 * GB
    # One of n2's tasks completes: its CPU is free again and the pending task goes there.
    (done,) = [t for t in result.values() if t.node_id == "n2"]
    s.update_task(done.moved("n2", int(TaskState.COMPLETE)))
    assert s.nodes["n2"].cpu == 1_000_000_000
    assert placed({d.new.id: d.new for d in s.tick()}) == {"n2": 1}
    # Deleting a running task gives its reservation back too.
    s.delete_task(s.all_tasks[left.id])
    assert s.nodes["n2"].cpu == 1_000_000_000


def test_a_task_being_shut_down_still_holds_its_reservation_but_not_its_count() -> None:
    s = Scheduler()
    reserve = {"resources": {"reservations": {"memory_bytes": GB}}}
    s.load([mknode("n1", cpus=1, memory=GB)], [mktask("old", node="n1", state=RUNNING, **reserve)])
    s.update_task(mktask("old", node="n1", state=RUNNING, desired=int(TaskState.SHUTDOWN), **reserve))
    assert s.nodes["n1"].active == 0 and s.nodes["n1"].memory == 0
    s.update_task(mktask("new", **reserve))
    assert errors({d.new.id: d.new for d in s.tick()}) == {"no suitable node (insufficient resources on 1 node)"}
    s.update_task(mktask("old", node="n1", state=int(TaskState.SHUTDOWN), desired=int(TaskState.SHUTDOWN), **reserve))
    assert placed({d.new.id: d.new for d in s.tick()}) == {"n1": 1}


def test_generic_resources_are_counted() -> None:
    gpu = Node(id="gpu", hostname="gpu", resources=NodeResources(generic={"gpu": 2}))
    plain = Node(id="plain", hostname="plain")
    spec = {"resources": {"reservations": {"generic_resources": [{"kind": "gpu", "value": 1}]}}}
    _, result = schedule([gpu, plain], [mktask(f"t{i}", **spec) for i in range(3)])
    assert placed(result) == {"gpu": 2}
    # As swarmkit: the counts start again whenever a node passes, so once the tasks have run
    # out of room the explanation counts the nodes that failed after the last one that took a
    # task (swarmkit's TestSchedulerResourceConstraintDeadTask reads "on 1 node" the same way).
    assert errors(result) == {"no suitable node (insufficient resources on 1 node)"}
    _, result = schedule([gpu, plain], [mktask("t", resources={"reservations": {"generic_resources": [
        {"kind": "gpu", "value": 3}]}})])
    assert errors(result) == {"no suitable node (insufficient resources on 2 nodes)"}


def test_constraint_filter() -> None:
    nodes = [mknode("a", labels={"zone": "eu"}), mknode("b"), mknode("c")]
    _, result = schedule(nodes, [mktask("t1", placement={"constraints": ["node.labels.zone==us"]})])
    assert errors(result) == {"no suitable node (scheduling constraints not satisfied on 3 nodes)"}
    _, result = schedule(nodes, [mktask(f"t{i}", placement={"constraints": ["node.labels.zone==eu"]}) for i in range(3)])
    assert placed(result) == {"a": 3}
    _, result = schedule(nodes, [mktask(f"t{i}", placement={"constraints": ["node.labels.zone!=eu"]}) for i in range(4)])
    assert placed(result) == {"b": 2, "c": 2}


def test_platform_filter_normalises_architectures() -> None:
    nodes = [mknode("x", arch="x86_64"), mknode("arm", arch="aarch64"), mknode("win", os="windows", arch="x86_64")]
    _, result = schedule(nodes, [mktask("t1", placement={"platforms": [{"os": "linux", "architecture": "amd64"}]})])
    assert placed(result) == {"x": 1}
    _, result = schedule(nodes, [mktask("t1", placement={"platforms": ["linux/arm64"]})])
    assert placed(result) == {"arm": 1}
    _, result = schedule(nodes, [mktask("t1", placement={"platforms": [{"os": "linux", "architecture": "s390x"}]})])
    assert errors(result) == {"no suitable node (unsupported platform on 3 nodes)"}


def test_host_port_filter() -> None:
    ports = {"endpoint": {"ports": [{"target": 80, "published": 8080, "protocol": "tcp", "publish_mode": "host"}]}}
    nodes = [mknode("n1"), mknode("n2")]
    s, result = schedule(nodes, [mktask(f"t{i}", **ports) for i in range(3)])
    assert placed(result) == {"n1": 1, "n2": 1}
    assert errors(result) == {"no suitable node (host-mode port already in use on 2 nodes)"}
    # Another service's task on the same port cannot share a node either; on UDP it can.
    s.update_task(mktask("other", "svc2", **ports))
    udp = {"endpoint": {"ports": [{"target": 80, "published": 8080, "protocol": "udp", "publish_mode": "host"}]}}
    s.update_task(mktask("dns", "svc3", **udp))
    result = {d.new.id: d.new for d in s.tick()}
    assert result["other"].err == "no suitable node (host-mode port already in use on 2 nodes)"
    assert result["dns"].state == ASSIGNED
    # Ingress-mode ports are the routing mesh's: no conflict.
    ingress = {"endpoint": {"ports": [{"target": 80, "published": 8080, "publish_mode": "ingress"}]}}
    _, result = schedule(nodes, [mktask(f"i{i}", **ingress) for i in range(3)])
    assert sum(placed(result).values()) == 3


def test_max_replicas_filter() -> None:
    spec = {"placement": {"max_replicas_per_node": 2}}
    s, result = schedule([mknode("n1"), mknode("n2")], [mktask(f"t{i}", **spec) for i in range(5)])
    assert placed(result) == {"n1": 2, "n2": 2}
    assert errors(result) == {"no suitable node (max replicas per node limit exceed)"}
    # Other services do not count against the limit.
    s.update_task(mktask("x", "svc2", placement={"max_replicas_per_node": 1}))
    assert placed({d.new.id: d.new for d in s.tick()}) in ({"n1": 1}, {"n2": 1})


def test_explanation_lists_most_failures_first() -> None:
    nodes = [mknode("down1", state="down"), mknode("small1", memory=1), mknode("small2", memory=1),
             mknode("small3", memory=1), mknode("eu", memory=GB, labels={"zone": "eu"})]
    spec = {"resources": {"reservations": {"memory_bytes": GB}}, "placement": {"constraints": ["node.labels.zone==us"]}}
    _, result = schedule(nodes, [mktask("t", **spec)])
    assert errors(result) == {"no suitable node (insufficient resources on 3 nodes; "
                              "1 node not available for new tasks; scheduling constraints not satisfied on 1 node)"}


# -- placement ------------------------------------------------------------------------------------

def test_fewest_tasks_of_the_service_then_fewest_in_all() -> None:
    s = Scheduler()
    busy = [mktask(f"b{i}", "other", node="n1", state=RUNNING) for i in range(3)]
    mine = [mktask("m0", node="n2", state=RUNNING)]
    s.load([mknode("n1"), mknode("n2"), mknode("n3")], busy + mine)
    s.update_task(mktask("t1"))
    assert placed({d.new.id: d.new for d in s.tick()}) == {"n3": 1}  # n2 has one of this service already
    s.update_task(mktask("t2"))
    s.update_task(mktask("t3"))
    s.tick()
    # One each of the service on n1 and n3 now: n1 (no task of the service, 3 others) is taken
    # before them, then n2 is better than n1 (fewer tasks in all) and takes the next.
    assert [s.nodes[n].by_service.get("svc", 0) for n in ("n1", "n2", "n3")] == [1, 2, 1]
    assert [s.nodes[n].active for n in ("n1", "n2", "n3")] == [4, 2, 1]


def test_tasks_spread_evenly_and_fill_the_least_loaded_first() -> None:
    nodes = [mknode(f"n{i}") for i in range(4)]
    s = Scheduler()
    s.load(nodes, [mktask(f"pre{i}", node="n0", state=RUNNING) for i in range(3)])
    for i in range(9):
        s.update_task(mktask(f"t{i}"))
    s.tick()
    # swarmkit's scheduleNTasksOnNodes, step by step: the empty nodes in order until the next
    # one is no better (n3 takes tasks until it has more than n0's 3), then one task each in
    # turn. It evens out over later groups, not within one; the same imbalance as swarmkit's.
    assert [s.nodes[f"n{i}"].by_service["svc"] for i in range(4)] == [4, 2, 2, 4]
    _, result = schedule([mknode(f"n{i}") for i in range(4)], [mktask(f"t{i}") for i in range(9)])
    assert placed(result) == {"n0": 3, "n1": 2, "n2": 2, "n3": 2}


def test_spread_preference_over_a_label() -> None:
    # swarmkit TestSchedulerPreferences-like: one node in zone a, three in b, two unlabelled.
    nodes = [mknode("a1", labels={"zone": "a"}), *[mknode(f"b{i}", labels={"zone": "b"}) for i in range(3)],
             mknode("u1"), mknode("u2")]
    spec = {"placement": {"preferences": ["node.labels.zone"]}}
    s, result = schedule(nodes, [mktask(f"t{i}", **spec) for i in range(9)])
    counts = placed(result)
    assert counts["a1"] == 3  # a third of the tasks per branch, whatever its size
    assert sum(counts.get(f"b{i}", 0) for i in range(3)) == 3 and all(counts.get(f"b{i}") == 1 for i in range(3))
    assert counts.get("u1", 0) + counts.get("u2", 0) == 3  # nodes without the label are a branch of their own
    # Existing tasks count per branch: three more tasks go to the branches that have fewest.
    s.update_task(mktask("x1", **spec))
    s.update_task(mktask("x2", **spec))
    s.update_task(mktask("x3", **spec))
    s.remove_node("a1")
    result = {d.new.id: d.new for d in s.tick()}
    assert len(placed(result)) == 3 and sum(placed(result).values()) == 3


def test_swarmkit_preferences() -> None:
    # swarmkit testPreferences: az1 has one node, az2 four; 8 tasks: half per zone.
    nodes = [mknode("id1", labels={"az": "az1"}), *[mknode(f"id{i}", labels={"az": "az2"}) for i in range(2, 6)]]
    _, result = schedule(nodes, [mktask(f"t{i}", placement={"preferences": ["node.labels.az"]}) for i in range(8)])
    assert placed(result) == {"id1": 4, "id2": 1, "id3": 1, "id4": 1, "id5": 1}


def test_swarmkit_multiple_preferences() -> None:
    # swarmkit testMultiplePreferences: az then rack; id0 is too small, id1 can hold 5 of the 6
    # az1 should take, the other 7 spread over az2's racks.
    labels = [("az1", "rack1"), ("az1", "rack1"), ("az2", "rack1"), ("az2", "rack1"), ("az2", "rack1"),
              ("az2", "rack2"), ("az2", "rack2")]
    nodes = [mknode(f"id{i}", cpus=1, memory=100_000_000 if i == 0 else 1_000_000_000, labels={"az": az, "rack": rack})
             for i, (az, rack) in enumerate(labels)]
    spec = {"placement": {"preferences": ["node.labels.az", "node.labels.rack"]},
            "resources": {"reservations": {"memory_bytes": 200_000_000}}}
    _, result = schedule(nodes, [mktask(f"t{i}", **spec) for i in range(12)])
    counts = placed(result)
    assert sum(counts.values()) == 12 and counts.get("id0", 0) == 0 and counts["id1"] == 5
    rack1, rack2 = [counts[f"id{i}"] for i in (2, 3, 4)], [counts[f"id{i}"] for i in (5, 6)]
    assert (sorted(rack1), sorted(rack2)) in (([1, 1, 2], [1, 2]), ([1, 1, 1], [2, 2]))


def test_swarmkit_multiple_preferences_scale_up_terminates() -> None:
    # swarmkit TestMultiplePreferencesScaleUp (once an infinite loop): 2 more tasks balance
    # either dc1's racks (id12) or the two zones (id21).
    nodes = [mknode("id11", labels={"az": "dc1", "rack": "r1"}), mknode("id12", labels={"az": "dc1", "rack": "r2"}),
             mknode("id21", labels={"az": "dc2", "rack": "r1"})]
    spec = {"placement": {"preferences": ["node.labels.az", "node.labels.rack"]}}
    running = [mktask(f"run-{n}-{i}", node=n, state=RUNNING, **spec) for n, k in (("id11", 3), ("id12", 1), ("id21", 3))
               for i in range(k)]
    _, result = schedule(nodes, running + [mktask(f"t1id{i}", **spec) for i in range(2)])
    counts = placed(result)
    assert counts.get("id12", 0) + counts.get("id21", 0) == 2


def test_spread_on_a_full_branch_sends_the_rest_elsewhere() -> None:
    nodes = [mknode("a1", labels={"zone": "a"}, memory=GB), mknode("b1", labels={"zone": "b"}, memory=10 * GB)]
    spec = {"placement": {"preferences": ["node.labels.zone"]}, "resources": {"reservations": {"memory_bytes": GB}}}
    _, result = schedule(nodes, [mktask(f"t{i}", **spec) for i in range(6)])
    assert placed(result) == {"a1": 1, "b1": 5}


def test_engine_label_spread_and_unsupported_descriptors_are_skipped() -> None:
    nodes = [mknode("r1", engine_labels={"rack": "1"}), mknode("r1b", engine_labels={"rack": "1"}),
             mknode("r2", engine_labels={"rack": "2"})]
    _, result = schedule(nodes, [mktask(f"t{i}", placement={"preferences": ["engine.labels.rack"]}) for i in range(4)])
    assert placed(result)["r2"] == 2
    _, result = schedule(nodes, [mktask(f"t{i}", placement={"preferences": ["node.hostname"]}) for i in range(3)])
    assert placed(result) == {"r1": 1, "r1b": 1, "r2": 1}  # no such spread: plain spreading


def test_repeated_failures_push_a_node_back() -> None:
    s = Scheduler()
    s.load([mknode("bad"), mknode("good")], [mktask("g1", "other", node="good", state=RUNNING),
                                              mktask("g2", "other", node="good", state=RUNNING)])
    for i in range(5):
        s.update_task(mktask(f"f{i}", node="bad", state=RUNNING), now=100.0)
        s.update_task(mktask(f"f{i}", node="bad", state=int(TaskState.FAILED)), now=100.0)
    s.update_task(mktask("t"))
    result = {d.new.id: d.new for d in s.tick(now=110.0)}
    assert placed(result) == {"good": 1}  # though it has more tasks in all
    s.update_task(mktask("t2"))
    result = {d.new.id: d.new for d in s.tick(now=110.0 + 301)}  # the failures are old now
    assert placed(result) == {"bad": 1}


def test_preassigned_tasks_are_checked_on_their_node_first() -> None:
    # swarmkit TestPreassignedTasks: the two preassigned tasks go first, so task1 goes to node2.
    nodes = [mknode("node1"), mknode("node2")]
    tasks = [mktask("task1"), mktask("task2", "global", node="node1"), mktask("task3", "global", node="node1")]
    s = Scheduler()
    s.load(nodes, tasks)
    pre = s.process_preassigned()
    assert [(d.new.id, d.new.node_id, d.message) for d in pre] == [
        ("task2", "node1", "scheduler confirmed task can run on preassigned node"),
        ("task3", "node1", "scheduler confirmed task can run on preassigned node")]
    (d,) = s.tick()
    assert (d.new.id, d.new.node_id, d.message) == ("task1", "node2", "scheduler assigned task to node")


def test_a_preassigned_task_that_does_not_fit_says_why_without_no_suitable_node() -> None:
    s = Scheduler()
    spec = {"resources": {"reservations": {"memory_bytes": 2 * GB}}}
    s.load([mknode("small", memory=GB)], [mktask("g", "global", node="small", **spec)])
    (d,) = s.process_preassigned()
    assert d.new.state == PENDING and d.new.err == "insufficient resources on 1 node"
    s.add_or_update_node(mknode("small", memory=4 * GB))
    (d,) = s.process_preassigned()
    assert d.new.state == ASSIGNED and s.nodes["small"].memory == 2 * GB


def test_a_hundred_tasks_of_one_group_use_the_tree_once() -> None:
    nodes = [mknode(f"n{i:02}", cpus=4, memory=8 * GB, labels={"zone": "abc"[i % 3]}) for i in range(30)]
    spec = {"placement": {"preferences": ["node.labels.zone"], "constraints": ["node.role==worker"]},
            "resources": {"reservations": {"nano_cpus": 500_000_000}}}
    _, result = schedule(nodes, [mktask(f"t{i}", **spec) for i in range(200)])
    counts = placed(result)
    assert sum(counts.values()) == 200 and max(counts.values()) - min(counts.values()) <= 1
    assert max(counts.values()) <= 8  # 4 CPUs / 0.5 reserved


# -- the store pass ---------------------------------------------------------------------------------

@pytest.fixture
def store(tmp_path: Path):
    scheduler.reset()
    s = SQLiteStore(tmp_path / "state.db")
    yield s
    s.close()
    scheduler.reset()


def add(store: SQLiteStore, nodes: list[Node], service: str = "svc", replicas: int = 0, **spec: Any) -> list[str]:
    ids = []
    with store.transaction() as tx:
        for n in nodes:
            tx.create("node", n.to_dict())
        if tx.get("service", service) is None:
            tx.create("service", {"id": service, "name": service, "spec": spec, "spec_version": 1})
        for i in range(replicas):
            t = Task(id=f"{service}-{i}", service_id=service, service_name=service, slot=i + 1, spec_version=1,
                     spec=spec, created_at=float(i))
            t.advance(TaskState.PENDING, "pending task scheduling")
            tx.create("task", t.to_dict())
            ids.append(t.id)
    return ids


def run(store: SQLiteStore, now: float = 100.0) -> dict[str, Task]:
    with store.transaction() as tx:
        scheduler.reconcile(tx, now)
    return {t["id"]: Task.from_dict(t) for t in store.list("task")}


def test_store_pass_writes_assignments_and_explanations_once(store: SQLiteStore) -> None:
    spec = {"resources": {"reservations": {"memory_bytes": GB}}}
    add(store, [mknode("n1", memory=2 * GB), mknode("n2", state="down", memory=8 * GB)], replicas=3, **spec)
    tasks = run(store)
    assert sorted(t.node_id for t in tasks.values() if t.status.state == TaskState.ASSIGNED) == ["n1", "n1"]
    (pending,) = [t for t in tasks.values() if t.status.state == TaskState.PENDING]
    # The counts since the last node that took a task, as swarmkit's (see the generic test).
    assert pending.status.err == "no suitable node (insufficient resources on 1 node)"
    assert {t.status.message for t in tasks.values() if t.node_id} == {"scheduler assigned task to node"}
    # The next tick no node takes anything, so every node is counted, as in swarmkit's next tick.
    tasks = run(store, 101.0)
    assert tasks[pending.id].status.err == (
        "no suitable node (1 node not available for new tasks; insufficient resources on 1 node)")
    revision = store.revision()
    run(store, 101.5)
    assert store.revision() == revision, "a pass with nothing new writes nothing"
    # The node comes back (an update of the node record): the pending task is placed on it.
    with store.transaction() as tx:
        raw = Node.from_dict(tx.get("node", "n2"))
        raw.status.state = "ready"
        tx.update("node", raw.to_dict())
    tasks = run(store, 102.0)
    assert tasks[pending.id].node_id == "n2" and tasks[pending.id].status.state == TaskState.ASSIGNED


def test_store_pass_frees_a_finished_tasks_reservation(store: SQLiteStore) -> None:
    spec = {"resources": {"reservations": {"nano_cpus": 1_000_000_000}}}
    add(store, [mknode("n1", cpus=1)], replicas=2, **spec)
    tasks = run(store)
    (done,) = [t for t in tasks.values() if t.node_id]
    (waiting,) = [t for t in tasks.values() if not t.node_id]
    assert waiting.status.err == "no suitable node (insufficient resources on 1 node)"
    with store.transaction() as tx:
        t = Task.from_dict(tx.get("task", done.id))
        t.advance(TaskState.COMPLETE, "finished")
        tx.update("task", t.to_dict())
    assert run(store, 101.0)[waiting.id].node_id == "n1"


def test_store_pass_sees_deleted_tasks_and_new_labels(store: SQLiteStore) -> None:
    spec = {"placement": {"constraints": ["node.labels.zone==eu"], "max_replicas_per_node": 1}}
    ids = add(store, [mknode("n1"), mknode("n2", labels={"zone": "eu"})], replicas=2, **spec)
    tasks = run(store)
    assert [tasks[i].node_id for i in ids].count("n2") == 1
    (waiting,) = [tasks[i] for i in ids if not tasks[i].node_id]
    assert waiting.status.err == "no suitable node (max replicas per node limit exceed)"
    # Label n1 (a node update, as `node update --label-add`): the waiting task goes there.
    with store.transaction() as tx:
        n1 = Node.from_dict(tx.get("node", "n1"))
        n1.labels["zone"] = "eu"
        tx.update("node", n1.to_dict())
    assert run(store, 101.0)[waiting.id].node_id == "n1"
    # The task on n2 is deleted; a new one may take its place there.
    with store.transaction() as tx:
        tx.delete("task", next(i for i in ids if i != waiting.id))
    add(store, [], replicas=0)
    with store.transaction() as tx:
        t = Task(id="late", service_id="svc", service_name="svc", slot=3, spec_version=1, spec=spec)
        t.advance(TaskState.PENDING, "pending task scheduling")
        tx.create("task", t.to_dict())
    assert run(store, 102.0)["late"].node_id == "n2"


def test_store_pass_shuts_down_unwanted_pending_tasks_and_confirms_preassigned(store: SQLiteStore) -> None:
    add(store, [mknode("n1")])
    with store.transaction() as tx:
        gone = Task(id="gone", service_id="svc", service_name="svc", slot=1, desired_state=TaskState.SHUTDOWN)
        gone.advance(TaskState.PENDING, "pending task scheduling")
        glob = Task(id="glob", service_id="svc", service_name="svc", slot=0, node_id="n1")
        glob.advance(TaskState.PENDING, "pending task scheduling")
        tx.create("task", gone.to_dict())
        tx.create("task", glob.to_dict())
    tasks = run(store)
    assert tasks["gone"].status.state == TaskState.SHUTDOWN and not tasks["gone"].node_id
    assert tasks["glob"].status.state == TaskState.ASSIGNED
    assert tasks["glob"].status.message == "scheduler confirmed task can run on preassigned node"


def test_store_pass_after_a_rolled_back_transaction(store: SQLiteStore) -> None:
    # The core assigned the task, the transaction was rolled back: the next pass must see the
    # task unassigned again (with max 1 per node, a stale count would refuse it).
    add(store, [mknode("n1")], replicas=1, placement={"max_replicas_per_node": 1})
    with pytest.raises(RuntimeError), store.transaction() as tx:
        scheduler.reconcile(tx, 100.0)
        raise RuntimeError("a later loop of the pass failed")
    assert not store.get("task", "svc-0")["node_id"]
    task = run(store, 101.0)["svc-0"]
    assert task.node_id == "n1" and task.status.state == TaskState.ASSIGNED


def test_store_pass_follows_a_switch_of_store(tmp_path: Path) -> None:
    # Two stores with the same node ID and different labels, one after the other in one process.
    scheduler.reset()
    spec = {"placement": {"constraints": ["node.labels.zone==eu"]}}
    first = SQLiteStore(tmp_path / "a.db")
    add(first, [mknode("n1", labels={"zone": "eu"})], replicas=1, **spec)
    assert run(first)["svc-0"].node_id == "n1"
    first.close()
    second = SQLiteStore(tmp_path / "b.db")
    add(second, [mknode("n1")], replicas=1, **spec)
    task = run(second)["svc-0"]
    assert not task.node_id and task.status.err == "no suitable node (scheduling constraints not satisfied on 1 node)"
    second.close()
    scheduler.reset()


# -- the node record --------------------------------------------------------------------------------

def test_node_record_round_trips_and_reads_the_first_layout() -> None:
    n = mknode("n1", cpus=2, memory=GB, labels={"a": "b"}, engine_labels={"e": "f"}, addr="10.0.0.2")
    assert Node.from_dict(n.to_dict()) == n
    old = {"id": "x", "hostname": "h", "role": "worker", "availability": "drain", "state": "down", "addr": "1.2.3.4",
           "labels": {"zone": "eu"}, "nano_cpus": 4_000_000_000, "memory_bytes": 9, "engine_version": "0.1", "version": 7}
    m = Node.from_dict(old)
    assert (m.state, m.addr, m.nano_cpus, m.memory_bytes, m.engine_version) == ("down", "1.2.3.4", 4_000_000_000, 9, "0.1")
    assert (m.status.state, m.resources.nano_cpus, m.availability, m.labels, m.version) == ("down", 4_000_000_000, "drain", {"zone": "eu"}, 7)
    assert m.manager_status is None and m.platform.os == "linux"
    # Registered again over an old record (the daemon merges the new fields in): the records win.
    merged = dict(old, **{k: v for k, v in Node(id="x", hostname="h", state="ready", nano_cpus=8).to_dict().items()
                          if k != "version"})
    assert Node.from_dict(merged).state == "ready" and Node.from_dict(merged).nano_cpus == 8
    # TLS info as manager/ca.py hands it out (the API's names) and back.
    api = {"TrustRoot": "-----BEGIN CERTIFICATE-----", "CertIssuerSubject": "MBMx", "CertIssuerPublicKey": "MFkw"}
    n.tls_info = TLSInfo.from_api(api)
    assert Node.from_dict(n.to_dict()).tls_info.to_api() == api
