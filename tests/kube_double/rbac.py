"""RBAC for the double: PolicyRule matching and the record of requests made.

Rules are plain dicts shaped like Kubernetes ``PolicyRule`` (``apiGroups``, ``resources``,
``verbs``, optional ``resourceNames``; or ``nonResourceURLs`` and ``verbs``); matching follows
``rbac/v1`` semantics: ``*`` matches
anything, ``resources`` may name a subresource as ``resource/subresource``, and
``resourceNames`` only restricts requests that carry a name (never ``create``, nor ``list`` /
``watch`` without a ``metadata.name`` field selector).

Scope: a rule may carry the namespace it is bound in (a Role's rule through a RoleBinding, or
a ClusterRole's through a RoleBinding), as the extra key ``namespace`` of the dict or as a
``Grant``-like object with ``namespace`` and ``rule`` attributes
(``tests.deploy_support.load_rbac_grants()``). Such a rule only grants requests in that
namespace, never cluster-scoped or all-namespaces requests; ``namespace: None`` (a
ClusterRoleBinding) grants everywhere, as the real authorizer does.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

PolicyRule = Mapping[str, Sequence[str]]

#: Every verb a rule can grant, in the order ``kubectl auth can-i --list`` shows them.
ALL_VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")


@dataclass(frozen=True)
class RequestAttributes:
    """What the authorizer sees of one resource request."""

    verb: str
    api_group: str
    resource: str
    subresource: str
    namespace: str | None
    name: str | None

    @property
    def resource_path(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource

    @property
    def permission(self) -> tuple[str, str, str]:
        """``(apiGroup, resource[/subresource], verb)``, the key of :meth:`used_permissions`."""
        return (self.api_group, self.resource_path, self.verb)


@dataclass(frozen=True)
class RequestRecord:
    """One request the double answered."""

    method: str
    path: str
    query: Mapping[str, str]
    token: str | None
    attributes: RequestAttributes | None
    allowed: bool
    status: int | None = None
    """The HTTP status answered; ``None`` for a watch its client cut off (no final status)."""
    body: bytes | None = None
    """The request body of a write (PATCH, PUT, POST), as sent, so tests can assert it."""
    at: float = field(default_factory=time.monotonic)
    """When the double answered (``time.monotonic``: one clock for every process of the
    machine, so a benchmark can put requests into its worker's cycles)."""


def rule_allows(rule: PolicyRule, attrs: RequestAttributes) -> bool:
    """Whether one PolicyRule grants the request (rbac/v1 ``RuleAllows``)."""
    groups = rule.get("apiGroups", ())
    resources = rule.get("resources", ())
    verbs = rule.get("verbs", ())
    names = rule.get("resourceNames", ())
    if "*" not in verbs and attrs.verb not in verbs:
        return False
    if "*" not in groups and attrs.api_group not in groups:
        return False
    resource_ok = (
        "*" in resources
        or attrs.resource_path in resources
        or (attrs.subresource and f"*/{attrs.subresource}" in resources)
    )
    if not resource_ok:
        return False
    if names:
        return attrs.name is not None and attrs.name in names
    return True


def rules_allow(rules: Sequence[PolicyRule], attrs: RequestAttributes) -> bool:
    """Whether any rule grants the request; a rule's ``namespace`` key, when present and not
    ``None``, confines it to requests in that namespace."""
    return any(
        _in_scope(rule.get("namespace"), attrs) and rule_allows(rule, attrs) for rule in rules
    )


def non_resource_allows(rules: Sequence[PolicyRule], verb: str, path: str) -> bool:
    """Whether any rule's ``nonResourceURLs`` grant ``verb`` on ``path`` (rbac/v1
    ``NonResourceURLMatches``: ``*``, the exact path, or a prefix ending in ``*``). Only
    cluster-wide rules (ClusterRoleBindings) can: a namespaced rule never does."""
    for rule in rules:
        if rule.get("namespace") is not None:
            continue
        verbs = rule.get("verbs", ())
        if "*" not in verbs and verb not in verbs:
            continue
        for url in rule.get("nonResourceURLs", ()):
            if url in {"*", path} or (url.endswith("*") and path.startswith(url[:-1])):
                return True
    return False


def _in_scope(namespace: object, attrs: RequestAttributes) -> bool:
    return namespace is None or namespace == attrs.namespace


def granted_permissions(rules: Sequence[PolicyRule]) -> set[tuple[str, str, str]]:
    """The ``(apiGroup, resource, verb)`` triples the rules name explicitly (wildcards skipped)."""
    granted = set()
    for rule in rules:
        for group in rule.get("apiGroups", ()):
            for resource in rule.get("resources", ()):
                for verb in rule.get("verbs", ()):
                    if "*" not in (group, resource, verb):
                        granted.add((group, resource, verb))
    return granted


def forbidden_message(attrs: RequestAttributes, user: str) -> str:
    group_part = f"{attrs.resource}.{attrs.api_group}" if attrs.api_group else attrs.resource
    subject = f'{group_part} "{attrs.name}"' if attrs.name else group_part
    scope = f' in the namespace "{attrs.namespace}"' if attrs.namespace else " at the cluster scope"
    return (
        f'{subject} is forbidden: User "{user}" cannot {attrs.verb} resource '
        f'"{attrs.resource_path}" in API group "{attrs.api_group}"{scope}'
    )


def as_rule(value: Any) -> PolicyRule:
    """Accept a PolicyRule dict (optionally with a ``namespace`` key, see the module doc), a
    ``Grant``-like object (``namespace`` and ``rule`` attributes), or a kubernetes model with
    ``to_dict()`` (snake_case keys, cluster-wide)."""
    if isinstance(value, Mapping):
        return value
    if hasattr(value, "rule") and hasattr(value, "namespace"):
        rule = as_rule(value.rule)
        if value.namespace is None:
            return rule
        return {**rule, "namespace": value.namespace}
    raw = value.to_dict()
    return {
        "apiGroups": raw.get("api_groups") or (),
        "resources": raw.get("resources") or (),
        "verbs": raw.get("verbs") or (),
        "resourceNames": raw.get("resource_names") or (),
    }
