"""The GUI's falcon handlers: read the model, render HTML. Read-only: every handler answers GET only."""
from __future__ import annotations

import socket
from importlib import resources
from typing import Any

import falcon

from appliance import KUMA_COMPAT_VERSION, PRODUCT, __version__
from appliance.api import auth, codec
from appliance.api.errors import KumaError
from appliance.api.inspect import XdsInspector, xds_config
from appliance.core.manager import ResourceManager
from appliance.core.resources import registry
from appliance.core.resources.model import Resource
from appliance.model.proxy import GenerationError
from appliance.gui import model
from appliance.gui._html import (INTERNAL_BASE, Html, join, labels, link, pre_json, pre_yaml, rebase, render, status,
                                 table, tag, url)

# Only our own files, no inline script or style: a name that slipped past escaping still could not run.
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
_STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".svg": "image/svg+xml"}
REFRESH_HEADER = "X-Kuma-Gui-Refresh"


class Pages:
    """Shared by every page: the layout around a body, errors as pages."""

    def __init__(self, manager: ResourceManager, instance_id: str, link_base: str = INTERNAL_BASE) -> None:
        self.manager = manager
        self.instance_id = instance_id
        self.hostname = socket.gethostname()
        self.link_base = link_base   # where a browser reaches the GUI (apiServer.gui basePath or rootUrl's path)

    def reply(self, resp: falcon.Response, title: str, crumbs: list[tuple[str, str]], body: Html,
              code: int = 200) -> None:
        resp.status = code
        resp.content_type = "text/html; charset=utf-8"
        resp.set_header("Content-Security-Policy", _CSP)
        resp.set_header("X-Content-Type-Options", "nosniff")
        resp.set_header("Cache-Control", "no-store")
        resp.text = rebase(render("layout.html", title=title, body=body, product=PRODUCT, version=__version__,
                                  based_on=KUMA_COMPAT_VERSION, instance=self.instance_id,
                                  crumbs=join(link(href, text) for text, href in [("Overview", url("")), *crumbs])),
                           self.link_base)

    def not_found(self, resp: falcon.Response, message: str) -> None:
        self.reply(resp, "Not found", [], render("error.html", message=message), 404)

    def mesh(self, resp: falcon.Response, name: str) -> Resource | None:
        found = self.manager.get("Mesh", "", name)
        if found is None:
            self.not_found(resp, f"There is no mesh {name!r}.")
        return found


def _count(value: dict[str, Any], key: str) -> int:
    return int(value.get(key, 0))


class Overview:
    def __init__(self, pages: Pages) -> None:
        self.pages = pages

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        view = model.overview(self.pages.manager)
        meshes = table(["Mesh", "Proxies", "Online", "Partially degraded", "Offline", "Policies", "mTLS"], [
            [link(url("meshes", m["name"]), m["name"]), _count(m["dataplanes"], "total"),
             _count(m["dataplanes"], "online"), _count(m["dataplanes"], "partiallyDegraded"),
             _count(m["dataplanes"], "offline"), sum(p["total"] for p in m["policies"].values()),
             m["mTLS"].get("error") or ", ".join(m["mTLS"]["issuedBackends"]) or "off"]
            for m in view.meshes], empty="No meshes.")
        instances = table(["Instance", "Proxies connected"],
                          [[i or "(unknown)", n] for i, n in sorted(view.instances.items())],
                          empty="No proxy is connected.")
        body = render("overview.html", meshes=meshes, instances=instances, product=PRODUCT, version=__version__,
                      based_on=KUMA_COMPAT_VERSION, instance=self.pages.instance_id, hostname=self.pages.hostname,
                      egresses_online=view.egresses[0], egresses_total=view.egresses[1])
        self.pages.reply(resp, "Overview", [], body)


def _proxy_table(rows: list[model.ProxyRow], mesh: str | None) -> Html:
    def name(row: model.ProxyRow) -> Html | str:
        return link(url("meshes", mesh, "dataplanes", row.name), row.name) if mesh else row.name
    return table(["Name", "Status", "Services", "Address", "Envoy", "kuma-dp", "Certificate expires",
                  "Last connected", "Control plane"],
                 [[name(r), status(r.status), ", ".join(r.services), r.address, r.envoy, r.kuma_dp,
                   r.cert_expiry, r.last_connect, r.instance] for r in rows], empty="No proxies.")


class ToOverview:
    """`/gui/meshes`: the meshes are listed on the overview."""

    def __init__(self, pages: Pages) -> None:
        self.pages = pages

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        raise falcon.HTTPFound(self.pages.link_base)


class Disabled:
    """`apiServer.gui.enabled: false`: every GUI path answers a page saying so (Kuma's no-gui.html), nothing else."""

    def __call__(self, req: falcon.Request, resp: falcon.Response, **_: Any) -> None:
        if req.method not in ("GET", "HEAD"):
            raise KumaError(405, "Method Not Allowed", "the GUI is read-only")
        resp.content_type = "text/html; charset=utf-8"
        resp.set_header("Content-Security-Policy", _CSP)
        resp.set_header("X-Content-Type-Options", "nosniff")
        resp.text = render("disabled.html", product=PRODUCT)


class MeshPage:
    def __init__(self, pages: Pages) -> None:
        self.pages = pages

    def on_get(self, req: falcon.Request, resp: falcon.Response, mesh: str) -> None:
        found = self.pages.mesh(resp, mesh)
        if found is None:
            return
        view = model.mesh_view(self.pages.manager, found)
        counts = view.insight["dataplanes"]
        mtls = view.insight["mTLS"]
        services = table(["Service", "Status", "Proxies online", "Total", "Address"], [
            [s["name"], status(s["status"]), s["dataplanes"]["online"], s["dataplanes"]["total"],
             s.get("addressPort", "")] for s in view.services], empty="No services.")
        policies = table(["Type", "Count"], [[link(url("meshes", mesh, "policies", t.path), t.name), n]
                                             for t, n in view.policy_counts])
        body = render("mesh.html", online=counts["online"], degraded=counts["partiallyDegraded"],
                      offline=counts["offline"], total=counts["total"],
                      mtls=mtls.get("error") or ", ".join(mtls["issuedBackends"]) or "off",
                      services=services, proxies=_proxy_table(view.proxies, mesh), policies=policies,
                      secrets=self._secrets(req, mesh))
        self.pages.reply(resp, f"Mesh {mesh}", [(mesh, url("meshes", mesh))], body)

    def _secrets(self, req: falcon.Request, mesh: str) -> Html:
        """The API's rule for Secrets (access.static adminResources); names only, even for admins."""
        if not auth.may(req, auth.ADMIN_RESOURCES):
            return tag("p", "Secrets are shown to admins only.", class_="note")
        names = model.secret_names(self.pages.manager, mesh)
        return table(["Name"], [[n] for n in names], empty="No secrets.")


def _rule_origins(mesh: str, kind: str, origins: list[dict[str, Any]]) -> Html:
    path = registry.get(kind).path
    return join((link(url("meshes", mesh, "policies", path, o["name"]), o["name"]) for o in origins), ", ")


def _rules_section(mesh: str, rules: dict[str, Any]) -> Html:
    """`_rules` per policy kind: where each conf comes from (links to the policies) and what it is."""
    out = []
    for item in rules["rules"]:
        kind = item["type"]
        rows = []
        for rule in item["toRules"]:
            subset = ", ".join(f"{m['key']}{'!=' if m['not'] else '='}{m['value']}" for m in rule["matchers"])
            rows.append(["to", subset or "every destination", _rule_origins(mesh, kind, rule["origin"]),
                         pre_yaml(rule["conf"])])
        for rule in item["toResourceRules"]:
            target = rule["resourceMeta"]
            rows.append(["to", f"{target['type']} {target['name']}",
                         _rule_origins(mesh, kind, [o["resourceMeta"] for o in rule["origin"]]),
                         pre_yaml(rule["conf"][0] if len(rule["conf"]) == 1 else rule["conf"])])
        for inbound in item["inboundRules"]:
            for rule in inbound["rules"]:
                rows.append([f"inbound :{inbound['inbound']['port']}",
                             "matching requests" if rule.get("match") else "every client",
                             _rule_origins(mesh, kind, [o["resourceMeta"] for o in rule["origin"]]),
                             pre_yaml(rule["conf"][0] if len(rule["conf"]) == 1 else rule["conf"])])
        for inbound in item["fromRules"]:
            for rule in inbound["rules"]:
                subset = ", ".join(f"{m['key']}{'!=' if m['not'] else '='}{m['value']}" for m in rule["matchers"])
                rows.append([f"from, inbound :{inbound['inbound']['port']}", subset or "every client",
                             _rule_origins(mesh, kind, rule["origin"]), pre_yaml(rule["conf"])])
        out.append(tag("div", join([tag("h3", kind), table(["Direction", "For", "From policies", "Configuration"],
                                                            rows)]), class_="rule"))
    return join(out) if out else tag("p", "No policy selects this proxy.", class_="empty")


class DataplanePage:
    def __init__(self, pages: Pages, inspector: XdsInspector | None) -> None:
        self.pages = pages
        self.inspector = inspector

    def on_get(self, req: falcon.Request, resp: falcon.Response, mesh: str, name: str) -> None:
        if self.pages.mesh(resp, mesh) is None:
            return
        dp = self.pages.manager.get("Dataplane", mesh, name)
        if dp is None:
            self.pages.not_found(resp, f"There is no data plane proxy {name!r} in mesh {mesh!r}.")
            return
        view = model.proxy_view(self.pages.manager, dp)
        networking = dp.content.get("networking") or {}
        inbounds = table(["Port", "Service port", "Tags", "State"], [
            [i.get("port", ""), i.get("servicePort", i.get("port", "")), labels(i.get("tags") or {}),
             i.get("state") or ("not ready" if (i.get("health") or {}).get("ready") is False else "ready")]
            for i in networking.get("inbound") or []], empty="No inbounds.")
        outbounds = table(["Port", "Address", "Destination"], [
            [o.get("port", ""), o.get("address", "127.0.0.1"), labels(o.get("tags") or {}) if o.get("tags")
             else pre_yaml(o.get("backendRef"))] for o in networking.get("outbound") or []], empty="No outbounds.")
        subscriptions = table(["Control plane", "Connected", "Disconnected", "Sent", "Acknowledged", "Rejected"], [
            [s.get("controlPlaneInstanceId", ""), s.get("connectTime", ""), s.get("disconnectTime", ""),
             *(((s.get("status") or {}).get("total") or {}).get(k, "0")
               for k in ("responsesSent", "responsesAcknowledged", "responsesRejected"))]
            for s in reversed(view.subscriptions)], empty="Never connected.")
        row = view.row
        body = render("dataplane.html", status=status(row.status), address=row.address, labels=labels(dp.labels),
                      envoy=row.envoy or "-", kuma_dp=row.kuma_dp or "-", cert_expiry=row.cert_expiry or "-",
                      last_connect=row.last_connect or "never", inbounds=inbounds, outbounds=outbounds,
                      rules=_rules_section(mesh, view.rules), subscriptions=subscriptions,
                      config=self._config(req, mesh, name))
        self.pages.reply(resp, f"Proxy {name}", [(mesh, url("meshes", mesh)),
                                                 (name, url("meshes", mesh, "dataplanes", name))], body)

    def _config(self, req: falcon.Request, mesh: str, name: str) -> Html:
        if req.get_header(REFRESH_HEADER):
            return Html("")   # not a live section: the periodic refresh does not need it generated
        if self.inspector is None:
            return tag("p", "Not available: the DP server is not running on this control plane.", class_="note")
        if not auth.may(req, auth.VIEW_CONFIG_DUMP):   # the API's rule for `_config`
            return tag("p", "Shown to users allowed to view config dumps (access.static.viewConfigDump).",
                       class_="note")
        try:
            config = xds_config(self.inspector, mesh, name)
        except GenerationError as e:
            return tag("p", f"The config cannot be generated: {e}", class_="note")
        return tag("details", join([tag("summary", "xDS resources the proxy gets (as GET .../_config)"),
                                    pre_json(config)]))


class PolicyList:
    def __init__(self, pages: Pages) -> None:
        self.pages = pages

    def on_get(self, req: falcon.Request, resp: falcon.Response, mesh: str, type: str) -> None:
        rtype = model.policy_type(type)
        if self.pages.mesh(resp, mesh) is None:
            return
        if rtype is None:
            self.pages.not_found(resp, f"{type!r} is not a policy type.")
            return
        rows = []
        for p in model.policies_of(self.pages.manager, rtype, mesh):
            ref = (p.spec.get("targetRef") or {}) if isinstance(p.spec, dict) else {}
            rows.append([link(url("meshes", mesh, "policies", type, p.name), p.name), labels(p.labels),
                         " ".join(str(ref.get(k)) for k in ("kind", "name") if ref.get(k)) or "Mesh"])
        body = render("policies.html", policies=table(["Name", "Labels", "Target"], rows,
                                                      empty=f"No {rtype.name} policies in this mesh."))
        self.pages.reply(resp, f"{rtype.plural} in {mesh}", [(mesh, url("meshes", mesh)),
                                                             (rtype.name, url("meshes", mesh, "policies", type))],
                         body)


class PolicyPage:
    def __init__(self, pages: Pages) -> None:
        self.pages = pages

    def on_get(self, req: falcon.Request, resp: falcon.Response, mesh: str, type: str, name: str) -> None:
        rtype = model.policy_type(type)
        if self.pages.mesh(resp, mesh) is None:
            return
        found = self.pages.manager.get(rtype.name, mesh, name) if rtype else None
        if rtype is None or found is None:
            self.pages.not_found(resp, f"There is no {type} policy {name!r} in mesh {mesh!r}.")
            return
        hits = model.policy_dataplanes(self.pages.manager, found)
        body = render("policy.html", dataplanes=table(
            ["Proxy", "Labels"], [[link(url("meshes", mesh, "dataplanes", d.name), d.name), labels(d.labels)]
                                  for d in hits], empty="It selects no proxy."),
            definition=pre_yaml(codec.present(rtype, found)))
        self.pages.reply(resp, f"{rtype.name} {name}", [
            (mesh, url("meshes", mesh)), (rtype.name, url("meshes", mesh, "policies", type)),
            (name, url("meshes", mesh, "policies", type, name))], body)


class EgressList:
    def __init__(self, pages: Pages) -> None:
        self.pages = pages

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = render("egresses.html", egresses=_proxy_table(model.egress_rows(self.pages.manager), None))
        self.pages.reply(resp, "Zone egresses", [("Zone egresses", url("zoneegresses"))], body)


class Static:
    """The stylesheet, the script and the icon: files of this package, so the frozen binary has them."""

    def __init__(self) -> None:
        folder = resources.files("appliance.gui").joinpath("static")
        self.files = {f.name: f.read_bytes() for f in folder.iterdir() if f.name[f.name.rfind("."):] in _STATIC_TYPES}

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        data = self.files.get(name)
        if data is None:
            raise KumaError(404, "Not found", f"no such GUI file: {name}")
        resp.content_type = _STATIC_TYPES[name[name.rfind("."):]]
        resp.set_header("X-Content-Type-Options", "nosniff")
        resp.set_header("Cache-Control", "no-cache")
        resp.data = data
