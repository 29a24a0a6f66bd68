"""--format templates: Go's text/template with docker/cli's functions, on the CLI's objects; the
`json` format as docker prints a list row (sorted keys, <>& escaped) and `table` headers."""

from __future__ import annotations

import io

import pytest

from shoal.cli.format import print_formatted, render_template
from shoal.gotemplate import TemplateError, render

ROW = {"ID": "0123abcd", "Names": "web", "Labels": "com.x=y,tier=front", "Image": "<none>", "N": 0,
       "Mounts": [{"Source": "/s", "Destination": "/d"}, {"Source": "/t", "Destination": "/e"}],
       "Config": {"Labels": {"k": "v", "a": "b"}, "Image": "img", "Env": ["A=1", "B=2"]}}


@pytest.mark.parametrize("template,expected", [
    ("{{.Names}}", "web"),
    ("{{.Config.Image}}", "img"),
    ('{{.Label "com.x"}} {{.Label "nope"}}|', "y |"),
    ("{{range .Mounts}}{{.Source}}:{{.Destination}} {{end}}", "/s:/d /t:/e "),
    ("{{range $i, $m := .Mounts}}{{$i}}={{$m.Source}};{{end}}", "0=/s;1=/t;"),
    ("{{range $k, $v := .Config.Labels}}{{$k}}={{$v}},{{end}}", "a=b,k=v,"),  # map keys sorted
    ("{{range .Config.Labels.none}}x{{else}}empty{{end}}", "empty"),
    ("{{if .N}}yes{{else if .Names}}names{{else}}no{{end}}", "names"),
    ("{{with .Config}}{{.Image}}{{end}}", "img"),
    ('{{index .Config.Labels "k"}} {{index .Config.Env 1}}', "v B=2"),
    ("{{.Names | upper}} {{upper .Names | lower}}", "WEB web"),
    ('{{join .Config.Env ","}} {{join (split .Labels ",") "|"}}', "A=1,B=2 com.x=y|tier=front"),
    ("{{title .Names}} {{pad .Names 1 2}}| {{truncate .ID 4}}", "Web  web  | 0123"),
    ("{{json .Config.Env}} {{json .Image}}", '["A=1","B=2"] "<none>"'),  # json function: no HTML escaping
    ("{{.Config.Labels.zz}}", "<no value>"),
    ('{{printf "%-5s|%d" .Names 3}}', "web  |3"),
    ("{{len .Mounts}} {{if eq .Names \"db\" \"web\"}}E{{end}} {{if not .N}}Z{{end}}", "2 E Z"),
    ("a  {{- .Names -}}  b {{/* a comment */}}", "awebb "),
    ("{{.Config.Env}} {{.Config.Labels}}", "[A=1 B=2] map[a:b k:v]"),
])
def test_templates(template, expected):
    assert render(template, ROW) == expected


@pytest.mark.parametrize("template,message", [
    ("{{.Nope}}", "can't evaluate field Nope"),
    ("{{if .Names}}x", "unexpected EOF"),
    ("{{end}}", "unexpected {{end}}"),
    ("{{nofunc .Names}}", 'function "nofunc" not defined'),
    ("{{.Names \"arg\"}}", "can't give argument to non-function .Names"),
])
def test_template_errors(template, message):
    with pytest.raises(TemplateError, match=message) as exc:
        render(template, ROW)
    assert exc.value.exit_code == 1  # RunE's error, not a flag error


def test_json_format_is_one_sorted_escaped_object_per_line():
    out = io.StringIO()
    rows = [{"Names": "b", "ID": "2", "Image": "<none>"}, {"Names": "a&", "ID": "1", "Image": "x"}]
    print_formatted("json", [], [], rows, out=out)
    assert out.getvalue() == ('{"ID":"2","Image":"\\u003cnone\\u003e","Names":"b"}\n'
                              '{"ID":"1","Image":"x","Names":"a\\u0026"}\n')


def test_table_template_headers_from_the_fields():
    out = io.StringIO()
    print_formatted("table {{.ID}}\\t{{.Names | upper}}\\t{{.Other}}", ["CONTAINER ID", "NAMES"], ["ID", "Names"],
                    [{"ID": "0123", "Names": "web", "Other": "o"}], out=out)
    assert out.getvalue() == "CONTAINER ID   NAMES     OTHER\n0123           WEB       o\n"


def test_backslash_t_and_n_are_a_tab_and_a_newline():
    assert render_template("{{.Names}}\\t{{.ID}}\\n", ROW) == "web\t0123abcd\n"
