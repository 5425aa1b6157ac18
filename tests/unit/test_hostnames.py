"""HostnameGenerator templates and the hostnames they give services (model/hostnames.py)."""
from __future__ import annotations

import pytest

from appliance.core.resources.model import Resource
from appliance.model import hostnames


def _ms(name: str, created: str, **labels: str) -> Resource:
    return Resource("MeshService", "default", name, {"spec": {}}, {"kuma.io/origin": "zone", **labels},
                    creation_time=created)


def _generator(name: str, template: str, created: str = "2026-01-01T00:00:00Z", origin: str = "zone",
               **match: str) -> Resource:
    return Resource("HostnameGenerator", "", name, {"spec": {"template": template, "selector": {"meshService": {
        "matchLabels": match or {"kuma.io/origin": "zone"}}}}}, {"kuma.io/origin": origin}, creation_time=created)


def test_templates_evaluate_kumas_fields_and_labels() -> None:
    ms = _ms("redis", "t", **{"kuma.io/display-name": "cache", "team": "a"})
    assert hostnames.hostname("{{ .DisplayName }}.svc.mesh.local", ms, "east") == "cache.svc.mesh.local"
    assert hostnames.hostname('{{.Name}}.{{ label "team" }}.{{ .Zone }}.{{ .Mesh }}', ms, "east") == \
        "redis.a.east.default"
    assert hostnames.hostname("{{ .Name -}} . {{- .Mesh }}", ms, "east") == "redis.default"
    with pytest.raises(hostnames.TemplateError, match="label nope not found"):
        hostnames.hostname('{{ label "nope" }}.mesh', ms, "east")
    with pytest.raises(hostnames.TemplateError, match="not a valid DNS name"):
        hostnames.hostname("{{ .Name }}_x", ms, "east")


def test_what_a_generator_may_hold() -> None:
    assert hostnames.template_problem("{{ .DisplayName }}.svc.mesh.local") is None
    assert hostnames.template_problem("") == "must not be empty"
    assert hostnames.template_problem('{{ printf "%s" .Name }}').startswith("couldn't parse template: unsupported")
    assert hostnames.template_problem("{{ .Name ").startswith("couldn't parse template")
    assert hostnames.template_problem("{{ .Bogus }}.mesh").startswith("couldn't parse template: can't evaluate")


def test_addresses_collisions_and_template_errors_in_status() -> None:
    older, newer = _ms("a", "2026-01-01T00:00:00Z", **{"kuma.io/display-name": "x"}), \
        _ms("b", "2026-01-02T00:00:00Z", **{"kuma.io/display-name": "x"})
    other = Resource("MeshService", "default", "c", {"spec": {}}, {"kuma.io/origin": "global"})
    generators = [_generator("local", "{{ .DisplayName }}.svc.mesh.local"),
                  _generator("broken", '{{ label "team" }}.mesh')]
    out = hostnames.generate(generators, [newer, older, other], "meshService", "zone-1")
    assert out[("default", "a")].addresses == [{"hostname": "x.svc.mesh.local", "origin": "HostnameGenerator",
                                                "hostnameGeneratorRef": {"coreName": "local"}}]
    assert out[("default", "a")].generators == [
        {"hostnameGeneratorRef": {"coreName": "broken"}, "conditions": [{
            "type": "Generated", "status": "False", "reason": "TemplateError",
            "message": "error calling label: label team not found"}]},
        {"hostnameGeneratorRef": {"coreName": "local"}, "conditions": [{
            "type": "Generated", "status": "True", "reason": "Generated", "message": ""}]}]
    assert out[("default", "b")].addresses == []          # the older service has the name
    assert out[("default", "b")].generators[1]["conditions"][0]["reason"] == "Collision"
    assert out[("default", "c")] == hostnames.Generated([], [])   # selected by neither
