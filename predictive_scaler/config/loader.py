"""Loading: YAML text or a file into a validated :class:`~predictive_scaler.config.values.Config`.

Pure: parsing and validation only compute, they do no I/O (the single exception is
:func:`load_config_file`), never log, and never evaluate a value (``yaml.safe_load`` only).
Every section is checked against its field table (``policy``, ``fields``); all issues are
collected in one pass and raised together as one :class:`ConfigError`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import yaml

from predictive_scaler.config.errors import ConfigError, ConfigIssue, _Ctx, _short_repr
from predictive_scaler.config.fields import (
    _BASIC_AUTH_FIELDS,
    _CONTROLLER_CROSS,
    _CONTROLLER_FIELDS,
    _HPA_FIELDS,
    _PROMETHEUS_FIELDS,
    _ROOT_FIELDS,
    _SIGNAL_FIELDS,
    _TARGET_FIELDS,
)
from predictive_scaler.config.policy import (
    _POLICY_CROSS,
    _POLICY_FIELDS,
    _POLICY_KEYS,
    _build_policy,
    _builtin_policy_values,
)
from predictive_scaler.config.presets import _DEFAULT_SIGNAL_NAME, SIGNAL_PRESETS
from predictive_scaler.config.schema import (
    _as_mapping,
    _check_cross,
    _check_keys,
    _join,
    _parse_fields,
)
from predictive_scaler.config.values import (
    DEFAULT_SIGNALS,
    BasicAuth,
    Config,
    ControllerConfig,
    PrometheusConfig,
    Signal,
    Target,
)
from predictive_scaler.pod_overlap import PodSelection, compute_overlap, equality_selection
from predictive_scaler.signals import DEFAULT_KIND, SIGNAL_KINDS


def _parse_signal(data: object, path: str, ctx: _Ctx) -> tuple[Signal | None, str | None]:
    """One signal; returns the signal (or ``None`` when invalid) and its name if known."""
    if not isinstance(data, Mapping):
        ctx.add(path, data, "must be a mapping with keys: " + ", ".join(_SIGNAL_KEYS))
        return None, None
    ok = _check_keys(data, path, _SIGNAL_KEYS, ctx)
    values, bad = _parse_fields(data, path, _SIGNAL_FIELDS, ctx)
    ok = ok and not bad
    if "kind" in bad:
        # Which keys are required or read depends on the kind: nothing more to say.
        name = values.get("name")
        return None, name if isinstance(name, str) else None
    kind = SIGNAL_KINDS[values.get("kind", DEFAULT_KIND)]
    preset = values.get("preset")
    merged: dict[str, Any] = {}
    if isinstance(preset, str):
        merged.update((k, v) for k, v in SIGNAL_PRESETS[preset].items() if k in kind.preset_keys)
        merged["name"] = _DEFAULT_SIGNAL_NAME
    merged.update((key, value) for key, value in values.items() if key != "preset")
    if "preset" in bad:
        # The preset would have filled the other keys: their absence says nothing more.
        return None, None

    for key in _QUERY_KEYS:
        if key not in kind.keys and values.get(key) is not None:
            ctx.add(_join(path, key), values[key], f"is not read by kind {kind.name}")
            ok = False
    for key in ("name", *kind.required):
        if key not in bad and merged.get(key) is None:
            ctx.missing(_join(path, key), "is required unless preset is set")
            ok = False
    for given, needed in kind.together:
        if merged.get(given) is not None and merged.get(needed) is None and needed not in bad:
            ctx.missing(_join(path, needed), f"is required when {given} is set")
            ok = False
    if (
        merged.get("targetPerPod") is None
        and merged.get("hpaMetric") is None
        and not {"targetPerPod", "hpaMetric"} & bad
        and merged.get(kind.required[0]) is not None
    ):
        ctx.missing(
            _join(path, "targetPerPod"),
            "is required when hpaMetric is null (the HPA target to read)",
        )
        ok = False
    name = merged.get("name") if "name" not in bad else None
    if not ok:
        return None, name if isinstance(name, str) else None
    return (
        Signal(
            name=merged["name"],
            query=merged.get("query"),
            queue_query=merged.get("queueQuery"),
            running_query=merged.get("runningQuery"),
            target_per_pod=merged.get("targetPerPod"),
            hpa_metric=merged.get("hpaMetric"),
            kind=kind.name,
        ),
        merged["name"],
    )


_QUERY_KEYS: Final = ("query", "queueQuery", "runningQuery")
_SIGNAL_KEYS: Final = tuple(item.key for item in _SIGNAL_FIELDS)
_SIGNALS_FIELD: Final = next(item for item in _TARGET_FIELDS if item.key == "signals")
_HPA_FIELD: Final = next(item for item in _TARGET_FIELDS if item.key == "hpa")


def _parse_signals(data: object, path: str, ctx: _Ctx) -> tuple[Signal, ...] | None:
    if not isinstance(data, list | tuple) or not data:
        ctx.add(path, data, _SIGNALS_FIELD.rule)
        return None
    signals: list[Signal] = []
    first_index: dict[str, int] = {}
    ok = True
    for index, item in enumerate(data):
        item_path = f"{path}[{index}]"
        signal, name = _parse_signal(item, item_path, ctx)
        if name is not None:
            if name in first_index:
                ctx.add(
                    f"{item_path}.name",
                    name,
                    f"duplicate signal name; signals[{first_index[name]}] has the same name",
                )
                ok = False
            else:
                first_index[name] = index
        if signal is None:
            ok = False
        else:
            signals.append(signal)
    return tuple(signals) if ok else None


_TARGET_KEYS: Final = tuple(item.key for item in _TARGET_FIELDS) + _POLICY_KEYS


@dataclass(frozen=True)
class _ParsedTarget:
    target: Target | None
    hpa: tuple[str, str] | None
    id: str | None
    explicit_id: bool


def _parse_target(
    data: object,
    path: str,
    defaults: Mapping[str, Any],
    defaults_bad: set[str],
    ctx: _Ctx,
) -> _ParsedTarget:
    if not isinstance(data, Mapping):
        ctx.add(path, data, "must be a mapping with at least the key: hpa")
        return _ParsedTarget(None, None, None, explicit_id=False)
    ok = _check_keys(data, path, _TARGET_KEYS, ctx)

    hpa: tuple[str, str] | None = None
    if "hpa" not in data:
        ctx.missing(_join(path, "hpa"))
        ok = False
    elif not isinstance(data["hpa"], Mapping):
        ctx.add(_join(path, "hpa"), data["hpa"], _HPA_FIELD.rule)
        ok = False
    else:
        hpa_path = _join(path, "hpa")
        ok = _check_keys(data["hpa"], hpa_path, _HPA_KEYS, ctx) and ok
        hpa_values, hpa_bad = _parse_fields(data["hpa"], hpa_path, _HPA_FIELDS, ctx)
        if hpa_bad:
            ok = False
        else:
            hpa = (hpa_values["namespace"], hpa_values["name"])

    values, bad = _parse_fields(data, path, _TARGET_FIELDS, ctx)
    ok = ok and not bad
    signals: tuple[Signal, ...] = DEFAULT_SIGNALS
    if "signals" in data:
        parsed = _parse_signals(data["signals"], _join(path, "signals"), ctx)
        if parsed is None:
            ok = False
        else:
            signals = parsed

    policy_values, policy_bad = _parse_fields(data, path, _POLICY_FIELDS, ctx)
    effective = {**defaults, **policy_values}
    explicit = set(policy_values)
    inherited_bad = (defaults_bad - explicit) | policy_bad
    crossed = _check_cross(
        _POLICY_CROSS,
        values=effective,
        explicit=explicit,
        bad=inherited_bad,
        path=path,
        raw=data,
        ctx=ctx,
        inherited=True,
    )
    if policy_bad or crossed:
        ok = False

    target_id = values.get("name")
    explicit_id = target_id is not None
    if target_id is None and hpa is not None and "name" not in bad:
        target_id = f"{hpa[0]}/{hpa[1]}"
    if not ok or hpa is None or target_id is None or defaults_bad - explicit:
        return _ParsedTarget(None, hpa, target_id, explicit_id)
    target = Target(
        id=target_id,
        namespace=hpa[0],
        name=hpa[1],
        enabled=values.get("enabled", True),
        selector=values.get("selector", ()),
        signals=signals,
        policy=_build_policy(effective),
    )
    return _ParsedTarget(target, hpa, target_id, explicit_id)


_HPA_KEYS: Final = tuple(item.key for item in _HPA_FIELDS)


def _parse_targets(
    data: object, defaults: Mapping[str, Any], defaults_bad: set[str], ctx: _Ctx
) -> tuple[Target, ...] | None:
    if data is None:
        return ()
    if not isinstance(data, list | tuple):
        ctx.add("targets", data, _ROOT_BY_KEY["targets"].rule)
        return None
    targets: list[Target] = []
    by_hpa: dict[tuple[str, str], int] = {}
    by_id: dict[str, int] = {}
    by_pods: list[tuple[int, PodSelection]] = []
    ok = True
    for index, item in enumerate(data):
        path = f"targets[{index}]"
        parsed = _parse_target(item, path, defaults, defaults_bad, ctx)
        duplicate_hpa = False
        if parsed.hpa is not None:
            if parsed.hpa in by_hpa:
                duplicate_hpa = True
                ctx.add(
                    f"{path}.hpa",
                    "/".join(parsed.hpa),
                    f"duplicate target: targets[{by_hpa[parsed.hpa]}] manages the same HPA",
                )
                ok = False
            else:
                by_hpa[parsed.hpa] = index
        if parsed.id is not None:
            if parsed.id in by_id:
                if not duplicate_hpa or parsed.explicit_id:
                    ctx.add(
                        f"{path}.name",
                        parsed.id,
                        f"duplicate target id: targets[{by_id[parsed.id]}] has the same id",
                    )
                ok = False
            else:
                by_id[parsed.id] = index
        if parsed.target is None:
            ok = False
        else:
            targets.append(parsed.target)
            if parsed.target.selector and parsed.target.enabled:
                pods = equality_selection(parsed.target.namespace, parsed.target.selector)
                # Only a certain overlap is an error: "possible" ones depend on the pods'
                # labels, which the controller reports at run time (pod_overlap).
                shared = next(
                    (
                        (other, overlap)
                        for other, selection in by_pods
                        if (overlap := compute_overlap(selection, pods)).kind == "certain"
                    ),
                    None,
                )
                if shared is not None:
                    ctx.add(
                        f"{path}.selector",
                        dict(parsed.target.selector),
                        f"pods overlap: targets[{shared[0]}] selects the same pods in this "
                        f"namespace ({shared[1].why}), so both would sum them; give each its "
                        "own selector",
                    )
                    ok = False
                else:
                    by_pods.append((index, pods))
    return tuple(targets) if ok else None


_ROOT_BY_KEY: Final = {item.key: item for item in _ROOT_FIELDS}
_ROOT_KEYS: Final = tuple(_ROOT_BY_KEY)
_PROMETHEUS_KEYS: Final = tuple(item.key for item in _PROMETHEUS_FIELDS)
_BASIC_AUTH_KEYS: Final = tuple(item.key for item in _BASIC_AUTH_FIELDS)
_CONTROLLER_KEYS: Final = tuple(item.key for item in _CONTROLLER_FIELDS)


def _parse_prometheus(data: object, ctx: _Ctx) -> tuple[PrometheusConfig | None, bool]:
    if data is None:
        return None, True
    section = _as_mapping(data, "prometheus", _ROOT_BY_KEY["prometheus"], ctx)
    if section is None:
        return None, False
    ok = _check_keys(section, "prometheus", _PROMETHEUS_KEYS, ctx, secret=True)
    values, bad = _parse_fields(section, "prometheus", _PROMETHEUS_FIELDS, ctx)
    ok = ok and not bad
    basic_auth: BasicAuth | None = None
    raw_auth = section.get("basicAuth")
    if raw_auth is not None:
        auth_field = next(item for item in _PROMETHEUS_FIELDS if item.key == "basicAuth")
        if not isinstance(raw_auth, Mapping):
            ctx.add("prometheus.basicAuth", raw_auth, auth_field.rule, secret=True)
            ok = False
        else:
            path = "prometheus.basicAuth"
            ok = _check_keys(raw_auth, path, _BASIC_AUTH_KEYS, ctx, secret=True) and ok
            auth_values, auth_bad = _parse_fields(raw_auth, path, _BASIC_AUTH_FIELDS, ctx)
            if auth_bad:
                ok = False
            else:
                basic_auth = BasicAuth(auth_values["username"], auth_values["passwordFile"])
            if values.get("bearerTokenFile") is not None:
                ctx.add(
                    "prometheus.bearerTokenFile",
                    None,
                    "must not be set together with basicAuth",
                    secret=True,
                )
                ok = False
    if values.get("caBundle") is not None and values.get("verifyTls") is False:
        # The Prometheus adapter refuses this pair; caught here so `validate-config` agrees.
        ctx.add(
            "prometheus.caBundle",
            values["caBundle"],
            "must not be set together with verifyTls: false (a CA bundle is only used to "
            "verify the server): remove caBundle, or set verifyTls: true",
        )
        ok = False
    if not ok:
        return None, False
    return (
        PrometheusConfig(
            url=values["url"],
            timeout_seconds=values.get("timeout", 10.0),
            bearer_token_file=values.get("bearerTokenFile"),
            basic_auth=basic_auth,
            ca_bundle=values.get("caBundle"),
            verify_tls=values.get("verifyTls", True),
            headers=values.get("headers", ()),
        ),
        True,
    )


def _parse_controller(data: object, ctx: _Ctx) -> ControllerConfig | None:
    section = _as_mapping(data, "controller", _ROOT_BY_KEY["controller"], ctx)
    if section is None:
        return None
    ok = _check_keys(section, "controller", _CONTROLLER_KEYS, ctx)
    values, bad = _parse_fields(section, "controller", _CONTROLLER_FIELDS, ctx)
    effective = {item.key: item.default for item in _CONTROLLER_FIELDS} | values
    crossed = _check_cross(
        _CONTROLLER_CROSS,
        values=effective,
        explicit=values,
        bad=bad,
        path="controller",
        raw=section,
        ctx=ctx,
        inherited=False,
    )
    if crossed:
        ok = False
    if not ok or bad:
        return None
    kwargs: dict[str, Any] = {item.attr: effective[item.key] for item in _CONTROLLER_FIELDS}
    return ControllerConfig(**kwargs)


def _parse_root(data: object, ctx: _Ctx) -> Config | None:
    if not isinstance(data, Mapping):
        ctx.add(
            "<root>",
            data,
            "the configuration must be a mapping with keys: " + ", ".join(_ROOT_KEYS),
        )
        return None
    ok = _check_keys(data, "", _ROOT_KEYS, ctx)

    defaults = _builtin_policy_values()
    defaults_bad: set[str] = set()
    section = _as_mapping(data.get("defaults"), "defaults", _ROOT_BY_KEY["defaults"], ctx)
    if section is None:
        ok = False
    else:
        ok = _check_keys(section, "defaults", _POLICY_KEYS, ctx) and ok
        values, defaults_bad = _parse_fields(section, "defaults", _POLICY_FIELDS, ctx)
        defaults.update(values)
        crossed = _check_cross(
            _POLICY_CROSS,
            values=defaults,
            explicit=values,
            bad=defaults_bad,
            path="defaults",
            raw=section,
            ctx=ctx,
            inherited=False,
        )
        if defaults_bad or crossed:
            ok = False

    targets = _parse_targets(data.get("targets"), defaults, defaults_bad, ctx)
    prometheus, prometheus_ok = _parse_prometheus(data.get("prometheus"), ctx)
    controller = _parse_controller(data.get("controller"), ctx)
    if not ok or not prometheus_ok or controller is None or targets is None:
        return None
    return Config(
        defaults=_build_policy(defaults),
        targets=targets,
        prometheus=prometheus,
        controller=controller,
    )


def parse_config_data(data: object) -> Config:
    """Validate already-loaded YAML data (plain dicts, lists and scalars).

    Raises :class:`ConfigError` listing every issue found.
    """
    ctx = _Ctx()
    try:
        config = _parse_root(data, ctx)
    except RecursionError:  # pragma: no cover -- the schema bounds recursion; belt and braces
        ctx.add("<root>", None, "the configuration is nested too deeply")
        config = None
    if ctx.issues or config is None:
        if not ctx.issues:  # pragma: no cover -- every failure path records an issue
            ctx.add("<root>", data, "invalid configuration")
        raise ConfigError(ctx.issues)
    return config


# ---- YAML text and files ----------------------------------------------------------------------


def _yaml_issue(exc: yaml.YAMLError, text: str) -> ConfigIssue:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    detail = f"{context}: {problem}" if context else str(problem)
    if mark is None:
        return ConfigIssue("<yaml>", None, f"invalid YAML: {detail}")
    lines = text.splitlines()
    snippet = lines[mark.line] if 0 <= mark.line < len(lines) else ""
    return ConfigIssue(
        "<yaml>",
        _short_repr(snippet.strip()),
        f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {detail}",
    )


def _duplicate_key_issues(text: str) -> list[ConfigIssue]:
    """Duplicate mapping keys, which ``yaml.safe_load`` silently resolves to the last one.

    Walks the composed node graph (no construction; aliases visited once).
    """
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    issues: list[tuple[int, int, ConfigIssue]] = []
    seen: set[int] = set()
    stack: list[tuple[yaml.Node, str]] = [(root, "")] if root is not None else []
    while stack:
        node, path = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[tuple[str, str], int] = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
                child = _join(path, key) if isinstance(key, str) else path
                if isinstance(key, str):
                    identity = (key_node.tag, key)
                    mark = key_node.start_mark
                    if identity in first:
                        rule = (
                            f"duplicate key at line {mark.line + 1}, column {mark.column + 1} "
                            f"(first at line {first[identity]})"
                        )
                        issue = ConfigIssue(child, _short_repr(key), rule)
                        issues.append((mark.line, mark.column, issue))
                    else:
                        first[identity] = mark.line + 1
                stack.append((value_node, child))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                stack.append((item, f"{path}[{index}]"))
    issues.sort(key=lambda entry: (entry[0], entry[1]))
    return [issue for _, _, issue in issues]


def parse_config(text: str) -> Config:
    """Parse and validate YAML text (the ConfigMap's ``config.yaml``).

    Uses ``yaml.safe_load`` only. Raises :class:`ConfigError` listing every issue found: broken
    YAML (``<yaml>`` with line and column), duplicate keys, and every broken rule.
    """
    try:
        data = yaml.safe_load(text)
        duplicates = _duplicate_key_issues(text)
    except yaml.YAMLError as exc:
        raise ConfigError([_yaml_issue(exc, text)]) from None
    except RecursionError:
        raise ConfigError(
            [ConfigIssue("<yaml>", None, "invalid YAML: nested too deeply")]
        ) from None
    if data is None:
        raise ConfigError(
            [ConfigIssue("<root>", None, "the configuration is empty; expected a mapping")]
        )
    try:
        config = parse_config_data(data)
    except ConfigError as exc:
        raise ConfigError(duplicates + exc.errors) from None
    if duplicates:
        raise ConfigError(duplicates)
    return config


def load_config_file(path: str | os.PathLike[str]) -> Config:
    """Read a UTF-8 YAML file and :func:`parse_config` it.

    An unreadable file (missing, a directory, no permission, not UTF-8) raises
    :class:`ConfigError` with path ``<file>``.
    """
    name = _short_repr(os.fspath(path))
    try:
        with open(path, encoding="utf-8") as stream:
            text = stream.read()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError([ConfigIssue("<file>", name, f"cannot read: {reason}")]) from None
    except UnicodeDecodeError:
        raise ConfigError([ConfigIssue("<file>", name, "cannot read: not valid UTF-8")]) from None
    return parse_config(text)
