"""Run full controller cycles with Prometheus credentials and print everything the process
emits, for tests/test_security.py to grep for the secrets.

    python -m tests.chaos.secret_cycle WORKDIR

Logging is configured (JSON, debug level, stdout) before any controller module is imported,
so every logger, module-level ones included, writes to this process's stdout. The last line is
``RESULT <json>`` with the /metrics text, the Events and the HPAs the API double holds.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import sys
from pathlib import Path

from predictive_scaler.logs import configure_logging

configure_logging("json", stream=sys.stdout, level=logging.DEBUG, force=True)

from predictive_scaler.kube import KubeClient  # noqa: E402
from predictive_scaler.leader import LeaderElector  # noqa: E402
from predictive_scaler.runtime import Controller  # noqa: E402
from tests.chaos.prom_proxy import PrometheusFaultProxy  # noqa: E402
from tests.chaos.soak import _Clock, _demand_fn, _inline_fit  # noqa: E402
from tests.kube_double import KubeDouble, make_api_client, make_hpa  # noqa: E402

TOKEN = "s3cr3t-BEARER-token-7f3a9c"
PASSWORD = "p4ss-w0rd-SECRET-91be"
USER = "scaler"


def config(url: str, auth: str) -> str:
    return f"""
prometheus:
  url: {url}
  timeout: 2s
{auth}
defaults:
  interval: 1m
  step: 1m
  history: 2h
  minHistory: 0s
  model: persistence
  seasons: []
targets:
  - hpa: {{namespace: t00, name: nim}}
    signals:
      - name: kv_cache
        query: 'sum(gpu_cache_usage_perc{{${{matchers}}}})'
        targetPerPod: 0.7
"""


async def main(workdir: Path) -> None:
    token_file = workdir / "token"
    token_file.write_text(TOKEN + "\n")
    password_file = workdir / "password"
    password_file.write_text(PASSWORD + "\n")
    basic = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    server = KubeDouble()
    await server.start()
    api = make_api_client(server.url, server.token)
    prom = await PrometheusFaultProxy(series=_demand_fn(1, 0)).start()
    clock = _Clock()
    kube = KubeClient(api, reporting_instance="secret-test")
    server.put_object(make_hpa("t00", "nim", 1, 10))
    elector = LeaderElector(kube, "ops", "predictive-scaler", "me", clock=clock)
    controller = Controller(kube, clock=clock, elector=elector, fit_runner=_inline_fit)
    try:
        for auth, header in (
            (f"  bearerTokenFile: {token_file}", f"Bearer {TOKEN}"),
            (
                f"  basicAuth: {{username: {USER}, passwordFile: {password_file}}}",
                f"Basic {basic}",
            ),
        ):
            assert await controller.load_config_text(config(prom.url, auth))
            for required in (header, "Bearer someone-else", header):
                # Right credentials, then wrong ones (401: the error path), then right again.
                prom.required_authorization = required
                for fault in (None, "5xx", "bad_json", None):
                    prom.set_fault(fault)
                    clock.advance(60)
                    await controller.renew_leadership()
                    await controller.run_due()
        # A user inlines the password instead of a file, or a token as a header: the config
        # is rejected (or taken) without echoing the value.
        inline = f"  basicAuth: {{username: {USER}, password: {PASSWORD}}}"
        assert not await controller.load_config_text(config(prom.url, inline))
        token_header = f"  headers: {{Authorization: 'Bearer {TOKEN}'}}"
        await controller.load_config_text(config(prom.url, token_header))
        clock.advance(60)
        await controller.run_due()
        headers_seen = sorted({h.get("Authorization", "") for h in prom.seen_headers})
        result = {
            "metrics": controller.metrics.generate_latest().decode(),
            "events": server.list_events(),
            "hpas": server.list_objects("autoscaling/v2", "HorizontalPodAutoscaler"),
            "configmaps": server.list_objects("v1", "ConfigMap"),
            "leases": server.list_objects("coordination.k8s.io/v1", "Lease"),
            "authorization_headers_seen": headers_seen,
            "min_replicas": server.list_objects("autoscaling/v2", "HorizontalPodAutoscaler")[0][
                "spec"
            ]["minReplicas"],
        }
    finally:
        await controller.aclose()
        await prom.close()
        await api.close()
        await server.close()
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
