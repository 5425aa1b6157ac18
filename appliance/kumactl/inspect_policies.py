"""What `kumactl inspect dataplane NAME` (`--type policies`) and `kumactl inspect <policy> NAME` print: Kuma's
dataplaneInspectTemplate and policyInspectTemplate over the API's answers, for sidecars and builtin gateways."""
from __future__ import annotations

from typing import Any

from appliance.kumactl.client import CliError


def _attachment(item: dict[str, Any], upper: bool = True) -> str:
    """attachmentToStr: `DATAPLANE`, `SERVICE web`, `INBOUND 127.0.0.1:80:8080(web)` (lower case for policies)."""
    kind, name = item.get("type", ""), item.get("name", "")
    label = kind.upper() if upper else kind
    if kind == "dataplane":
        return label
    if kind == "service":
        return f"{label} {name}"
    return f"{label} {name}({item.get('service', '')})"


def _policies_by_type(policies: dict[str, Any], indent: str) -> str:
    """One `TYPE` line per policy type (sorted), each followed by its policy name."""
    return "".join(f"{indent}{kind}\n{indent}  {policy.get('name', '')}\n" for kind, policy in sorted(policies.items()))


def render_policies(answer: dict[str, Any]) -> str:
    """`inspect dataplane --type policies`: the policies matched by each part of a proxy."""
    kind = answer.get("kind") or "SidecarDataplane"
    out = []
    if kind == "SidecarDataplane":
        for item in answer.get("items") or []:
            out.append(f"{_attachment(item)}:\n")
            for policy_type, policies in sorted((item.get("matchedPolicies") or {}).items()):
                out.append(f"  {policy_type}\n    " + "".join(f"{p.get('name', '')}\n" for p in policies))
            out.append("\n")
    elif kind == "MeshGatewayDataplane":
        out.append("MESHGATEWAY:\n" + _policies_by_type(answer.get("policies") or {}, "  ") + "\n")
        for listener in answer.get("listeners") or []:
            out.append(f"LISTENER ({listener.get('protocol', '')}:{listener.get('port', 0)}):\n")
            for host in listener.get("hosts") or []:
                out.append(f"  {host.get('hostName', '')}:\n")
                for route in host.get("routes") or []:
                    out.append(f"    ROUTE {route.get('route', '')}:\n")
                    for dest in route.get("destinations") or []:
                        out.append(f"      SERVICE {(dest.get('tags') or {}).get('kuma.io/service', '')}:\n")
                        out.append(_policies_by_type(dest.get("policies") or {}, "        ") + "\n")
    else:
        raise CliError(f'invalid DataplaneInspectResponse kind "{kind}"')
    return "".join(out)


def render_policy_attachments(answer: dict[str, Any]) -> str:
    """`inspect <policy> NAME`: the proxies a policy hits, and where (Kuma's policyInspectTemplate)."""
    out = ["Affected data plane proxies:\n\n"]
    for entry in answer.get("items") or []:
        kind = entry.get("kind")
        if kind == "SidecarDataplane":
            attachments = entry.get("attachments") or []
            out.append(f"  {(entry.get('dataplane') or {}).get('name', '')}")
            if not (len(attachments) == 1 and attachments[0].get("type") == "dataplane"):
                out.append(":\n" + "".join(f"    {_attachment(a, upper=False)}\n" for a in attachments))
            out.append("\n")
        elif kind == "MeshGatewayDataplane":
            out.append(f"  {(entry.get('gateway') or {}).get('name', '')}:\n")
            for listener in entry.get("listeners") or []:
                out.append(f"    listener ({listener.get('protocol', '')}:{listener.get('port', 0)}):\n")
                for host in listener.get("hosts") or []:
                    out.append(f"      {host.get('hostName', '')}:\n")
                    for route in host.get("routes") or []:
                        out.append(f"        {route.get('route', '')}:\n")
                        out += [f"          service {(d or {}).get('kuma.io/service', '')}\n"
                                for d in route.get("destinations") or []]
            out.append("\n")
    return "".join(out)
