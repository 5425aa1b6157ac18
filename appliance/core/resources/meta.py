"""Rules every resource's name, mesh and labels follow (Kuma's meta and label validators)."""
from __future__ import annotations

import re

from appliance.core.validation import Violations, key

_IDENTIFIER = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_IDENTIFIER_MSG = ("invalid characters. A lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                   "characters, '-' or '.', and must start and end with an alphanumeric character")
_MESH = re.compile(r"^[0-9a-z-_.]*$")
_MESH_MSG = "invalid characters. Valid characters are numbers, lowercase latin letters and '-', '_', '.' symbols."
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")

_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_QN_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_QN_ERR = ("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
           "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '"
           + _QN_FMT + "')")
_QN_KEY_ERR = ("a valid label key must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
               "with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
               "validation is '" + _QN_FMT + "') with an optional DNS subdomain prefix and '/' "
               "(e.g. 'example.com/MyName')")
_LV_ERR = ("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must "
           "start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used "
           "for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")


def _identifier(value: str, pattern: re.Pattern[str], message: str) -> str | None:
    if value == "":
        return "cannot be empty"
    if len(value) > 253:
        return "value length must less or equal 253"
    if not pattern.match(value):
        return message
    return None


def validate_meta(name: str, mesh: str, mesh_scoped: bool, out: Violations) -> None:
    problem = _identifier(name, _IDENTIFIER, _IDENTIFIER_MSG)
    if problem:
        out.add("name", problem)
    if mesh_scoped:
        problem = _identifier(mesh, _MESH, _MESH_MSG)
        if problem:
            out.add("mesh", problem)


def qualified_name_errors(name: str) -> list[str]:
    """k8s IsQualifiedName: an optional DNS subdomain prefix and '/', then a name part."""
    errors: list[str] = []
    parts = name.split("/")
    if len(parts) == 1:
        part = parts[0]
    elif len(parts) == 2:
        prefix, part = parts
        if not prefix:
            errors.append("prefix part must be non-empty")
        else:
            if len(prefix) > 253:
                errors.append("prefix part must be no more than 253 characters")
            if not _DNS1123_SUBDOMAIN.match(prefix):
                errors.append("prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                              "characters, '-' or '.', and must start and end with an alphanumeric character "
                              "(e.g. 'example.com', regex used for validation is "
                              "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
    else:
        return [_QN_KEY_ERR]
    if not part:
        errors.append("name part must be non-empty")
    elif len(part) > 63:
        errors.append("name part must be no more than 63 characters")
    if not _QUALIFIED_NAME.match(part):
        errors.append(_QN_ERR)
    return errors


def label_value_errors(value: str) -> list[str]:
    errors = []
    if len(value) > 63:
        errors.append("must be no more than 63 characters")
    if not _LABEL_VALUE.match(value):
        errors.append(_LV_ERR)
    return errors


def validate_labels(labels: dict[str, str], out: Violations) -> None:
    for name in sorted(labels):
        for message in qualified_name_errors(name):
            out.add(key("labels", name), message)
        for message in label_value_errors(labels[name]):
            out.add(key("labels", name), message)


def is_dns1035_label(name: str) -> bool:
    return bool(_DNS1035.match(name)) and len(name) <= 63


def dns1035_warning(kind: str, name: str) -> list[str]:
    """Kuma's deprecation warning for names that are not DNS-1035 labels (e.g. 'aa.a')."""
    if is_dns1035_label(name):
        return []
    return [f"Invalid {kind} resource name: '{name}'. It does not conform to the DNS format (RFC 1035). "
            "This is deprecated. Errors: a DNS-1035 label must consist of lower case alphanumeric characters or "
            "'-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  "
            "or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"]
