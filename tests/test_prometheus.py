"""The Prometheus adapter against the real Prometheus server and tiny local HTTP servers."""

from __future__ import annotations

import base64
import json
import math
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from predictive_scaler.prometheus import (
    PrometheusQueryError,
    PrometheusSettings,
    PrometheusSource,
    PrometheusUnavailable,
    RangeStatus,
    escape_promql_string,
    render_matchers,
    render_query,
)
from tests.prom_fixtures import PrometheusFactory
from tests.prom_harness import PrometheusServer, Series, free_port

STEP = 60.0
PODS = ("nim-0", "nim-1", "nim-2")
EVIL = '"} or vector(1) #'
WEIRD_POD = 'we\\ird "pod"\nname'
GAP = slice(1000, 1060)  # one hour without samples for nim-2 in gpu_gappy
INF_AT = 500
SUM_QUERY = "sum(gpu_cache_usage_perc{${matchers}})"


@dataclass(frozen=True)
class History:
    timestamps: npt.NDArray[np.float64]
    per_pod: dict[str, npt.NDArray[np.float64]]

    @property
    def start(self) -> datetime:
        return datetime.fromtimestamp(float(self.timestamps[0]), UTC)

    @property
    def end(self) -> datetime:
        return datetime.fromtimestamp(float(self.timestamps[-1]), UTC)

    @property
    def total(self) -> npt.NDArray[np.float64]:
        return np.asarray(np.sum(list(self.per_pod.values()), axis=0), dtype=np.float64)


@pytest.fixture(scope="module")
def history() -> History:
    """Two days of 1-minute KV-cache usage for three pods, ending five minutes ago."""
    end = math.floor(time.time() / STEP) * STEP - 5 * STEP
    timestamps = np.arange(end - 2 * 86400, end + 1, STEP)
    rng = np.random.default_rng(7)
    phase = 2 * np.pi * (timestamps % 86400) / 86400
    per_pod: dict[str, npt.NDArray[np.float64]] = {}
    for i, pod in enumerate(PODS):
        usage = 0.5 + 0.3 * np.sin(phase + i) + rng.normal(0, 0.05, phase.size)
        per_pod[pod] = np.round(np.clip(usage, 0.0, 1.0), 6).astype(np.float64)
    return History(timestamps, per_pod)


@pytest.fixture(scope="module")
def prometheus(prometheus_factory: PrometheusFactory, history: History) -> PrometheusServer:
    ts = history.timestamps
    series: list[Series] = [
        ("gpu_cache_usage_perc", {"namespace": "llm", "pod": pod}, ts, values)
        for pod, values in history.per_pod.items()
    ]
    series.append(
        ("gpu_cache_usage_perc", {"namespace": "other", "pod": "x-0"}, ts, np.ones(ts.size))
    )
    series.append(
        ("gpu_cache_usage_perc", {"namespace": "odd", "pod": WEIRD_POD}, ts, np.full(ts.size, 0.25))
    )
    gappy = history.per_pod["nim-2"].copy()
    gappy[GAP] = np.nan
    series += [
        ("gpu_gappy", {"pod": "nim-0"}, ts, history.per_pod["nim-0"]),
        ("gpu_gappy", {"pod": "nim-2"}, ts, gappy),
    ]
    with_inf = history.per_pod["nim-1"].copy()
    with_inf[INF_AT] = np.inf
    series.append(("gpu_with_inf", {"pod": "nim-1"}, ts, with_inf))
    return prometheus_factory(series)


@pytest.fixture
def source(prometheus: PrometheusServer) -> Iterator[PrometheusSource]:
    src = PrometheusSource(PrometheusSettings(url=prometheus.url, timeout_seconds=5.0))
    yield src
    src.close()


def llm_sum_query(namespace: str = "llm") -> str:
    return render_query(SUM_QUERY, {}, raw={"matchers": render_matchers({"namespace": namespace})})


# --------------------------------------------------------------------------- real Prometheus


class TestRangeAgainstRealPrometheus:
    async def test_sum_over_pods_equals_what_was_written(
        self, source: PrometheusSource, history: History
    ) -> None:
        result = await source.fetch_range(llm_sum_query(), history.start, history.end, STEP)
        assert result.status is RangeStatus.OK, result.message
        assert result.series_count == 1
        np.testing.assert_array_equal(result.timestamps, history.timestamps)
        np.testing.assert_allclose(result.values, history.total, rtol=0, atol=1e-9)

    async def test_adapter_sums_several_series(
        self, source: PrometheusSource, history: History
    ) -> None:
        query = render_query(
            "gpu_cache_usage_perc{${matchers}}",
            {},
            raw={"matchers": render_matchers({"namespace": "llm"})},
        )
        result = await source.fetch_range(query, history.start, history.end, STEP)
        assert result.status is RangeStatus.OK, result.message
        assert result.series_count == 3
        np.testing.assert_allclose(result.values, history.total, rtol=0, atol=1e-9)

    async def test_long_range_is_split_into_chunks(
        self, prometheus: PrometheusServer, history: History
    ) -> None:
        settings = PrometheusSettings(url=prometheus.url, timeout_seconds=5.0)
        async with PrometheusSource(settings, max_points_per_query=500) as chunked:
            result = await chunked.fetch_range(llm_sum_query(), history.start, history.end, STEP)
        assert result.status is RangeStatus.OK, result.message
        assert result.timestamps.size == history.timestamps.size == 2881
        np.testing.assert_array_equal(result.timestamps, history.timestamps)
        np.testing.assert_allclose(result.values, history.total, rtol=0, atol=1e-9)

    async def test_grid_is_regular_and_steps_before_history_are_nan(
        self, source: PrometheusSource, history: History
    ) -> None:
        start = history.start - timedelta(hours=1)
        result = await source.fetch_range(llm_sum_query(), start, history.end, STEP)
        assert result.status is RangeStatus.PARTIAL
        assert result.message == "60 of 2941 steps have no sample"
        assert np.allclose(np.diff(result.timestamps), STEP)
        assert result.timestamps[0] == start.timestamp()
        assert np.isnan(result.values[:60]).all()
        np.testing.assert_allclose(result.values[60:], history.total, atol=1e-9)

    async def test_series_missing_in_some_steps_is_partial_and_summed_over_present(
        self, source: PrometheusSource, history: History
    ) -> None:
        result = await source.fetch_range("gpu_gappy", history.start, history.end, STEP)
        assert result.status is RangeStatus.PARTIAL
        assert result.series_count == 2
        # Prometheus' 5-minute lookback carries the last sample over the first 5 steps of the gap.
        assert "55 steps lack a sample in some of the 2 series" in result.message
        nim0, nim2 = history.per_pod["nim-0"], history.per_pod["nim-2"]
        expected = nim0 + nim2
        carried = np.arange(GAP.start, GAP.start + 5)
        expected[carried] = nim0[carried] + nim2[GAP.start - 1]
        missing = np.arange(GAP.start + 5, GAP.stop)
        expected[missing] = nim0[missing]
        np.testing.assert_allclose(result.values, expected, rtol=0, atol=1e-9)

    async def test_inf_sample_becomes_nan_and_is_reported(
        self, source: PrometheusSource, history: History
    ) -> None:
        result = await source.fetch_range("gpu_with_inf", history.start, history.end, STEP)
        assert result.status is RangeStatus.PARTIAL
        assert result.message == "1 NaN/Inf samples made 1 steps NaN"
        assert np.isnan(result.values[INF_AT])
        assert np.isfinite(np.delete(result.values, INF_AT)).all()

    async def test_unknown_metric_is_empty(
        self, source: PrometheusSource, history: History
    ) -> None:
        result = await source.fetch_range("no_such_metric", history.start, history.end, STEP)
        assert result.status is RangeStatus.EMPTY
        assert result.series_count == 0
        assert result.timestamps.size == history.timestamps.size
        assert np.isnan(result.values).all()

    async def test_bad_query_is_one_line_error(
        self, source: PrometheusSource, history: History
    ) -> None:
        result = await source.fetch_range("sum(rate(x[5m]", history.start, history.end, STEP)
        assert result.status is RangeStatus.ERROR
        assert "\n" not in result.message
        assert result.message.startswith("range query failed: HTTP 400: bad_data:")
        assert "parse error" in result.message

    async def test_result_arrays_are_read_only(
        self, source: PrometheusSource, history: History
    ) -> None:
        result = await source.fetch_range(llm_sum_query(), history.start, history.end, STEP)
        with pytest.raises(ValueError, match="read-only"):
            result.values[0] = 0.0

    async def test_naive_datetimes_are_rejected(self, source: PrometheusSource) -> None:
        with pytest.raises(ValueError, match="timezone-aware"):
            await source.fetch_range("up", datetime(2024, 1, 1), datetime(2024, 1, 2), STEP)


class TestInjectionAgainstRealPrometheus:
    async def test_naive_substitution_would_inject(
        self, source: PrometheusSource, history: History
    ) -> None:
        # The control: pasting the value unescaped turns the selector into `... or vector(1)`.
        naive = 'gpu_cache_usage_perc{namespace="${namespace}"}'.replace("${namespace}", EVIL)
        result = await source.fetch_range(naive, history.start, history.end, STEP)
        assert result.status is RangeStatus.OK
        assert (result.values == 1.0).all()

    async def test_escaped_value_stays_inside_the_string(
        self, source: PrometheusSource, history: History
    ) -> None:
        query = render_query('gpu_cache_usage_perc{namespace="${namespace}"}', {"namespace": EVIL})
        result = await source.fetch_range(query, history.start, history.end, STEP)
        assert result.status is RangeStatus.EMPTY, (query, result.message)

    async def test_escaped_matchers_stay_inside_the_string(
        self, source: PrometheusSource, history: History
    ) -> None:
        result = await source.fetch_range(llm_sum_query(EVIL), history.start, history.end, STEP)
        assert result.status is RangeStatus.EMPTY, result.message

    async def test_escaped_value_round_trips_exactly(
        self, source: PrometheusSource, history: History
    ) -> None:
        query = render_query('gpu_cache_usage_perc{pod="${pod}"}', {"pod": WEIRD_POD})
        result = await source.fetch_range(query, history.start, history.end, STEP)
        assert result.status is RangeStatus.OK, result.message
        assert result.series_count == 1
        assert (result.values == 0.25).all()


class TestInstantAndCheck:
    async def test_instant_sum_at_a_time(self, source: PrometheusSource, history: History) -> None:
        value = await source.fetch_instant(llm_sum_query(), history.end)
        assert value == pytest.approx(float(history.total[-1]), abs=1e-9)

    async def test_instant_of_unknown_metric_is_none(
        self, source: PrometheusSource, history: History
    ) -> None:
        assert await source.fetch_instant("no_such_metric", history.end) is None

    async def test_instant_scalar(self, source: PrometheusSource, history: History) -> None:
        assert await source.fetch_instant("scalar(vector(2.5))", history.end) == 2.5

    async def test_instant_bad_query_raises_query_error(
        self, source: PrometheusSource, history: History
    ) -> None:
        with pytest.raises(PrometheusQueryError, match="bad_data"):
            await source.fetch_instant("sum(", history.end)

    async def test_check_passes(self, source: PrometheusSource) -> None:
        await source.check()


# --------------------------------------------------------------------------- unreachable servers


@pytest.fixture
def closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture
def silent_server_url() -> Iterator[str]:
    """A socket that completes TCP handshakes (backlog) but never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


class TestUnreachable:
    async def test_connection_refused_is_error(self, closed_port_url: str) -> None:
        async with PrometheusSource(
            PrometheusSettings(url=closed_port_url, timeout_seconds=1.0)
        ) as src:
            now = datetime.now(UTC)
            result = await src.fetch_range("up", now - timedelta(hours=1), now, STEP)
        assert result.status is RangeStatus.ERROR
        assert (
            result.message
            == f"range query failed: cannot connect to {closed_port_url}: Connection refused"
        )
        assert np.isnan(result.values).all() and result.values.size == 61

    async def test_timeout_is_error_and_bounded(self, silent_server_url: str) -> None:
        settings = PrometheusSettings(url=silent_server_url, timeout_seconds=0.5)
        async with PrometheusSource(settings) as src:
            now = datetime.now(UTC)
            started = time.monotonic()
            result = await src.fetch_range("up", now - timedelta(hours=1), now, STEP)
            elapsed = time.monotonic() - started
        assert result.status is RangeStatus.ERROR
        assert (
            result.message
            == f"range query failed: no response from {silent_server_url} within 0.5s"
        )
        assert elapsed < 1.5

    async def test_check_raises_unavailable_with_one_line(self, closed_port_url: str) -> None:
        async with PrometheusSource(
            PrometheusSettings(url=closed_port_url, timeout_seconds=1.0)
        ) as src:
            with pytest.raises(PrometheusUnavailable) as info:
                await src.check()
        assert str(info.value) == (
            f"Prometheus at {closed_port_url} is unavailable: "
            f"cannot connect to {closed_port_url}: Connection refused"
        )

    async def test_instant_on_silent_server_raises_unavailable(
        self, silent_server_url: str
    ) -> None:
        async with PrometheusSource(
            PrometheusSettings(url=silent_server_url, timeout_seconds=0.3)
        ) as src:
            with pytest.raises(PrometheusUnavailable, match="no response"):
                await src.fetch_instant("up", datetime.now(UTC))


# --------------------------------------------------------------------------- recording HTTP server


@dataclass
class Recorder:
    """A tiny Prometheus-API lookalike that records request headers and plays a response."""

    url: str = ""
    requests: list[dict[str, str]] = field(default_factory=list)
    status: int = 200
    body: bytes = b""
    echo_authorization: bool = False

    def answer_matrix(self, timestamps: list[float], value: str = "1") -> None:
        payload = {
            "status": "success",
            "data": {
                "resultType": "matrix",
                "result": [{"metric": {}, "values": [[t, value] for t in timestamps]}],
            },
        }
        self.status, self.body = 200, json.dumps(payload).encode()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    rec = Recorder()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            rec.requests.append(dict(self.headers.items()))
            body = rec.body
            if rec.echo_authorization:
                body = json.dumps(
                    {
                        "status": "error",
                        "errorType": "auth",
                        "error": f"bad {self.headers['Authorization']}",
                    }
                ).encode()
            self.send_response(rec.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(
        target=server.serve_forever, args=(0.05,), name="prom-recorder", daemon=True
    )
    thread.start()
    rec.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield rec
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def one_hour() -> tuple[datetime, datetime, list[float]]:
    end = datetime.fromtimestamp(math.floor(time.time() / STEP) * STEP, UTC)
    start = end - timedelta(hours=1)
    return start, end, [start.timestamp() + i * STEP for i in range(61)]


class TestCredentialsAndHeaders:
    async def test_bearer_token_and_headers_are_sent_and_token_reread(
        self, recorder: Recorder, tmp_path: Path
    ) -> None:
        token_file = tmp_path / "token"
        token_file.write_text("s3cr3t-token-1\n")
        settings = PrometheusSettings(
            url=recorder.url,
            bearer_token_file=str(token_file),
            headers={"X-Scope-OrgID": "tenant-a"},
        )
        start, end, grid = one_hour()
        recorder.answer_matrix(grid)
        async with PrometheusSource(settings) as src:
            first = await src.fetch_range("up", start, end, STEP)
            token_file.write_text("s3cr3t-token-2")
            second = await src.fetch_range("up", start, end, STEP)
        assert first.status is second.status is RangeStatus.OK
        assert [r["Authorization"] for r in recorder.requests] == [
            "Bearer s3cr3t-token-1",
            "Bearer s3cr3t-token-2",
        ]
        assert all(r["X-Scope-OrgID"] == "tenant-a" for r in recorder.requests)
        assert "s3cr3t" not in repr(settings) and "s3cr3t" not in str(settings)
        assert "tenant-a" not in repr(settings)
        assert "s3cr3t" not in repr(src)

    async def test_token_never_in_error_messages(self, recorder: Recorder, tmp_path: Path) -> None:
        token_file = tmp_path / "token"
        token_file.write_text("s3cr3t-token")
        recorder.status, recorder.echo_authorization = 401, True
        settings = PrometheusSettings(url=recorder.url, bearer_token_file=str(token_file))
        start, end, _ = one_hour()
        async with PrometheusSource(settings) as src:
            result = await src.fetch_range("up", start, end, STEP)
            with pytest.raises(PrometheusQueryError) as info:
                await src.fetch_instant("up", end)
        assert recorder.requests[0]["Authorization"] == "Bearer s3cr3t-token"
        assert result.status is RangeStatus.ERROR
        assert result.message == "range query failed: HTTP 401: auth: bad Bearer <redacted>"
        assert "s3cr3t" not in str(info.value)

    async def test_basic_auth_password_from_file(self, recorder: Recorder, tmp_path: Path) -> None:
        password_file = tmp_path / "password"
        password_file.write_text("pa55word")
        settings = PrometheusSettings(
            url=recorder.url,
            basic_auth_username="scaler",
            basic_auth_password_file=str(password_file),
        )
        start, end, grid = one_hour()
        recorder.answer_matrix(grid)
        async with PrometheusSource(settings) as src:
            result = await src.fetch_range("up", start, end, STEP)
        assert result.status is RangeStatus.OK
        scheme, encoded = recorder.requests[0]["Authorization"].split()
        assert (scheme, base64.b64decode(encoded).decode()) == ("Basic", "scaler:pa55word")
        assert "pa55word" not in repr(settings)

    async def test_missing_token_file_is_error(self, recorder: Recorder, tmp_path: Path) -> None:
        settings = PrometheusSettings(url=recorder.url, bearer_token_file=str(tmp_path / "absent"))
        start, end, _ = one_hour()
        async with PrometheusSource(settings) as src:
            result = await src.fetch_range("up", start, end, STEP)
        assert result.status is RangeStatus.ERROR
        assert result.message == (
            f"range query failed: cannot read bearer token file {tmp_path / 'absent'}: "
            "No such file or directory"
        )
        assert recorder.requests == []

    async def test_url_credentials_are_hidden(self) -> None:
        settings = PrometheusSettings(url="http://user:hunter2@127.0.0.1:9/")
        assert "hunter2" not in repr(settings)


class TestBadAnswers:
    async def test_tls_failure_is_error(self, recorder: Recorder) -> None:
        https_url = recorder.url.replace("http://", "https://")
        start, end, _ = one_hour()
        async with PrometheusSource(PrometheusSettings(url=https_url, timeout_seconds=2.0)) as src:
            result = await src.fetch_range("up", start, end, STEP)
        assert result.status is RangeStatus.ERROR
        assert result.message.startswith(f"range query failed: TLS error talking to {https_url}: ")
        assert "\n" not in result.message

    async def test_invalid_json_is_error(self, recorder: Recorder) -> None:
        recorder.status, recorder.body = 200, b"<html>not json</html>"
        start, end, _ = one_hour()
        async with PrometheusSource(PrometheusSettings(url=recorder.url)) as src:
            result = await src.fetch_range("up", start, end, STEP)
        assert result.status is RangeStatus.ERROR
        assert (
            result.message == f"range query failed: invalid JSON in the answer from {recorder.url}"
        )

    async def test_server_error_is_error(self, recorder: Recorder) -> None:
        recorder.status, recorder.body = 503, b"upstream\nunavailable"
        start, end, _ = one_hour()
        async with PrometheusSource(PrometheusSettings(url=recorder.url)) as src:
            result = await src.fetch_range("up", start, end, STEP)
            with pytest.raises(PrometheusUnavailable, match="HTTP 503"):
                await src.fetch_instant("up", end)
        assert result.status is RangeStatus.ERROR
        assert result.message == "range query failed: HTTP 503: upstream unavailable"

    async def test_wrong_shape_is_error(self, recorder: Recorder) -> None:
        recorder.body = json.dumps(
            {"status": "success", "data": {"result": [{"metric": {}}]}}
        ).encode()
        start, end, _ = one_hour()
        async with PrometheusSource(PrometheusSettings(url=recorder.url)) as src:
            result = await src.fetch_range("up", start, end, STEP)
        assert result.status is RangeStatus.ERROR
        assert "unexpected answer" in result.message


# --------------------------------------------------------------------------- rendering (pure)


class TestRenderQuery:
    @pytest.mark.parametrize(
        ("value", "escaped"),
        [
            ("plain", "plain"),
            ('a"b', 'a\\"b'),
            ("a\\b", "a\\\\b"),
            ("a\nb\tc\rd", "a\\nb\\tc\\rd"),
            ("a\x00b\x1bc", "a\\u0000b\\u001bc"),
            ("it's", "it's"),
            (EVIL, '\\"} or vector(1) #'),
        ],
    )
    def test_double_quoted_escaping(self, value: str, escaped: str) -> None:
        assert escape_promql_string(value) == escaped
        assert render_query('m{l="${v}"}', {"v": value}) == f'm{{l="{escaped}"}}'

    def test_single_quoted_escaping(self) -> None:
        assert render_query("m{l='${v}'}", {"v": 'it\'s "x"'}) == "m{l='it\\'s \"x\"'}"

    def test_dollar_forms(self) -> None:
        assert render_query('m{a="$v",b="${v}",c="$$v"}', {"v": "x"}) == 'm{a="x",b="x",c="$v"}'

    def test_unknown_placeholder_is_named(self) -> None:
        with pytest.raises(ValueError, match=r"unknown placeholder \$\{namespace\}"):
            render_query('m{namespace="${namespace}"}', {"pod": "x"})

    def test_variable_outside_string_is_rejected(self) -> None:
        with pytest.raises(ValueError, match=r"\$\{window\} must be inside a quoted PromQL string"):
            render_query("rate(m[${window}])", {"window": "5m"})

    def test_variable_in_backticks_or_comment_is_rejected(self) -> None:
        with pytest.raises(ValueError, match="inside a quoted PromQL string"):
            render_query("m{l=`${v}`}", {"v": "x"})
        with pytest.raises(ValueError, match="inside a quoted PromQL string"):
            render_query('m # "${v}"', {"v": "x"})

    def test_variable_after_backslash_is_rejected(self) -> None:
        with pytest.raises(ValueError, match="backslash"):
            render_query('m{l="\\${v}"}', {"v": '"'})

    def test_quote_inside_template_string_keeps_tracking(self) -> None:
        assert render_query('m{a="x\\"y",b="${v}"}', {"v": "1"}) == 'm{a="x\\"y",b="1"}'

    def test_raw_fragment(self) -> None:
        matchers = render_matchers({"namespace": "llm", "pod": 'p"1'})
        assert matchers == 'namespace="llm",pod="p\\"1"'
        assert render_query("sum(m{${matchers}})", {}, raw={"matchers": matchers}) == (
            'sum(m{namespace="llm",pod="p\\"1"})'
        )

    def test_raw_inside_string_is_rejected(self) -> None:
        with pytest.raises(ValueError, match="raw placeholder"):
            render_query('m{l="${matchers}"}', {}, raw={"matchers": "x"})

    def test_name_in_both_is_rejected(self) -> None:
        with pytest.raises(ValueError, match="both"):
            render_query("m", {"a": "1"}, raw={"a": "2"})

    def test_invalid_placeholder(self) -> None:
        with pytest.raises(ValueError, match="invalid placeholder"):
            render_query('m{l="${1x}"}', {})

    @pytest.mark.parametrize("name", ["1abc", "a-b", "", "a b", 'a"', "ünï"])
    def test_invalid_label_names(self, name: str) -> None:
        with pytest.raises(ValueError, match="invalid label name"):
            render_matchers({name: "x"})


class TestSettings:
    def test_defaults(self) -> None:
        settings = PrometheusSettings(url="http://prometheus:9090")
        assert settings.timeout_seconds == 10.0 and settings.verify_tls
        assert hash(settings) == hash(PrometheusSettings(url="http://prometheus:9090"))

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"url": "prometheus:9090"}, "http"),
            ({"url": "http://p", "timeout_seconds": 0}, "timeout_seconds"),
            (
                {
                    "url": "http://p",
                    "bearer_token_file": "t",
                    "basic_auth_username": "u",
                    "basic_auth_password_file": "p",
                },
                "either",
            ),
            ({"url": "http://p", "basic_auth_username": "u"}, "go together"),
            ({"url": "https://p", "ca_bundle": "/ca.pem", "verify_tls": False}, "choose one"),
        ],
    )
    def test_invalid(self, kwargs: dict[str, object], match: str) -> None:
        with pytest.raises(ValueError, match=match):
            PrometheusSettings(**kwargs)  # type: ignore[arg-type]

    def test_headers_are_immutable(self) -> None:
        headers = {"X-Scope-OrgID": "a"}
        settings = PrometheusSettings(url="http://p", headers=headers)
        headers["X-Scope-OrgID"] = "b"
        assert settings.headers["X-Scope-OrgID"] == "a"
        with pytest.raises(TypeError):
            settings.headers["X"] = "y"  # type: ignore[index]
