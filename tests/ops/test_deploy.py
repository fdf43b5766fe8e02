"""deploy/ and the Dockerfile, checked by the tools operators trust (hadolint, cfn-lint, checkov, promtool),
plus the links between them: task environment -> real config keys, stopTimeout -> shutdown grace, ECS health
check -> the Dockerfile's, every alert -> a unit test and a runbook section, every query -> a real metric."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from replicator import config
from tests.helpers.deploy import (
    DEPLOY,
    DMS_PARAMS,
    ROOT,
    SECRETS,
    TEMPLATE,
    Resolver,
    container,
    healthcheck,
    task_environment,
    template,
    tool,
)
from tests.helpers.scrape import exported_metrics

PROMETHEUS = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "replicator.json"
RUNBOOK = DEPLOY / "README.md"


def _run(*cmd: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=300, check=False)


def _alerts() -> list[dict[str, object]]:
    doc = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"] if "alert" in rule]


# --- the tools ----------------------------------------------------------------------------------------------


def test_the_dockerfile_passes_hadolint() -> None:
    result = _run(tool("hadolint"), "--failure-threshold", "info", "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_cloudformation_template_passes_cfn_lint() -> None:
    result = _run(tool("cfn-lint"), str(TEMPLATE))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "target",
    [("-d", "deploy", "--framework", "cloudformation"), ("-f", "Dockerfile", "--framework", "dockerfile")],
)
def test_checkov_finds_nothing_that_is_not_justified_inline(target: tuple[str, ...]) -> None:
    checkov = tool("checkov", ROOT / ".venv-checkov" / "bin")
    result = _run(checkov, *target, "--output", "json", "--skip-download", "--quiet")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    summary = [r["summary"] for r in reports]
    assert sum(s["passed"] for s in summary) > 0, summary  # it really scanned something
    for r in reports:
        for skipped in r["results"].get("skipped_checks", []):
            comment = (skipped.get("check_result") or {}).get("suppress_comment", "")
            assert len(comment) > 20, f"{skipped['check_id']} is skipped without a justification"


def test_the_alert_rules_pass_promtool_check() -> None:
    result = _run(tool("promtool"), "check", "rules", "alerts.yml", cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_alert_unit_tests_pass_promtool_test() -> None:
    result = _run(tool("promtool"), "test", "rules", "alerts_test.yml", cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_the_prometheus_scrape_config_passes_promtool_check() -> None:
    result = _run(tool("promtool"), "check", "config", "prometheus.yml", cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr


# --- alerts, runbook ----------------------------------------------------------------------------------------


def test_every_alert_has_a_firing_and_a_quiet_unit_test_and_a_runbook_section() -> None:
    tests = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())["tests"]
    checks = [c for t in tests for c in t["alert_rule_test"]]
    runbook = RUNBOOK.read_text()
    names = [str(rule["alert"]) for rule in _alerts()]
    required = {
        "ReplicatorLagHigh", "ReplicatorTablePausedTooLong", "ReplicatorQuarantineGrowing",
        "ReplicatorNoProgress", "ReplicatorSlotLagGrowing", "ReplicatorDown",
    }  # fmt: skip
    assert required <= set(names)
    for rule in _alerts():
        name = str(rule["alert"])
        mine = [c for c in checks if c["alertname"] == name]
        assert any(c["exp_alerts"] for c in mine), f"{name}: no test where it fires"
        assert any(not c["exp_alerts"] for c in mine), f"{name}: no test where it stays quiet"
        annotations = rule["annotations"]
        assert isinstance(annotations, dict)
        assert str(annotations["runbook"]).startswith(f"deploy/README.md#{name.lower()} - ")
        assert f"\n### {name}\n" in runbook, f"deploy/README.md has no '### {name}' section"


# --- the task definition against the daemon ---------------------------------------------------------------


@pytest.mark.parametrize("source", ["dms", "postgres"])
def test_the_task_environment_is_a_valid_daemon_configuration(source: str) -> None:
    params = dict(DMS_PARAMS, SourceKind=source)
    if source == "postgres":
        params.update(SourcePostgresHost="orders.example.internal", SourcePasswordSecretArn="arn:aws:x:pg")
    env = task_environment(params, SECRETS)
    cfg = config.load(DEPLOY / "replicator.toml", environ=env)  # unknown keys or bad values raise here
    assert config.validate(cfg) == []
    assert cfg.source.kind == source
    assert cfg.staging.path == "s3://staging-bucket/replicator"
    assert cfg.warehouse.host == "analytics.example.internal"
    assert cfg.warehouse.password is not None and cfg.warehouse.password.reveal() == "wh-secret"
    assert (
        cfg.http.admin_token is not None
        and cfg.http.admin_token.reveal() == SECRETS["REPLICATOR__HTTP__ADMIN_TOKEN"]
    )
    assert cfg.http.port == 9100
    if source == "dms":
        assert cfg.source.path == "s3://dms-bucket/sales"
        assert cfg.source.dms.timestamp_column_name == "dms_commit_ts"
        assert "REPLICATOR__SOURCE__POSTGRES__PASSWORD" not in env
    else:
        assert cfg.source.postgres.host == "orders.example.internal"
        assert cfg.source.postgres.password is not None


def test_redshift_gets_the_copy_role_and_iam_authentication_needs_no_password() -> None:
    env = task_environment(DMS_PARAMS, SECRETS)
    cfg = config.load(DEPLOY / "replicator.toml", environ=env)
    assert (cfg.warehouse.kind, cfg.warehouse.auth) == ("redshift", "password")
    assert cfg.warehouse.iam_role == "<RedshiftCopyRole.Arn>"
    iam = dict(DMS_PARAMS, RedshiftClusterIdentifier="analytics", WarehousePasswordSecretArn="")
    env = task_environment(iam, SECRETS)
    cfg = config.load(DEPLOY / "replicator.toml", environ=env)
    assert config.validate(cfg) == []
    assert (cfg.warehouse.auth, cfg.warehouse.cluster_identifier) == ("iam", "analytics")
    assert "REPLICATOR__WAREHOUSE__PASSWORD" not in env


def test_every_warehouse_kind_the_template_offers_is_one_the_daemon_accepts() -> None:
    for kind in template()["Parameters"]["WarehouseKind"]["AllowedValues"]:
        env = task_environment(dict(DMS_PARAMS, WarehouseKind=kind), SECRETS)
        assert config.load(DEPLOY / "replicator.toml", environ=env).warehouse.kind == kind


def test_the_shutdown_grace_ends_before_every_stop_timeout_the_template_offers() -> None:
    doc = template()
    offered = doc["Parameters"]["StopTimeoutSeconds"]["AllowedValues"]
    for stop_timeout in offered:
        env = task_environment(dict(DMS_PARAMS, StopTimeoutSeconds=stop_timeout), SECRETS)
        grace = config.load(DEPLOY / "replicator.toml", environ=env).pipeline.shutdown_grace_seconds
        assert 0 < grace <= int(stop_timeout) - 5
        spec = Resolver(doc, dict(DMS_PARAMS, StopTimeoutSeconds=stop_timeout)).eval(container(doc))
        assert spec["StopTimeout"] == stop_timeout
    default = doc["Parameters"]["StopTimeoutSeconds"]["Default"]
    assert default == "30"
    grace_default = config.PipelineConfig().shutdown_grace_seconds
    assert float(doc["Mappings"]["GracePeriods"][default]["Grace"]) == grace_default == 25.0
    image_config = config.load(DEPLOY / "replicator.toml", environ={})
    assert image_config.pipeline.shutdown_grace_seconds == grace_default


def test_the_service_scales_by_its_desired_count_and_rolls_without_a_gap() -> None:
    """Scale-out (issue 18): the desired count is the knob; deployments overlap old and new tasks, which the
    fenced claims make safe; shards reach the PostgreSQL source's config."""
    doc = template()
    props = doc["Resources"]["Service"]["Properties"]
    assert props["DeploymentConfiguration"]["MinimumHealthyPercent"] == 100
    assert props["DeploymentConfiguration"]["MaximumPercent"] == 200
    assert props["DesiredCount"] == {"Ref": "DesiredCount"}
    count = doc["Parameters"]["DesiredCount"]
    assert count["Default"] == 1 and count["MinValue"] == 0 and count["MaxValue"] >= 3
    env = {e["Name"] for e in _environment(container(doc)) if isinstance(e, dict) and "Name" in e}
    assert "REPLICATOR__SOURCE__POSTGRES__SHARDS" in env
    assert config.PostgresSourceConfig().shards == doc["Parameters"]["SourcePostgresShards"]["Default"]
    # The default lease mode shares the work on the warehouses the stack offers.
    assert set(doc["Parameters"]["WarehouseKind"]["AllowedValues"]) <= {"postgres", "redshift"}
    assert config.LeaseConfig().mode == "auto"


def _environment(spec: dict[str, Any]) -> list[Any]:
    """The container's environment entries, with the !If branches that add one flattened."""
    out: list[Any] = []
    for e in spec["Environment"]:
        if isinstance(e, dict) and "Fn::If" in e:
            out.extend(x for x in e["Fn::If"][1:] if isinstance(x, dict))
        else:
            out.append(e)
    return out


def test_the_ecs_health_check_is_the_dockerfiles() -> None:
    options, command = healthcheck()
    check = container(template())["HealthCheck"]
    assert check["Command"] == ["CMD", *command]
    assert f"{check['Interval']}s" == options["interval"]
    assert f"{check['Timeout']}s" == options["timeout"]
    assert f"{check['StartPeriod']}s" == options["start-period"]
    assert str(check["Retries"]) == options["retries"]
    assert "127.0.0.1:9100/healthz" in command[-1]


def test_nothing_account_specific_is_written_in_the_template() -> None:
    text = TEMPLATE.read_text()
    assert not re.search(r"\b\d{12}\b", text), "an AWS account id"
    assert not re.search(r"\b(us|eu|ap|sa|ca|me|af)-[a-z]+-\d\b", text), "a region"
    assert not re.search(r"arn:aws:", text), "a hard-coded partition: use ${AWS::Partition}"


# --- the lock -----------------------------------------------------------------------------------------------


def test_the_lock_pins_every_runtime_dependency_with_hashes() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    lock = (ROOT / "requirements.lock").read_text()
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+) \\$", lock, flags=re.MULTILINE))
    pinned = {canonicalize_name(name): version for name, version in pins.items()}
    for dependency in pyproject["project"]["dependencies"]:
        req = Requirement(dependency)
        name = canonicalize_name(req.name)
        assert name in pinned, f"{req.name} is not in requirements.lock: regenerate it (deploy/README.md)"
        assert req.specifier.contains(pinned[name]), f"requirements.lock pins {req.name}=={pinned[name]}"
    blocks = re.split(r"\n(?=[A-Za-z0-9])", lock)
    for block in blocks:
        if "==" in block.split("\n", 1)[0]:
            assert "--hash=sha256:" in block, block.split("\n", 1)[0]


# --- queries against what the daemon exports ---------------------------------------------------------------

_PROMQL_WORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values",
    "rate", "irate", "increase", "delta", "idelta", "deriv", "absent", "absent_over_time", "time",
    "histogram_quantile", "max_over_time", "min_over_time", "avg_over_time", "label_values", "inf", "nan",
}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression (or Grafana query) selects: identifiers that are not functions,
    keywords, label names or label values."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r"\1", text)
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    text = re.sub(r"label_values\(([^,]*),\s*\w+\s*\)", r"(\1)", text)  # Grafana: (metric, label name)
    text = re.sub(r"\$\{?\w+\}?", "", text)  # Grafana variables
    names = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", text))
    return {n for n in names if n.lower() not in _PROMQL_WORDS and not re.fullmatch(r"\d+[smhdwy]", n)}


def _dashboard_queries() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]
    queries += [v["definition"] for v in doc["templating"]["list"] if v.get("type") == "query"]
    return queries


def test_the_query_parser_finds_metric_names_and_nothing_else() -> None:
    expr = (
        "histogram_quantile(0.95, sum by (le, table) (rate(replicator_merge_duration_seconds_bucket"
        '{job="replicator", table=~"$table"}[$__rate_interval]))) > 5 unless on (table) up == 0'
    )
    assert metric_names(expr) == {"replicator_merge_duration_seconds_bucket", "up"}
    assert metric_names('label_values(replicator_backlog_batches{job="x"}, table)') == {
        "replicator_backlog_batches"
    }


def test_every_dashboard_and_alert_query_refers_only_to_metrics_the_daemon_exports(tmp_path: Path) -> None:
    exported = exported_metrics(tmp_path)
    queries = _dashboard_queries() + [str(rule["expr"]) for rule in _alerts()]
    used: set[str] = set()
    for query in queries:
        names = metric_names(query)
        assert names, f"no metric found in {query!r}"
        unknown = names - set(exported) - {"up"}  # `up` is Prometheus' own, per scrape target
        assert not unknown, f"{query!r} uses {sorted(unknown)}, which the daemon does not export"
        used |= names
        for name, matchers in re.findall(r"([A-Za-z_:][\w:]*)\s*\{([^}]*)\}", query):
            labels = exported.get(name)
            if name != "up" and labels is not None:  # the scrape had samples: their labels must match
                for label in re.findall(r"\b(\w+)\s*(?:=~|!=|!~|=)\s*\"", matchers):
                    assert label in labels | {"job", "instance"}, f"{query!r}: {name} has no label {label}"
    # the dashboard covers what the issue asks for
    wanted = {
        "replicator_lag_seconds", "replicator_changes_merged_total", "replicator_backlog_batches",
        "replicator_paused_tables", "replicator_errors_total", "replicator_view_staleness_seconds",
    }  # fmt: skip
    assert wanted <= used
