"""Render and inspect the manifests in ``deploy/`` for tests.

Rendering uses ``kubectl kustomize`` where kubectl is installed, and otherwise a small Python
renderer of the kustomize features the kustomizations in ``deploy/`` and the quick start's own
kustomization use: ``resources`` (files and directories), ``namespace``, ``namePrefix`` (with
the name references kustomize follows for the kinds in ``deploy/``), JSON6902 ``patches`` with a
``target``, ``images``, and ``replacements`` / ``transformers`` holding builtin
``ReplacementTransformer`` configurations (``deploy/portable``). Anything else in a
kustomization makes the Python renderer refuse loudly rather than render something different;
``tests/test_deploy.py`` checks that both renderers agree where kubectl exists, also for an
install moved into another namespace with a name prefix.

RBAC for the end-to-end tests: :func:`load_rbac_rules` renders a kustomization and returns the
``PolicyRule`` dicts bound to the controller's ServiceAccount, in the shape
``tests.kube_double.KubeDouble(rules=...)`` accepts, so the controller under test gets exactly
the permissions the manifests grant. :func:`load_rbac_grants` keeps the namespace each rule is
bound in (Role/RoleBinding) for checks that need it.

Also here: a PromQL metric-name extractor (for the dashboard, alerts and adapter rules) and a
small Dockerfile parser. No network; kubectl runs offline.
"""

from __future__ import annotations

import copy
import fnmatch
import functools
import re
import shutil
import subprocess
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Final, Literal

import yaml

__all__ = [
    "BUILTIN_ROLES",
    "CLUSTER_SCOPED_KINDS",
    "DEPLOY_DIR",
    "KUBERNETES_VERSION",
    "KUSTOMIZATIONS",
    "PORTABLE",
    "REPO_ROOT",
    "SERVICE_ACCOUNT",
    "DockerStage",
    "Grant",
    "Manifest",
    "PolicyRule",
    "dockerignore_includes",
    "find_object",
    "find_objects",
    "kustomization_dir",
    "load_rbac_grants",
    "load_rbac_rules",
    "object_key",
    "parse_dockerfile",
    "promql_metric_names",
    "render",
    "render_with_kubectl",
    "render_with_python",
]

REPO_ROOT: Final = Path(__file__).resolve().parent.parent
DEPLOY_DIR: Final = REPO_ROOT / "deploy"

KUBERNETES_VERSION: Final = "1.36.0"
"""Kubernetes release whose OpenAPI schemas the manifests are validated against (shipped by
``kubernetes-validate``; the API double in ``tests/kube_double`` pins the same)."""

SERVICE_ACCOUNT: Final = ("predictive-scaler", "predictive-scaler")
"""``(namespace, name)`` of the controller's ServiceAccount."""

KUSTOMIZATIONS: Final[Mapping[str, Path]] = {
    "base": DEPLOY_DIR / "base",
    "dry-run": DEPLOY_DIR / "overlays" / "dry-run",
    "external-metrics": DEPLOY_DIR / "overlays" / "external-metrics",
}
"""Every kustomization shipped in ``deploy/``, by the name tests use."""

PORTABLE: Final[Mapping[str, Path]] = {
    "base": DEPLOY_DIR / "portable" / "base",
    "dry-run": DEPLOY_DIR / "portable" / "base",
    "external-metrics": DEPLOY_DIR / "portable" / "external-metrics",
}
"""The ``transformers:`` entry that carries a move (``namespace:``, ``namePrefix:``) into every
field that names the namespace or an object, per kustomization."""

CLUSTER_SCOPED_KINDS: Final = frozenset(
    {
        "APIService",
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "MutatingWebhookConfiguration",
        "Namespace",
        "PersistentVolume",
        "PriorityClass",
        "StorageClass",
        "ValidatingWebhookConfiguration",
    }
)
"""Kinds kustomize's namespace transformer leaves without a namespace."""

Manifest = dict[str, Any]
PolicyRule = dict[str, list[str]]
Renderer = Literal["auto", "kubectl", "python"]

_KUSTOMIZATION_FILES: Final = ("kustomization.yaml", "kustomization.yml", "Kustomization")
_SUPPORTED_KEYS: Final = frozenset(
    {
        "apiVersion",
        "kind",
        "resources",
        "namespace",
        "namePrefix",
        "patches",
        "images",
        "replacements",
        "transformers",
    }
)
_RULE_KEYS: Final = ("apiGroups", "resources", "verbs", "resourceNames")


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def kustomization_dir(overlay: str) -> Path:
    """The directory of a kustomization by name (``base``, ``dry-run``...) or path."""
    if overlay in KUSTOMIZATIONS:
        return KUSTOMIZATIONS[overlay]
    path = Path(overlay)
    return path if path.is_absolute() else REPO_ROOT / path


def render(overlay: str = "base", *, renderer: Renderer = "auto") -> list[Manifest]:
    """Render a kustomization into its objects (fresh copies, safe to mutate).

    ``auto`` uses kubectl when it is on ``PATH``, else the Python renderer.
    """
    directory = kustomization_dir(overlay)
    if renderer == "auto":
        renderer = "kubectl" if shutil.which("kubectl") else "python"
    if renderer == "kubectl":
        return copy.deepcopy(list(_kubectl_cached(str(directory))))
    return render_with_python(directory)


def render_with_kubectl(directory: Path) -> list[Manifest]:
    """``kubectl kustomize DIRECTORY``, parsed (offline; needs only the kubectl client)."""
    return copy.deepcopy(list(_kubectl_cached(str(directory))))


@functools.lru_cache(maxsize=16)
def _kubectl_cached(directory: str) -> tuple[Manifest, ...]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise FileNotFoundError("kubectl is not installed")
    result = subprocess.run(
        [kubectl, "kustomize", directory],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {directory} failed:\n{result.stderr}")
    return tuple(_documents(result.stdout))


def render_with_python(directory: Path) -> list[Manifest]:
    """Render a kustomization with the Python subset renderer (see the module docstring)."""
    objects = _render_level(directory)
    for obj in objects:
        annotations = obj.get("metadata", {}).get("annotations")
        if annotations is not None:
            annotations.pop(_ORIGINAL_NAME, None)
            if not annotations:
                del obj["metadata"]["annotations"]
    return objects


def _render_level(directory: Path) -> list[Manifest]:
    """One kustomization, in kustomize's order: resources, patches, namespace, namePrefix,
    images, replacements, transformers; then the name references of renamed objects."""
    kustomization = _read_kustomization(directory)
    unsupported = set(kustomization) - _SUPPORTED_KEYS
    if unsupported:
        raise NotImplementedError(
            f"{directory}: the test renderer does not support {sorted(unsupported)}; "
            "keep the kustomizations simple or extend tests/deploy_support.py"
        )
    objects: list[Manifest] = []
    for entry in kustomization.get("resources") or ():
        objects.extend(_load_entry(directory, str(entry)))
    for obj in objects:
        # Kept through every level, as kustomize keeps an object's original name: selectors
        # (patch targets, replacement sources) match it as well as the current name.
        annotations = obj.setdefault("metadata", {}).setdefault("annotations", {})
        annotations.setdefault(_ORIGINAL_NAME, str(obj["metadata"].get("name", "")))
    before = {id(obj): _ref_key(obj) for obj in objects}
    for patch in kustomization.get("patches") or ():
        _apply_patch_entry(directory, patch, objects)
    namespace = kustomization.get("namespace")
    if namespace is not None:
        for obj in objects:
            if obj.get("kind") == "Namespace":
                obj["metadata"]["name"] = str(namespace)
            elif obj.get("kind") not in CLUSTER_SCOPED_KINDS:
                obj["metadata"]["namespace"] = str(namespace)
    prefix = kustomization.get("namePrefix")
    if prefix:
        for obj in objects:
            if obj.get("kind") not in _UNPREFIXED_KINDS:
                obj["metadata"]["name"] = f"{prefix}{obj['metadata']['name']}"
    for image in kustomization.get("images") or ():
        _apply_image(image, objects)
    replacements: list[Mapping[str, Any]] = []
    for item in kustomization.get("replacements") or ():
        if set(item) == {"path"}:
            loaded = yaml.safe_load((directory / str(item["path"])).read_text(encoding="utf-8"))
            replacements.extend(loaded or ())
        else:
            replacements.append(item)
    _apply_replacements(replacements, objects, directory)
    for entry in kustomization.get("transformers") or ():
        for config in _load_entry(directory, str(entry)):
            if (config.get("apiVersion"), config.get("kind")) != (
                "builtin",
                "ReplacementTransformer",
            ):
                raise NotImplementedError(
                    f"{directory}: only builtin ReplacementTransformer transformers: "
                    f"{config.get('kind')}"
                )
            _apply_replacements(config.get("replacements") or (), objects, directory)
    _fix_name_references(objects, before)
    _check_unique(objects, directory)
    return objects


def _load_entry(directory: Path, entry: str) -> list[Manifest]:
    path = (directory / entry).resolve()
    if path.is_dir():
        return _render_level(path)
    return list(_documents(path.read_text(encoding="utf-8")))


_ORIGINAL_NAME: Final = "internal.deploy-support/original-name"
_UNPREFIXED_KINDS: Final = frozenset({"Namespace", "APIService", "CustomResourceDefinition"})
"""Kinds kustomize's prefix transformer leaves alone."""


def _original_name(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return str((meta.get("annotations") or {}).get(_ORIGINAL_NAME, meta.get("name", "")))


def _ref_key(obj: Mapping[str, Any]) -> tuple[str, str, str]:
    meta = obj.get("metadata") or {}
    return (str(obj.get("kind")), str(meta.get("namespace") or ""), str(meta.get("name")))


# --------------------------------------------------------------------------------------------
# Name references (the subset of kustomize's nameReference table the manifests need)
# --------------------------------------------------------------------------------------------


def _fix_name_references(
    objects: list[Manifest], before: Mapping[int, tuple[str, str, str]]
) -> None:
    """Point references at renamed or moved objects to their new name (and namespace), as
    kustomize's name-reference transformer does after a level's transformations."""
    moved: dict[tuple[str, str, str], tuple[str, str]] = {}
    for obj in objects:
        old = before.get(id(obj))
        new = _ref_key(obj)
        if old is not None and old != new:
            moved[old] = (new[1], new[2])
    if not moved:
        return

    def renamed(kind: str, namespace: str, name: str) -> tuple[str, str] | None:
        return moved.get((kind, namespace, name))

    for obj in objects:
        kind = obj.get("kind")
        namespace = str(obj.get("metadata", {}).get("namespace") or "")
        old_namespace = before.get(id(obj), ("", namespace, ""))[1]
        if kind in {"RoleBinding", "ClusterRoleBinding"}:
            ref = obj.get("roleRef") or {}
            role_ns = old_namespace if ref.get("kind") == "Role" else ""
            target = renamed(str(ref.get("kind")), role_ns, str(ref.get("name")))
            if target is not None:
                ref["name"] = target[1]
            for subject in obj.get("subjects") or ():
                if subject.get("kind") != "ServiceAccount":
                    continue
                key = ("ServiceAccount", str(subject.get("namespace") or old_namespace))
                target = renamed(*key, str(subject.get("name")))
                if target is not None:
                    subject["namespace"], subject["name"] = target
        elif kind in {"Role", "ClusterRole"}:
            for rule in obj.get("rules") or ():
                if "configmaps" in (rule.get("resources") or ()) and rule.get("resourceNames"):
                    rule["resourceNames"] = [
                        (renamed("ConfigMap", old_namespace, str(n)) or ("", str(n)))[1]
                        for n in rule["resourceNames"]
                    ]
        elif kind == "APIService":
            service = (obj.get("spec") or {}).get("service")
            if service:
                key = ("Service", str(service.get("namespace") or ""), str(service.get("name")))
                target = renamed(*key)
                if target is not None:
                    service["namespace"], service["name"] = target
        pod = _pod_spec(obj)
        if pod is not None:
            account = pod.get("serviceAccountName")
            target = renamed("ServiceAccount", old_namespace, str(account)) if account else None
            if target is not None:
                pod["serviceAccountName"] = target[1]
            for volume in pod.get("volumes") or ():
                for key, field_name, ref_kind in (
                    ("configMap", "name", "ConfigMap"),
                    ("secret", "secretName", "Secret"),
                ):
                    source = volume.get(key)
                    if source and source.get(field_name):
                        target = renamed(ref_kind, old_namespace, str(source[field_name]))
                        if target is not None:
                            source[field_name] = target[1]


def _pod_spec(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    if obj.get("kind") not in {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}:
        return None
    spec = ((obj.get("spec") or {}).get("template") or {}).get("spec")
    return spec if isinstance(spec, dict) else None


# --------------------------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------------------------


def _split_image(image: str) -> tuple[str, str]:
    """``(name, tag-or-digest suffix)``: ``("reg:5000/a/b", ":1.0")``."""
    if "@" in image:
        name, _, digest = image.partition("@")
        return name, f"@{digest}"
    slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > slash:
        return image[:colon], image[colon:]
    return image, ""


def _apply_image(entry: Mapping[str, Any], objects: list[Manifest]) -> None:
    if set(entry) - {"name", "newName", "newTag", "digest"}:
        raise NotImplementedError(f"images entry keys {sorted(entry)} are not supported")
    for obj in objects:
        pod = _pod_spec(obj)
        if pod is None:
            continue
        for container in [*(pod.get("containers") or ()), *(pod.get("initContainers") or ())]:
            name, suffix = _split_image(str(container.get("image", "")))
            if name != entry["name"]:
                continue
            if "digest" in entry:
                suffix = f"@{entry['digest']}"
            elif "newTag" in entry:
                suffix = f":{entry['newTag']}"
            container["image"] = f"{entry.get('newName', name)}{suffix}"


# --------------------------------------------------------------------------------------------
# replacements
# --------------------------------------------------------------------------------------------

_SEGMENT_RE: Final = re.compile(r"\[[^\]]*\]|[^.\[]+")


def _field_path(path: str) -> list[str]:
    """``a.b.[k=v].c.[x.y/z]`` -> ``["a", "b", "[k=v]", "c", "[x.y/z]"]``."""
    return [match.group() for match in _SEGMENT_RE.finditer(path)]


def _selected(obj: Mapping[str, Any], select: Mapping[str, Any]) -> bool:
    unsupported = set(select) - {"group", "version", "kind", "name", "namespace"}
    if unsupported:
        raise NotImplementedError(f"replacement selector keys {sorted(unsupported)}")
    group, _, version = str(obj.get("apiVersion", "")).rpartition("/")
    meta = obj.get("metadata") or {}
    checks = {
        "group": lambda v: v == group,
        "version": lambda v: v == version,
        "kind": lambda v: v == obj.get("kind"),
        "name": lambda v: v in {meta.get("name"), _original_name(obj)},
        "namespace": lambda v: v == meta.get("namespace"),
    }
    return all(checks[key](value) for key, value in select.items())


def _lookup(node: Any, segments: Sequence[str]) -> list[tuple[Any, Any]]:
    """Every ``(parent, key)`` the path reaches; raises when a step is missing."""
    if not segments:
        raise ValueError("empty field path")
    head, rest = segments[0], segments[1:]
    keys: list[Any]
    if isinstance(node, list):
        if head == "*":
            keys = list(range(len(node)))
        elif head.startswith("[") and "=" in head:
            field_name, _, value = head[1:-1].partition("=")
            keys = [i for i, item in enumerate(node) if str(item.get(field_name)) == value]
        else:
            keys = [int(head)]
            if keys[0] >= len(node):
                raise LookupError(head)
    elif isinstance(node, dict):
        key = head[1:-1] if head.startswith("[") else head
        if key not in node:
            raise LookupError(head)
        keys = [key]
    else:
        raise LookupError(head)
    if not keys:
        raise LookupError(head)
    if not rest:
        return [(node, key) for key in keys]
    found: list[tuple[Any, Any]] = []
    for key in keys:
        found.extend(_lookup(node[key], rest))
    return found


def _apply_replacements(
    replacements: Iterable[Mapping[str, Any]], objects: list[Manifest], directory: Path
) -> None:
    for replacement in replacements:
        source = replacement["source"]
        path = str(source.get("fieldPath", "metadata.name"))
        selector = {k: v for k, v in source.items() if k not in {"fieldPath", "options"}}
        candidates = [obj for obj in objects if _selected(obj, selector)]
        if len(candidates) != 1:
            raise LookupError(f"{directory}: replacement source {source} matches {len(candidates)}")
        [(parent, key)] = _lookup(candidates[0], _field_path(path))
        value = parent[key]
        if source.get("options"):
            raise NotImplementedError("options on a replacement source")
        for target in replacement.get("targets") or ():
            if set(target) - {"select", "fieldPaths", "options", "reject"}:
                raise NotImplementedError(f"replacement target keys {sorted(target)}")
            rejects = target.get("reject") or ()
            options = target.get("options") or {}
            if set(options) - {"delimiter", "index"}:
                raise NotImplementedError(f"replacement options {sorted(options)}")
            for obj in objects:
                if not _selected(obj, target["select"]) or any(
                    _selected(obj, reject) for reject in rejects
                ):
                    continue
                for field_path in target["fieldPaths"]:
                    try:
                        places = _lookup(obj, _field_path(str(field_path)))
                    except LookupError as error:
                        raise LookupError(
                            f"{directory}: unable to find field {field_path!r} in replacement "
                            f"target {object_key(obj)}"
                        ) from error
                    for place, item in places:
                        place[item] = _replaced(place[item], value, options)


def _replaced(current: Any, value: Any, options: Mapping[str, Any]) -> Any:
    if "delimiter" not in options:
        return copy.deepcopy(value)
    parts = str(current).split(str(options["delimiter"]))
    index = int(options.get("index", 0))
    if not 0 <= index < len(parts):
        raise IndexError(f"replacement index {index} out of range in {current!r}")
    parts[index] = str(value)
    return str(options["delimiter"]).join(parts)


def _read_kustomization(directory: Path) -> Manifest:
    for name in _KUSTOMIZATION_FILES:
        path = directory / name
        if path.is_file():
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise ValueError(f"{path}: not a mapping")
            return data
    raise FileNotFoundError(f"no kustomization in {directory}")


def _documents(text: str) -> Iterator[Manifest]:
    for document in yaml.safe_load_all(text):
        if document is None:
            continue
        if not isinstance(document, dict):
            raise ValueError(f"a manifest is not a mapping: {document!r:.80}")
        yield document


def _check_unique(objects: Sequence[Manifest], directory: Path) -> None:
    seen: set[tuple[str, str, str, str]] = set()
    for obj in objects:
        key = object_key(obj)
        if key in seen:
            raise ValueError(f"{directory}: {key} is defined twice")
        seen.add(key)


def object_key(obj: Mapping[str, Any]) -> tuple[str, str, str, str]:
    """``(apiVersion, kind, namespace, name)``; namespace ``""`` when cluster-scoped."""
    meta = obj.get("metadata") or {}
    return (
        str(obj.get("apiVersion", "")),
        str(obj.get("kind", "")),
        str(meta.get("namespace") or ""),
        str(meta.get("name", "")),
    )


def _apply_patch_entry(directory: Path, entry: Mapping[str, Any], objects: list[Manifest]) -> None:
    if set(entry) - {"path", "patch", "target"} or "target" not in entry:
        raise NotImplementedError(f"{directory}: only JSON6902 patches with a target: {entry}")
    if "path" in entry:
        text = (directory / str(entry["path"])).read_text(encoding="utf-8")
    else:
        text = str(entry["patch"])
    operations = yaml.safe_load(text)
    if not isinstance(operations, list):
        raise NotImplementedError(f"{directory}: only JSON6902 (list) patches are supported")
    target = entry["target"]
    matched = [obj for obj in objects if _matches_target(obj, target)]
    if not matched:
        raise LookupError(f"{directory}: patch target {target} matches no object")
    for obj in matched:
        for operation in operations:
            _apply_json_patch_operation(obj, operation)


def _matches_target(obj: Mapping[str, Any], target: Mapping[str, Any]) -> bool:
    api_version = str(obj.get("apiVersion", ""))
    group, _, version = api_version.rpartition("/")
    meta = obj.get("metadata") or {}
    wanted = {
        "group": group,
        "version": version,
        "kind": obj.get("kind"),
        "name": meta.get("name"),
        "namespace": meta.get("namespace"),
    }
    unsupported = set(target) - set(wanted)
    if unsupported:
        raise NotImplementedError(f"patch target keys {sorted(unsupported)} are not supported")
    return all(wanted[key] == value for key, value in target.items())


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise ValueError(f"not a JSON pointer: {path!r}")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _apply_json_patch_operation(obj: Manifest, operation: Mapping[str, Any]) -> None:
    op = operation.get("op")
    parts = _pointer(str(operation["path"]))
    parent: Any = obj
    for part in parts[:-1]:
        parent = parent[int(part)] if isinstance(parent, list) else parent[part]
    last = parts[-1]
    value = copy.deepcopy(operation.get("value"))
    if op == "test":
        current = parent[int(last)] if isinstance(parent, list) else parent[last]
        if current != value:
            raise ValueError(
                f"JSON6902 test failed at {operation['path']}: {current!r} != {value!r}"
            )
        return
    if op == "add":
        if isinstance(parent, list):
            if last == "-":
                parent.append(value)
            else:
                parent.insert(int(last), value)
        else:
            parent[last] = value
    elif op == "replace":
        if isinstance(parent, list):
            parent[int(last)] = value
        else:
            if last not in parent:
                raise KeyError(f"replace of a missing path {operation['path']}")
            parent[last] = value
    elif op == "remove":
        if isinstance(parent, list):
            del parent[int(last)]
        else:
            del parent[last]
    else:
        raise NotImplementedError(f"JSON6902 op {op!r} is not supported by the test renderer")


def find_objects(
    objects: Iterable[Mapping[str, Any]], kind: str, name: str | None = None
) -> list[Manifest]:
    """Every object of ``kind`` (and ``name``, when given)."""
    return [
        dict(obj)
        for obj in objects
        if obj.get("kind") == kind
        and (name is None or (obj.get("metadata") or {}).get("name") == name)
    ]


def find_object(
    objects: Iterable[Mapping[str, Any]], kind: str, name: str | None = None
) -> Manifest:
    """The one object of ``kind`` (and ``name``); raises when there are none or several."""
    found = find_objects(objects, kind, name)
    if len(found) != 1:
        raise LookupError(f"expected one {kind} {name or ''}, found {len(found)}")
    return found[0]


# --------------------------------------------------------------------------------------------
# RBAC
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Grant:
    """One PolicyRule and where it applies."""

    namespace: str | None
    """The RoleBinding's namespace; ``None`` for a ClusterRoleBinding (every namespace and the
    cluster scope)."""
    rule: PolicyRule = field(hash=False)
    """The rule: ``apiGroups``, ``resources``, ``verbs`` and, when restricted, ``resourceNames``."""
    source: str = ""
    """``Kind/name`` of the role that holds the rule."""


BUILTIN_ROLES: Final[Mapping[tuple[str, str | None, str], tuple[PolicyRule, ...]]] = {
    ("ClusterRole", None, "system:auth-delegator"): (
        {
            "apiGroups": ["authentication.k8s.io"],
            "resources": ["tokenreviews"],
            "verbs": ["create"],
        },
        {
            "apiGroups": ["authorization.k8s.io"],
            "resources": ["subjectaccessreviews"],
            "verbs": ["create"],
        },
    ),
    ("Role", "kube-system", "extension-apiserver-authentication-reader"): (
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "verbs": ["get", "list", "watch"],
            "resourceNames": ["extension-apiserver-authentication"],
        },
    ),
}
"""Roles every cluster has (the API server's bootstrap policy,
``plugin/pkg/auth/authorizer/rbac/bootstrappolicy``) that the manifests bind but do not ship,
by ``(kind, namespace, name)``, with the rules upstream gives them."""


def _role(
    rendered: Sequence[Mapping[str, Any]], kind: str, namespace: str | None, name: str
) -> Mapping[str, Any]:
    if kind == "ClusterRole":
        found = find_objects(rendered, "ClusterRole", name)
    else:
        found = [
            obj
            for obj in find_objects(rendered, "Role", name)
            if obj["metadata"].get("namespace") == namespace
        ]
    if len(found) == 1:
        return found[0]
    builtin = BUILTIN_ROLES.get((kind, None if kind == "ClusterRole" else namespace, name))
    if not found and builtin is not None:
        return {
            "kind": kind,
            "metadata": {"name": f"{name} (built-in)"},
            "rules": [copy.deepcopy(dict(rule)) for rule in builtin],
        }
    where = f"{namespace}/" if kind == "Role" else ""
    raise LookupError(f"{kind} {where}{name} not found")


def _normalise_rule(rule: Mapping[str, Any], source: str) -> PolicyRule:
    if rule.get("nonResourceURLs"):
        raise ValueError(f"{source}: nonResourceURLs are not expected in the controller's RBAC")
    unknown = set(rule) - set(_RULE_KEYS)
    if unknown:
        raise ValueError(f"{source}: unexpected PolicyRule keys {sorted(unknown)}")
    normalised: PolicyRule = {}
    for key in _RULE_KEYS:
        values = rule.get(key) or []
        if key == "resourceNames" and not values:
            continue
        normalised[key] = [str(value) for value in values]
    return normalised


def _binds(binding: Mapping[str, Any], service_account: tuple[str, str]) -> bool:
    namespace, name = service_account
    binding_namespace = (binding.get("metadata") or {}).get("namespace")
    for subject in binding.get("subjects") or ():
        if subject.get("kind") != "ServiceAccount" or subject.get("name") != name:
            continue
        if subject.get("namespace", binding_namespace) == namespace:
            return True
    return False


def load_rbac_grants(
    overlay: str = "base",
    *,
    service_account: tuple[str, str] = SERVICE_ACCOUNT,
    objects: Sequence[Mapping[str, Any]] | None = None,
) -> list[Grant]:
    """Every rule bound to ``service_account`` in the rendered kustomization, with its scope.

    Follows RoleBindings (to Roles or ClusterRoles: both granted in the binding's namespace)
    and ClusterRoleBindings (to ClusterRoles: granted everywhere). A binding whose role is not
    in the manifests nor a built-in one (:data:`BUILTIN_ROLES`) raises :class:`LookupError`.
    """
    rendered = list(objects) if objects is not None else render(overlay)
    grants: list[Grant] = []
    for binding in rendered:
        kind = binding.get("kind")
        if kind not in {"RoleBinding", "ClusterRoleBinding"} or not _binds(
            binding, service_account
        ):
            continue
        binding_namespace = (binding.get("metadata") or {}).get("namespace")
        ref = binding["roleRef"]
        if ref.get("apiGroup") != "rbac.authorization.k8s.io":
            raise ValueError(f"{kind} {binding['metadata']['name']}: bad roleRef {ref}")
        if ref["kind"] == "ClusterRole":
            role = _role(rendered, "ClusterRole", None, ref["name"])
        elif kind == "RoleBinding":
            role = _role(rendered, "Role", binding_namespace, ref["name"])
        else:
            raise ValueError(f"ClusterRoleBinding cannot refer to a Role: {ref}")
        scope = binding_namespace if kind == "RoleBinding" else None
        source = f"{role['kind']}/{role['metadata']['name']}"
        grants.extend(
            Grant(scope, _normalise_rule(rule, source), source) for rule in role.get("rules") or ()
        )
    return grants


def load_rbac_rules(
    overlay: str = "base", *, service_account: tuple[str, str] = SERVICE_ACCOUNT
) -> list[PolicyRule]:
    """The PolicyRule dicts granted to the controller's ServiceAccount by ``deploy/<overlay>``.

    Shape: ``{"apiGroups": [...], "resources": [...], "verbs": [...]}`` plus
    ``"resourceNames": [...]`` when the rule is restricted by name, as
    ``tests.kube_double.KubeDouble(rules=...)`` accepts. The namespace a Role's rule is bound in
    is not part of a PolicyRule; use :func:`load_rbac_grants` where that matters.
    """
    return [grant.rule for grant in load_rbac_grants(overlay, service_account=service_account)]


# --------------------------------------------------------------------------------------------
# PromQL
# --------------------------------------------------------------------------------------------

_PROMQL_KEYWORDS: Final = frozenset(
    {
        "and",
        "or",
        "unless",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "offset",
        "inf",
        "nan",
        "atan2",
    }
)
_STRING_RE: Final = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS_RE: Final = re.compile(r"\{[^{}]*\}")
_RANGE_RE: Final = re.compile(r"\[[^\[\]]*\]")
_GROUPING_RE: Final = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE
)
_VARIABLE_RE: Final = re.compile(r"\$\{[^}]*\}|\$\w+|<<\.\w+>>")
_IDENT_RE: Final = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, keywords, label names and
    Grafana ``$variables`` / Prometheus Adapter ``<<.Series>>`` templates are left out).

    A lexical approximation, good for the expressions in ``deploy/``: strings, label matchers,
    ranges and grouping clauses are removed first; what remains that is not a function call,
    a keyword or part of a number is a metric name. ``{__name__=...}`` selectors are not seen.
    """
    text = _STRING_RE.sub('""', expr)
    text = _VARIABLE_RE.sub(" ", text)
    text = _MATCHERS_RE.sub(" ", text)
    text = _RANGE_RE.sub(" ", text)
    text = _GROUPING_RE.sub(" ", text)
    names: set[str] = set()
    for match in _IDENT_RE.finditer(text):
        start = match.start()
        if start and (text[start - 1].isalnum() or text[start - 1] in "._"):
            continue  # the exponent or unit of a number (1e3, 5m)
        if text[match.end() :].lstrip().startswith("("):
            continue  # a function call
        if match.group().lower() in _PROMQL_KEYWORDS:
            continue
        names.add(match.group())
    return names


# --------------------------------------------------------------------------------------------
# Dockerfile and .dockerignore
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DockerStage:
    """One ``FROM`` stage: its base image (build args substituted), name and instructions."""

    base: str
    name: str | None
    instructions: tuple[tuple[str, str], ...]
    """``(INSTRUCTION, arguments)``, instructions upper-cased, continuation lines joined."""

    def all(self, instruction: str) -> list[str]:
        return [args for name, args in self.instructions if name == instruction.upper()]


def _logical_lines(text: str) -> Iterator[str]:
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction are dropped by Docker
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        yield (pending + stripped).strip()
        pending = ""
    if pending.strip():
        yield pending.strip()


def parse_dockerfile(text: str) -> list[DockerStage]:
    """Split a Dockerfile into stages; ``ARG`` defaults before the first ``FROM`` are
    substituted into base images."""
    args: dict[str, str] = {}
    stages: list[DockerStage] = []
    base = ""
    name: str | None = None
    instructions: list[tuple[str, str]] = []
    started = False
    for line in _logical_lines(text):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        rest = rest.strip()
        if keyword == "FROM":
            if started:
                stages.append(DockerStage(base, name, tuple(instructions)))
            words = [word for word in rest.split() if not word.startswith("--")]
            base = re.sub(
                r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), ""), words[0]
            )
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            instructions = []
            started = True
        elif not started:
            if keyword == "ARG":
                key, _, default = rest.partition("=")
                args[key.strip()] = default.strip()
        else:
            instructions.append((keyword, rest))
    if started:
        stages.append(DockerStage(base, name, tuple(instructions)))
    return stages


def dockerignore_includes(patterns: Sequence[str], path: str) -> bool:
    """Whether ``path`` (relative, ``/``-separated) is in the build context under these
    ``.dockerignore`` patterns: the last matching pattern wins, ``!`` re-includes, a pattern
    that matches a parent directory matches everything below it."""
    included = True
    parts = PurePosixPath(path).parts
    candidates = ["/".join(parts[: index + 1]) for index in range(len(parts))]
    for raw in patterns:
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip().strip("/")
        if any(_dockerignore_match(pattern, candidate) for candidate in candidates):
            included = negate
    return included


def _dockerignore_match(pattern: str, path: str) -> bool:
    if pattern.startswith("**/"):
        tail = pattern[3:]
        segments = path.split("/")
        return any(
            fnmatch.fnmatchcase("/".join(segments[index:]), tail) for index in range(len(segments))
        )
    if "/" not in pattern and "/" in path:
        return False
    return fnmatch.fnmatchcase(path, pattern)
