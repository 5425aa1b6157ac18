"""`--dataplane-var` templating renders as Kuma 2.14's (hoisie/mustache) does."""
from __future__ import annotations

import pytest

from appliance.dp.template import TemplateError, parse_vars, render

KUMA_TEMPLATE = """type: Dataplane
mesh: default
name: {{ name }}
networking:
  address: {{ address }}
"""


def test_kuma_testdata_template() -> None:
    # app/kuma-dp/cmd/testdata/dataplane_template.yaml, as Kuma's run test renders it
    out = render(KUMA_TEMPLATE, {"name": "backend-01", "address": "192.168.0.2"})
    assert out.text == KUMA_TEMPLATE.replace("{{ name }}", "backend-01").replace("{{ address }}", "192.168.0.2")
    assert out.undefined == []


@pytest.mark.parametrize("template,values,expected", [
    ("{{name}}|{{ name }}|{{  name  }}", {"name": "x"}, "x|x|x"),
    ("{{ v }}", {"v": "a&b<c>\"d'"}, "a&amp;b&lt;c&gt;&#34;d&#39;"),        # Go's HTMLEscapeString
    ("{{{ v }}}|{{{v}}}", {"v": "a&b"}, "a&b|a&b"),                         # triple mustache is raw
    ("{{ a.b }}-{{ a.c }}", {"a.b": "1", "a.c": "2"}, "1-2"),                # dotted keys nest
    ("{{ missing }}!", {}, "!"),                                              # undefined: nothing
    ("{{ .name }}!", {"name": "x"}, "!"),                                    # Go-template style: nothing
    ("{{! a comment }}x", {}, "x"),
    ("{{# on }}\nyes\n{{/ on }}\nend", {"on": ""}, "yes\n\nend"),  # defined, even empty: renders; only the
    # newline after an opening section tag is eaten, not the one after the closing tag
    ("{{# off }}\nyes\n{{/ off }}end", {}, "end"),
    ("{{^ off }}\nno\n{{/ off }}end", {}, "no\nend"),
    ("{{^ on }}no{{/ on }}end", {"on": "1"}, "end"),
    ("{{# a }}{{ b }}{{/ a }}", {"a.b": "in"}, "in"),                         # a map section opens its scope
    ("{{=<% %>=}}<% name %> {{ name }}", {"name": "x"}, "x {{ name }}"),      # new delimiters
    ("{{ a }}", {"a.b": "1"}, "map[b:1]"),                                  # Go prints a map so
    ("no tags at all", {"x": "y"}, "no tags at all"),
])
def test_render(template: str, values: dict[str, str], expected: str) -> None:
    assert render(template, values).text == expected


def test_undefined_names_are_reported_once() -> None:
    assert render("{{ a }}{{ .b }}{{ a }}{{ c }}", {"c": "1"}).undefined == ["a", ".b"]


@pytest.mark.parametrize("template,message", [
    ("name: {{ name", "line 1: unmatched open tag"),
    ("a\n{{ }}", "line 2: empty tag"),
    ("{{# a }}x", "section 'a' has no closing tag"),
    ("{{# a }}x{{/ b }}", "interleaved closing tag"),
    ("x{{/ a }}", "unmatched close tag"),
    ("{{> other }}", "partials"),
])
def test_template_errors(template: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        render(template, {})


@pytest.mark.parametrize("flags,expected", [
    (["name=web-1"], {"name": "web-1"}),
    (["name=web-1", "address=10.0.0.1"], {"name": "web-1", "address": "10.0.0.1"}),
    (["name=web-1,address=10.0.0.1"], {"name": "web-1", "address": "10.0.0.1"}),   # CSV when several '='
    (["tags=a,b"], {"tags": "a,b"}),                                               # one '=': kept whole
    (["x=1", "x=2"], {"x": "2"}),
    (["empty="], {"empty": ""}),
    (['"quoted=v"'], {"quoted": "v"}),
])
def test_parse_vars(flags: list[str], expected: dict[str, str]) -> None:
    assert parse_vars(flags) == expected


@pytest.mark.parametrize("flag", ["novalue", "a=1,b=2,c"])
def test_parse_vars_rejects_pairs_without_equals(flag: str) -> None:
    with pytest.raises(TemplateError, match="must be formatted as key=value"):
        parse_vars([flag])
