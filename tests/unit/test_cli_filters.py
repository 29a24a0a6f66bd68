"""Docker's --filter rules (docker/cli opts.FilterOpt, moby filters.Args and daemon/list.go's
ps filters) on shoal's implementation, cases taken from moby's parse_test.go and list_test.go."""

from __future__ import annotations

import pytest

from shoal.cli.filters import FilterError, Filters, PsItem, ps_filter
from shoal.errors import InvalidArgument


def test_parse_lowercases_and_trims_keys_and_ignores_empty():
    f = Filters.parse([" Label = a=b ", "name=web", "name=web", "", "name=db"])
    assert f.to_dict() == {"label": ["a=b"], "name": ["web", "db"]}


def test_parse_without_equals_is_the_flags_own_error():
    with pytest.raises(InvalidArgument) as exc:
        Filters.parse(["dangling"])
    assert str(exc.value) == ('invalid argument "dangling" for "-f, --filter" flag: '
                              "bad format of filter (expected name=value)")
    assert exc.value.exit_code == 125


def test_unknown_key_is_the_daemons_invalid_filter():
    with pytest.raises(FilterError) as exc:
        Filters.parse(["colour=red"]).validate(["name"])
    assert str(exc.value) == "invalid filter 'colour'" and exc.value.exit_code == 1
    assert exc.value.from_daemon


def test_match_exact_then_unanchored_regexp_and_bad_regexp_skipped():
    f = Filters.parse(["name=^web", "name=[", "name=db$"])
    assert f.match("name", "web_1") and f.match("name", "my_db")
    assert not f.match("name", "cache")
    assert Filters().match("name", "anything")  # no values: everything matches


def test_match_kv_list_requires_every_label():
    f = Filters.parse(["label=a", "label=b=2"])
    assert f.match_kv_list("label", {"a": "", "b": "2"})
    assert not f.match_kv_list("label", {"a": "x"})
    assert not f.match_kv_list("label", {"a": "x", "b": "3"})
    assert not f.match_kv_list("label", {})


def test_bool_filter_values():
    assert Filters.parse(["dangling=true"]).get_bool_or_default("dangling", False) is True
    assert Filters.parse(["dangling=0"]).get_bool_or_default("dangling", True) is False
    assert Filters.parse(["dangling=1", "dangling=true"]).get_bool_or_default("dangling", False) is True
    for values in (["dangling=TRUE"], ["dangling=1", "dangling=false"]):  # moby: exact words, no conflict
        with pytest.raises(FilterError, match=r"^invalid filter 'dangling=\["):
            Filters.parse(values).get_bool_or_default("dangling", False)
    with pytest.raises(FilterError, match=r"^invalid filter 'dangling=\[maybe\]'$"):  # Go's []string
        Filters.parse(["dangling=maybe"]).get_bool_or_default("dangling", False)


def _items() -> list[PsItem]:
    # newest first, as `ps` lists them
    return [
        PsItem(id="c" * 64, name="web_2", state="running", labels={"tier": "front"}, image_id="img2",
               ports=[(8080, 80, "tcp")], networks={"front": "net111"}, mounts=[("data", "/data")],
               managed=True),
        PsItem(id="b" * 64, name="db", state="exited", exit_code=3, started=True, labels={"tier": "back"},
               image_id="img1", networks={"bridge": ""}),
        PsItem(id="a" * 64, name="web_1", state="created", labels={"tier": "front", "x": "1"}, image_id="img1"),
    ]


def names(items) -> list[str]:
    return [i.name for i in items]


def test_default_shows_running_only_and_status_implies_all():
    assert names(ps_filter(_items(), Filters(), show_all=False)) == ["web_2"]
    assert names(ps_filter(_items(), Filters.parse(["status=exited"]), show_all=False)) == ["db"]
    assert names(ps_filter(_items(), Filters.parse(["status=created", "status=exited"]), False)) == ["db", "web_1"]


def test_same_key_ors_different_keys_and():
    f = Filters.parse(["name=web", "label=tier=front"])
    assert names(ps_filter(_items(), f, show_all=True)) == ["web_2", "web_1"]
    f = Filters.parse(["name=web", "status=created"])
    assert names(ps_filter(_items(), f, show_all=True)) == ["web_1"]


def test_exited_only_started_containers_with_that_code():
    assert names(ps_filter(_items(), Filters.parse(["exited=3"]), show_all=True)) == ["db"]
    assert names(ps_filter(_items(), Filters.parse(["exited=0"]), show_all=True)) == []
    with pytest.raises(FilterError, match='strconv.Atoi: parsing "x": invalid syntax'):
        ps_filter(_items(), Filters.parse(["exited=x"]), show_all=True)


def test_before_and_since_by_name_or_id():
    assert names(ps_filter(_items(), Filters.parse(["before=db"]), show_all=True)) == ["web_1"]
    assert names(ps_filter(_items(), Filters.parse(["since=" + "b" * 12]), show_all=True)) == ["web_2"]
    with pytest.raises(FilterError, match="No such container: nope"):
        ps_filter(_items(), Filters.parse(["since=nope"]), show_all=True)


def test_id_by_unique_prefix_network_volume_publish_expose_istask_ancestor():
    every = _items()
    assert names(ps_filter(every, Filters.parse(["id=bbbb"]), True)) == ["db"]
    assert names(ps_filter(every, Filters.parse(["network=front"]), True)) == ["web_2"]
    assert names(ps_filter(every, Filters.parse(["network=net1"]), True)) == ["web_2"]  # ID prefix
    assert names(ps_filter(every, Filters.parse(["volume=/data"]), True)) == ["web_2"]
    assert names(ps_filter(every, Filters.parse(["volume=data"]), True)) == ["web_2"]
    assert names(ps_filter(every, Filters.parse(["publish=8000-8100"]), True)) == ["web_2"]
    assert names(ps_filter(every, Filters.parse(["expose=80/udp"]), True)) == []
    assert names(ps_filter(every, Filters.parse(["is-task=true"]), True)) == ["web_2"]
    assert names(ps_filter(every, Filters.parse(["is-task=false"]), True)) == ["db", "web_1"]
    assert names(ps_filter(every, Filters.parse(["ancestor=x"]), True, ancestors={"img1"})) == ["db", "web_1"]
    assert names(ps_filter(every, Filters.parse(["ancestor=x"]), True, ancestors=set())) == []


def test_last_n_includes_stopped_and_limits():
    assert names(ps_filter(_items(), Filters(), show_all=False, limit=2)) == ["web_2", "db"]


@pytest.mark.parametrize("item,message", [
    ("status=sleeping", "invalid filter 'status=sleeping'"),
    ("health=fine", "Unrecognised filter value for health: fine"),
    ("is-task=maybe", "invalid filter 'is-task=[maybe]'"),
    ("publish=1.2.3.4:80", "filter for 'publish' should not contain ':': 1.2.3.4:80"),
    ("isolated=1", "invalid filter 'isolated'"),
])
def test_ps_filter_errors_in_mobys_words(item, message):
    with pytest.raises(FilterError) as exc:
        ps_filter(_items(), Filters.parse([item]), show_all=False)
    assert str(exc.value) == message


def _svc(sid: str, name: str, mode: str = "replicated", labels: dict[str, str] | None = None) -> dict:
    return {"id": sid, "name": name, "spec": {"mode": mode, "labels": labels or {}}}


def test_service_ls_filters_as_mobys_get_services():
    from shoal.cli.service import filter_services

    svcs = [_svc("abc123", "web_front", labels={"tier": "front"}), _svc("abd456", "web_back", "global"),
            _svc("xyz789", "batch", "replicated-job")]
    pick = lambda *f: [s["name"] for s in filter_services(svcs, list(f))]  # noqa: E731
    assert pick("id=ab") == ["web_front", "web_back"]
    assert pick("name=web_") == ["web_front", "web_back"] and pick("name=front") == []  # a prefix
    assert pick("mode=global", "mode=replicated-job") == ["web_back", "batch"]
    assert pick("label=tier") == ["web_front"] and pick("label=tier=back") == []
    with pytest.raises(FilterError, match="^invalid filter 'node'$"):
        pick("node=x")


def test_service_ps_task_filters():
    from shoal.cli.service import filter_tasks

    tasks = [{"id": "t1aaa", "service_name": "web", "service_id": "s1", "slot": 1, "node_id": "n1",
              "desired_state": "running"},
             {"id": "t2bbb", "service_name": "web", "service_id": "s1", "slot": 2, "node_id": "n2",
              "desired_state": "shutdown"}]
    pick = lambda *f: [t["id"] for t in filter_tasks(tasks, list(f), {"n1": "alpha", "n2": "beta"})]  # noqa: E731
    assert pick("desired-state=running") == ["t1aaa"]
    assert pick("node=beta") == ["t2bbb"] and pick("node=n1", "node=n2") == ["t1aaa", "t2bbb"]
    assert pick("name=web.2") == ["t2bbb"] and pick("id=t1") == ["t1aaa"]
    with pytest.raises(FilterError, match="^invalid filter 'colour'$"):
        pick("colour=red")


def test_service_ps_desired_state_is_any_task_state_matched_exactly():
    """moby's newListTasksFilters takes any task state's name, swarmkit's ListTasks matches it
    exactly: a running job's task is desired `complete`, a parked restart `ready`."""
    from shoal.cli.service import filter_tasks
    from shoal.errors import InvalidArgument

    tasks = [{"id": f"t{n}", "service_name": "job", "service_id": "s1", "slot": n, "node_id": "n1",
              "desired_state": desired} for n, desired in enumerate(("complete", "ready", "running", "remove"), 1)]
    pick = lambda *f: [t["id"] for t in filter_tasks(tasks, list(f))]  # noqa: E731
    assert pick("desired-state=complete") == ["t1"] and pick("desired-state=Ready") == ["t2"]
    assert pick("desired-state=running") == ["t3"] and pick("desired-state=shutdown") == []
    assert pick("desired-state=running", "desired-state=complete") == ["t1", "t3"]
    with pytest.raises(InvalidArgument, match="^Invalid desired-state filter: 'done'$"):
        pick("desired-state=done")
