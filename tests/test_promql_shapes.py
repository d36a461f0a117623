"""The query shapes the controller derives freshness, pod counts and batched forms from.

The presets' shape is a sum over one metric, or over an ``or`` of several metric names with
the same ``{${matchers}}`` selector (the ``vllm`` preset reads either of vLLM's KV-cache
names). Each derived query keeps the ``or``, so a pod exporting both names counts once:
PromQL's ``or`` matches on the labels without ``__name__``, and ``count_over_time`` and
``timestamp`` drop the name. Table tests of the text; tests/test_vllm_preset.py runs them
against the real Prometheus.
"""

from __future__ import annotations

import pytest

from predictive_scaler.config.presets import SIGNAL_PRESETS
from predictive_scaler.promql import (
    batch_shape,
    batchable_metrics,
    escape_promql_string,
    escape_re2_literal,
    fresh_samples_template,
    latest_sample_template,
    render_batch_query,
    reporting_pods_template,
)

VLLM = SIGNAL_PRESETS["vllm"]["query"]
NIM = SIGNAL_PRESETS["nim"]["query"]
VLLM_NAMES = ("vllm:gpu_cache_usage_perc", "vllm:kv_cache_usage_perc")
M = "${matchers}"


@pytest.mark.parametrize(
    ("template", "metrics"),
    [
        (NIM, ("gpu_cache_usage_perc",)),
        (VLLM, VLLM_NAMES),
        (" sum ( vllm:num_requests_waiting { ${matchers} } ) ", ("vllm:num_requests_waiting",)),
        (f"sum(a{{{M}}} or b{{{M}}} or c{{{M}}})", ("a", "b", "c")),
        (f"sum(\n  a{{ {M} }}\n  or b{{{M}}}\n)", ("a", "b")),
        (f"sum(a{{{M}}} or a{{{M}}})", ("a",)),  # the same name twice is that name
        # Not the shape: another aggregation, a function, an extra matcher on one side, a
        # matching modifier (changes what `or` keeps), two sums, an `or` missing a side.
        (f"avg(a{{{M}}} or b{{{M}}})", None),
        (f"sum(rate(a{{{M}}}[5m]))", None),
        (f'sum(a{{{M}}} or b{{{M},model="x"}})', None),
        (f"sum(a{{{M}}} or on(pod) b{{{M}}})", None),
        (f"sum(a{{{M}}}) or sum(b{{{M}}})", None),
        (f"sum(a{{{M}}} or)", None),
        (f"sum(a{{{M}}} and b{{{M}}})", None),
        (f"sum(a{{{M}}} orb{{{M}}})", None),
    ],
)
def test_the_presets_shape_is_a_sum_over_an_or_of_names(
    template: str, metrics: tuple[str, ...] | None
) -> None:
    assert batchable_metrics(template) == metrics


@pytest.mark.parametrize(
    ("template", "fresh", "latest", "count"),
    [
        # One name: the text existing installs (and tests) already ask, unchanged.
        (
            NIM,
            "sum(count_over_time(gpu_cache_usage_perc{${matchers}}[59999ms]))",
            "max(timestamp(gpu_cache_usage_perc{${matchers}}))",
            "count(gpu_cache_usage_perc{${matchers}})",
        ),
        # Several: `or` per term, so a pod exporting both names counts once (the count's and
        # the timestamp's series have no name left to tell them apart).
        (
            VLLM,
            "sum(count_over_time(vllm:gpu_cache_usage_perc{${matchers}}[59999ms])"
            " or count_over_time(vllm:kv_cache_usage_perc{${matchers}}[59999ms]))",
            "max(timestamp(vllm:gpu_cache_usage_perc{${matchers}})"
            " or timestamp(vllm:kv_cache_usage_perc{${matchers}}))",
            "count(vllm:gpu_cache_usage_perc{${matchers}}"
            " or vllm:kv_cache_usage_perc{${matchers}})",
        ),
    ],
)
def test_derived_queries_keep_every_name(
    template: str, fresh: str, latest: str, count: str
) -> None:
    assert fresh_samples_template(template, 60.0) == fresh
    assert latest_sample_template(template) == latest
    assert reporting_pods_template(template) == count


def test_other_shapes_have_no_derived_queries() -> None:
    custom = "sum(max_over_time(a{${matchers}}[5m]))"
    assert fresh_samples_template(custom, 60.0) is None
    assert latest_sample_template(custom) is None
    assert reporting_pods_template(custom) is None
    assert fresh_samples_template(VLLM, 0.001) is None  # no range shorter than a step


SEL = 'namespace=~"a|b"'
VLLM_SELECTORS = (f"vllm:gpu_cache_usage_perc{{{SEL}}}", f"vllm:kv_cache_usage_perc{{{SEL}}}")
OLD, NEW = VLLM_SELECTORS


@pytest.mark.parametrize(
    ("template", "kind", "batched"),
    [
        (VLLM, "sum", f"sum by (namespace) ({OLD} or {NEW})"),
        (
            fresh_samples_template(VLLM, 60.0),
            "fresh[59999ms]",
            f"sum by (namespace) (count_over_time({OLD}[59999ms])"
            f" or count_over_time({NEW}[59999ms]))",
        ),
        (
            latest_sample_template(VLLM),
            "latest",
            f"max by (namespace) (timestamp({OLD}) or timestamp({NEW}))",
        ),
        (reporting_pods_template(VLLM), "count", f"count by (namespace) ({OLD} or {NEW})"),
        # One name: today's text.
        (
            fresh_samples_template(NIM, 300.0),
            "fresh[299999ms]",
            'sum by (namespace) (count_over_time(gpu_cache_usage_perc{namespace=~"a|b"}'
            "[299999ms]))",
        ),
        (
            latest_sample_template(NIM),
            "latest",
            'max by (namespace) (timestamp(gpu_cache_usage_perc{namespace=~"a|b"}))',
        ),
        (
            reporting_pods_template(NIM),
            "count",
            'count by (namespace) (gpu_cache_usage_perc{namespace=~"a|b"})',
        ),
        (NIM, "sum", 'sum by (namespace) (gpu_cache_usage_perc{namespace=~"a|b"})'),
    ],
)
def test_each_derived_query_batches_over_every_name(
    template: str | None, kind: str, batched: str
) -> None:
    assert template is not None
    shape = batch_shape(template)
    assert shape is not None, template
    assert shape[0] == kind
    query = render_batch_query(shape[1], [{"namespace": "b"}, {"namespace": "a"}], kind=kind)
    assert query == (batched, ("namespace",))


def test_the_batch_key_is_the_whole_name_tuple() -> None:
    # The new name alone is another query than the `or` of both: not one batch.
    assert batch_shape(VLLM) == ("sum", VLLM_NAMES)
    assert batch_shape("sum(vllm:kv_cache_usage_perc{${matchers}})") == (
        "sum",
        ("vllm:kv_cache_usage_perc",),
    )
    # Ranges that differ between the terms have no one batched form.
    mixed = f"sum(count_over_time(a{{{M}}}[59999ms]) or count_over_time(b{{{M}}}[1000ms]))"
    assert batch_shape(mixed) is None


def test_a_single_name_may_still_be_given_as_a_string() -> None:
    assert render_batch_query("m", [{"namespace": "a"}]) == (
        'sum by (namespace) (m{namespace=~"a"})',
        ("namespace",),
    )
    with pytest.raises(ValueError, match="no metric"):
        render_batch_query((), [{"namespace": "a"}])


# ------------------------------------------------------ escaping: the rules, per character


def _escaped_by_rule(value: str, quote: str) -> str:
    """The escaping rule spelled out one character at a time (backslash and the named
    controls by name, the quote by a backslash, other controls and DEL as \\uXXXX)."""
    named = {"\\": "\\\\", "\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r"}
    named |= {"\t": "\\t", "\v": "\\v"}
    out = []
    for ch in value:
        if ch in named:
            out.append(named[ch])
        elif ch == quote:
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out)


def _re2_by_rule(value: str) -> str:
    return "".join(
        "\\" + ch if ord(ch) < 0x80 and not (ch.isalnum() or ch == "_") else ch for ch in value
    )


EVERY_LOW_CHARACTER = "".join(chr(code) for code in range(0x300))


@pytest.mark.parametrize("quote", ['"', "'"])
def test_promql_escaping_follows_the_rule_for_every_character(quote: str) -> None:
    assert escape_promql_string(EVERY_LOW_CHARACTER, quote) == _escaped_by_rule(
        EVERY_LOW_CHARACTER, quote
    )
    assert escape_promql_string("ns-1|ns-2\u00e9\U0001f600", quote) == "ns-1|ns-2\u00e9\U0001f600"
    with pytest.raises(ValueError, match="double- and single-quoted"):
        escape_promql_string("x", "`")


def test_re2_escaping_follows_the_rule_for_every_character() -> None:
    assert escape_re2_literal(EVERY_LOW_CHARACTER) == _re2_by_rule(EVERY_LOW_CHARACTER)
    assert escape_re2_literal("ns-1.a_b") == "ns\\-1\\.a_b"
