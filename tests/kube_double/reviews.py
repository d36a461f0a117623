"""TokenReview and SubjectAccessReview for the double: the two review kinds delegated
authentication and authorization create (``authentication.k8s.io/v1``,
``authorization.k8s.io/v1``).

Both are create-only and never stored, as upstream. A TokenReview authenticates the tokens the
double knows (those given to ``KubeDouble.grant`` or ``KubeDouble.add_token``); a
SubjectAccessReview is evaluated with the double's own RBAC matcher (``rbac``) against the
rules bound to the reviewed user and to each of its groups, resource and non-resource
requests alike. The validation the API server does (schema; a user or a group; exactly one of
``resourceAttributes`` / ``nonResourceAttributes``) answers 400/422 as there.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .rbac import PolicyRule, RequestAttributes, non_resource_allows, rules_allow
from .validation import schema_errors

TOKEN_REVIEWS = RequestAttributes("create", "authentication.k8s.io", "tokenreviews", "", None, None)
SUBJECT_ACCESS_REVIEWS = RequestAttributes(
    "create", "authorization.k8s.io", "subjectaccessreviews", "", None, None
)
_PATHS = {
    "/apis/authentication.k8s.io/v1/tokenreviews": TOKEN_REVIEWS,
    "/apis/authorization.k8s.io/v1/subjectaccessreviews": SUBJECT_ACCESS_REVIEWS,
}
_KINDS = {
    TOKEN_REVIEWS: ("authentication.k8s.io/v1", "TokenReview"),
    SUBJECT_ACCESS_REVIEWS: ("authorization.k8s.io/v1", "SubjectAccessReview"),
}


@dataclass(frozen=True)
class ReviewError(Exception):
    """Answered as a Status with this code."""

    code: int
    message: str


def review_attributes(method: str, path: str) -> RequestAttributes | None:
    """The authorizer's view of a review request (always ``create``, cluster-scoped), or
    ``None`` for a path that is not a review collection."""
    attributes = _PATHS.get(path.rstrip("/"))
    if attributes is not None and method != "POST":
        raise ReviewError(405, "the server does not allow this method on the requested resource")
    return attributes


def _checked(body: Any, attributes: RequestAttributes) -> dict[str, Any]:
    api_version, kind = _KINDS[attributes]
    if not isinstance(body, dict):
        raise ReviewError(400, "the request body must be a JSON object")
    if (body.get("apiVersion"), body.get("kind")) != (api_version, kind):
        raise ReviewError(400, f"expected {api_version} {kind}")
    causes = schema_errors(body)
    if causes:
        raise ReviewError(
            422, f"{kind} is invalid: " + "; ".join(f"{c.field}: {c.message}" for c in causes)
        )
    return body


def token_review(
    body: Any, identity_of: Callable[[str], tuple[str, Sequence[str]] | None]
) -> dict[str, Any]:
    """The answered TokenReview: the token's user and groups (plus ``system:authenticated``,
    as the API server adds it), or ``authenticated: false``."""
    review = _checked(body, TOKEN_REVIEWS)
    token = str((review.get("spec") or {}).get("token") or "")
    identity = identity_of(token) if token else None
    if identity is None:
        status: dict[str, Any] = {"authenticated": False, "error": "invalid bearer token"}
    else:
        user, groups = identity
        all_groups = [
            *groups,
            *(["system:authenticated"] if "system:authenticated" not in groups else []),
        ]
        status = {"authenticated": True, "user": {"username": user, "groups": all_groups}}
    return {**review, "metadata": {}, "status": status}


def subject_access_review(
    body: Any, rules_of: Callable[[str, Sequence[str]], list[PolicyRule]]
) -> dict[str, Any]:
    """The answered SubjectAccessReview, evaluated against the rules bound to the user and its
    groups (``rules_of(user, groups)``)."""
    review = _checked(body, SUBJECT_ACCESS_REVIEWS)
    spec: Mapping[str, Any] = review.get("spec") or {}
    user = str(spec.get("user") or "")
    groups = [str(group) for group in spec.get("groups") or ()]
    if not user and not groups:
        raise ReviewError(
            422,
            "SubjectAccessReview is invalid: spec.user: at least one of user or group must be "
            "specified",
        )
    resource = spec.get("resourceAttributes")
    non_resource = spec.get("nonResourceAttributes")
    if (resource is None) == (non_resource is None):
        raise ReviewError(
            422,
            "SubjectAccessReview is invalid: spec.resourceAttributes: exactly one of "
            "nonResourceAttributes or resourceAttributes must be specified",
        )
    rules = rules_of(user, groups)
    if resource is not None:
        attributes = RequestAttributes(
            verb=str(resource.get("verb") or ""),
            api_group=str(resource.get("group") or ""),
            resource=str(resource.get("resource") or ""),
            subresource=str(resource.get("subresource") or ""),
            namespace=resource.get("namespace") or None,
            name=resource.get("name") or None,
        )
        allowed = rules_allow(rules, attributes)
    else:
        allowed = non_resource_allows(
            rules, str(non_resource.get("verb") or ""), str(non_resource.get("path") or "")
        )
    status: dict[str, Any] = {"allowed": allowed}
    if allowed:
        status["reason"] = "RBAC: allowed by the double's bindings"
    return {**review, "metadata": {}, "status": status}
