"""The operations kit (docs/operations/): Prometheus rules and a Grafana dashboard that name only the metrics and
labels a process really exports (every one of the library's metrics given a value, read through OpenTelemetry's
Prometheus exporter), and that promtool accepts and whose alerts its rule tests prove."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis
import yaml
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from interceptors import (
    AdaptiveLimiter,
    Backoff,
    CircuitBreaker,
    Fallback,
    HedgePolicy,
    RetryBudget,
    RetryPolicy,
    resilient_channel,
)
from interceptors.fleet import FleetStore, GlobalRateLimiter
from interceptors.otel import Metrics, ServerMetrics
from interceptors.server import LoadShedding

from ..support.clients import wait_until
from ..support.server import Reply, Request, ScriptedServer

KIT = Path(__file__).resolve().parents[2] / "docs" / "operations"
RULES, RULE_TESTS, DASHBOARD = (
    KIT / "prometheus-rules.yml",
    KIT / "prometheus-rules.test.yml",
    KIT / "grafana-dashboard.json",
)

EXPORTED_FAMILIES = {
    "grpc_client_attempt_started_total",
    "grpc_client_attempt_duration_seconds",
    "grpc_client_call_duration_seconds",
    "grpc_server_call_started_total",
    "grpc_server_call_duration_seconds",
    "resilience_client_retries_total",
    "resilience_client_hedges_total",
    "resilience_client_rejections_total",
    "resilience_client_fallbacks_total",
    "resilience_breaker_transitions_total",
    "resilience_server_sheds_total",
    "resilience_breaker_state",
    "resilience_budget_tokens",
    "resilience_limiter_limit",
    "resilience_fleet_local",
}
SCRAPED_LABELS = {"job", "instance", "le"}  # what Prometheus adds to every series, and histogram buckets' bound
PROMQL_WORDS = {"bool", "and", "or", "unless", "Inf", "NaN", "inf", "nan"}
GROUPING = r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)"


@pytest.fixture(scope="module")
def exported() -> dict[str, set[str]]:
    """The label names of each sample name of a process whose every metric of the library has a value."""
    reader = PrometheusMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    metrics = Metrics(provider)
    server = ScriptedServer("sync", interceptors=[ServerMetrics(provider), LoadShedding(1, metrics=metrics)])
    fast = Backoff(0.01, 0.02)
    budget = RetryBudget.token_bucket(max_tokens=10, token_ratio=0.1)
    retrying = resilient_channel(
        server.target, RetryPolicy(max_attempts=3, delay=fast, budget=budget), AdaptiveLimiter(), metrics=metrics
    )
    hedging = resilient_channel(server.target, HedgePolicy(delay=0.01, max_attempts=2), metrics=metrics)
    breaking = resilient_channel(
        server.target,
        Fallback(lambda failure: Reply(id="fallback")),
        CircuitBreaker(failure_threshold=1),
        metrics=metrics,
    )
    store = FleetStore(redis.Redis(socket_timeout=0.5), prefix="ops")
    store.close()  # built and watched, never contacted
    limiter = GlobalRateLimiter(store, "quota", 10)  # the gauges watch their policies weakly: kept to the scrape
    metrics.watch([limiter])
    try:
        unary = "/scripted.v1.Scripted/Unary"

        def call(channel: grpc.Channel, request: Any) -> Any:
            return channel.unary_unary(unary, Request.SerializeToString, Reply.FromString)(request, timeout=5)

        call(retrying, Request(id="retried", fail_first=1))
        call(hedging, Request(id="hedged", sleep_ms=50))
        call(breaking, Request(id="broken", fail_first=9))  # fails, opens the breaker: the fallback answers
        call(breaking, Request(id="refused"))  # the open breaker refuses it: the fallback answers
        with grpc.insecure_channel(server.target) as bare:
            send = bare.unary_unary(unary, Request.SerializeToString, Reply.FromString)
            slow = send.future(Request(id="slow", sleep_ms=30_000), timeout=60)  # holds the one place until cancelled
            wait_until(lambda: server.attempts("slow") == 1)
            with pytest.raises(grpc.RpcError) as shed:
                send(Request(id="shed"), timeout=5)
            assert shed.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            slow.cancel()
        text = generate_latest(REGISTRY).decode()
    finally:
        for channel in (retrying, hedging, breaking):
            channel.close()
        server.stop()
        metrics.close()
        provider.shutdown()  # its reader leaves prometheus_client's registry
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
    return labels


def test_every_metric_of_the_library_reaches_prometheus_under_these_names(exported: dict[str, set[str]]) -> None:
    families = {re.sub(r"_(bucket|count|sum|created)$", "", name) for name in exported}
    assert families >= EXPORTED_FAMILIES, sorted(EXPORTED_FAMILIES - families)


def rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def dashboard_expressions() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel["targets"]]


def named_in(expression: str) -> tuple[set[str], set[str]]:
    """The metric names and the label names a PromQL ``expression`` uses."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expression)  # strings name nothing
    text = re.sub(r"\[[^\]]*\]|\boffset\s+\w+", "", text)  # range selectors and offsets
    labels: set[str] = set()
    for grouping in re.findall(GROUPING, text):
        labels |= {label.strip() for label in grouping.split(",") if label.strip()}
    text = re.sub(GROUPING, "", text)
    for matchers in re.findall(r"\{([^}]*)\}", text):
        labels |= set(re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", matchers))
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"(?<![\w:])\d[\w.]*(?:[eE][+-]?\d+)?", "", text)  # numbers, durations
    words = re.findall(r"[A-Za-z_:][\w:]*(?!\w|\s*\()", text)
    return {w for w in words if w not in PROMQL_WORDS and not w.startswith("__")}, labels


def labels_of(metric: str, exported: dict[str, set[str]]) -> set[str]:
    """The labels a series of ``metric`` has: the exported sample's, or a recorded rule's (what it aggregates by,
    else what its inputs have)."""
    if metric in exported:
        return exported[metric] | SCRAPED_LABELS
    rule = next(rule for rule in rules() if rule.get("record") == metric)
    grouping = {label.strip() for found in re.findall(GROUPING, rule["expr"]) for label in found.split(",")}
    inputs, _ = named_in(rule["expr"])
    return grouping - {""} or set().union(*(labels_of(name, exported) for name in inputs))


@pytest.mark.parametrize("source", ["rules", "dashboard"])
def test_the_kit_names_only_what_the_library_exports(source: str, exported: dict[str, set[str]]) -> None:
    """Every metric an expression selects is exported (or recorded by a rule), and every label it uses is one that
    a metric of the same expression has."""
    expressions = [rule["expr"] for rule in rules()] if source == "rules" else dashboard_expressions()
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    assert expressions
    for expression in expressions:
        metrics, used = named_in(expression.replace("$__rate_interval", "5m"))
        assert metrics, expression
        assert metrics <= exported.keys() | recorded, (expression, sorted(metrics - exported.keys() - recorded))
        known = set().union(*(labels_of(metric, exported) for metric in metrics))
        assert used <= known, (expression, sorted(used - known))


def test_the_name_reader_sees_what_an_expression_names() -> None:
    """The checks above can fail: a misspelt metric or label is found, and what is neither is not taken for one."""
    metrics, labels = named_in('sum by (grpc_methd) (rate(resilience_client_retry_total{job="a"}[5m])) > 0')
    assert (metrics, labels) == ({"resilience_client_retry_total"}, {"grpc_methd", "job"})
    metrics, labels = named_in(
        "a_total offset 5m * on (job) group_left (grpc_method) b_total{x='y z'} > 1e3 or c_total > Inf"
    )
    assert (metrics, labels) == ({"a_total", "b_total", "c_total"}, {"job", "grpc_method", "x"})


def test_a_label_on_the_wrong_metric_is_seen(exported: dict[str, set[str]]) -> None:
    metrics, used = named_in("sum by (grpc_method) (rate(resilience_server_sheds_total[5m]))")
    known = set().union(*(labels_of(metric, exported) for metric in metrics))
    assert used - known == {"grpc_method"}  # sheds are counted by policy and reason, not by method


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("REQUIRE_PROMTOOL"):
            pytest.fail("promtool is not installed (make ops installs Debian's prometheus package for it)")
        pytest.skip("promtool is not installed: `make ops` installs it and runs these tests")
    return found


def test_promtool_accepts_the_rules_and_proves_their_alerts() -> None:
    tool = promtool()
    for command in (["check", "rules", RULES.name], ["test", "rules", RULE_TESTS.name]):
        done = subprocess.run([tool, *command], cwd=KIT, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_accepts_every_query_of_the_dashboard(tmp_path: Path) -> None:
    tool = promtool()
    queries = [
        {"record": f"dashboard:query_{i}", "expr": e.replace("$__rate_interval", "5m").replace("$job", ".*")}
        for i, e in enumerate(dashboard_expressions())
    ]
    rules = tmp_path / "dashboard.yml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": queries}]}))
    done = subprocess.run([tool, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
