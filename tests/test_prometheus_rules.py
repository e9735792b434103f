"""The Prometheus rules and example config, checked by promtool; every alert unit-tested."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parent.parent
PROM = ROOT / "prometheus"
RULE_FILES = sorted((PROM / "rules").glob("*.yml"))
promtool = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not installed (Debian package prometheus)"
)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["promtool", *args], capture_output=True, text=True, timeout=120, check=False, cwd=ROOT
    )


def alerts() -> dict[str, dict[str, object]]:
    out = {}
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    out[rule["alert"]] = rule
    return out


@promtool
def test_rules_and_config_pass_promtool() -> None:
    checked = run("check", "rules", *map(str, RULE_FILES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config = run("check", "config", str(PROM / "prometheus.yml"))
    assert config.returncode == 0, config.stdout + config.stderr


@promtool
def test_alert_unit_tests_pass() -> None:
    tested = run("test", "rules", str(PROM / "tests" / "synthbrew-alerts.test.yml"))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_every_alert_is_tested_firing_and_quiet() -> None:
    cases = yaml.safe_load((PROM / "tests" / "synthbrew-alerts.test.yml").read_text())["tests"]
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in cases:
        for check in case["alert_rule_test"]:
            (fired if check["exp_alerts"] else quiet).add(check["alertname"])
    assert fired == set(alerts()), "each alert has a case where it fires"
    assert quiet == set(alerts()), "each alert has a case where it stays quiet"


def test_every_alert_has_a_runbook_and_severity() -> None:
    expected = {
        "SynthbrewExporterDown",
        "SynthbrewSourcePollFailing",
        "SynthbrewFailureRatioHigh",
        "SynthbrewRunStuck",
        "SynthbrewPossibleMissedEvents",
        "SynthbrewBillableRowsSpike",
        "SynthbrewProjectedOverIncludedRows",
        "SynthbrewExporterStoreNotWritable",
        "SynthbrewExporterMetricsStale",
        "SynthbrewExporterCollectorFailing",
    }
    found = alerts()
    assert set(found) == expected
    for name, rule in found.items():
        annotations = rule["annotations"]
        assert isinstance(annotations, dict)
        assert {"summary", "description", "runbook"} <= set(annotations), name
        labels = rule["labels"]
        assert isinstance(labels, dict)
        assert labels["severity"] in {"critical", "warning", "info"}, name
