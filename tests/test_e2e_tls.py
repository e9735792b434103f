"""Protected endpoints: TLS and bcrypt basic auth, with a real TLS client."""

from __future__ import annotations

import os
import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest
import trustme

from tests.factories import EXE, make_scenario
from tests.runners import Sim, exporter, status_of, wait_for, write_config

pytestmark = pytest.mark.e2e
PASSWORD = "correct horse battery staple"


@pytest.fixture
def tls(tmp_path: Path) -> dict[str, Any]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca_file, cert_file, key_file = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    return {
        "ca": ca_file,
        "server": {
            "tls_server_config": {"cert_file": str(cert_file), "key_file": str(key_file)},
            "basic_auth_users": {"prometheus": hashed},
        },
    }


def test_tls_and_basic_auth(
    start_sim: Callable[..., Sim], tmp_path: Path, tls: dict[str, Any]
) -> None:
    sim = start_sim(make_scenario([{"name": "orders"}]))
    ca = ssl.create_default_context(cafile=str(tls["ca"]))
    with exporter(sim, tmp_path, server=tls["server"]) as url:
        assert url.startswith("https://")
        wait_for(lambda: status_of(f"{url}/readyz", verify=ca) == 200)
        anonymous = httpx.get(f"{url}/metrics", verify=ca)
        wrong = httpx.get(f"{url}/metrics", verify=ca, auth=("prometheus", "nope"))
        unknown = httpx.get(f"{url}/metrics", verify=ca, auth=("mallory", PASSWORD))
        right = httpx.get(f"{url}/metrics", verify=ca, auth=("prometheus", PASSWORD))
        again = httpx.get(f"{url}/", verify=ca, auth=("prometheus", PASSWORD))
        pages = {
            path: (
                httpx.get(f"{url}{path}", verify=ca).status_code,
                httpx.get(f"{url}{path}", verify=ca, auth=("prometheus", PASSWORD)).status_code,
            )
            for path in (
                "/usage",
                "/usage/month.csv",
                "/reports",
                "/reports/usage_daily",
                "/reports/usage_daily.csv",
                "/static/app.js",
            )
        }
        health = httpx.get(f"{url}/healthz", verify=ca)
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/metrics")  # the system trust store does not know this CA
        plain = status_of(url.replace("https://", "http://") + "/metrics")
        report = subprocess.run(
            [EXE, "report", "usage_daily", "--config", str(tmp_path / "config.yaml")],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={
                **os.environ,
                "SYNTHBREW_WEB_AUTH": f"prometheus:{PASSWORD}",
                "SYNTHBREW_WEB_CA_FILE": str(tls["ca"]),
            },
        )
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Basic")
    assert wrong.status_code == 401
    assert unknown.status_code == 401
    assert right.status_code == 200
    assert "synthbrew_source_info" in right.text
    assert again.status_code == 200
    assert pages == dict.fromkeys(pages, (401, 200)), "pages sit behind the same auth"
    assert health.status_code == 200
    assert plain in (0, 400), "no plain HTTP on the TLS port"
    assert report.returncode == 0, report.stderr


def test_tls_handshake_uses_the_configured_certificate(
    start_sim: Callable[..., Sim], tmp_path: Path, tls: dict[str, Any]
) -> None:
    sim = start_sim(make_scenario([{"name": "orders"}]))
    with exporter(sim, tmp_path, server=tls["server"]) as url:
        context = ssl.create_default_context(cafile=str(tls["ca"]))
        with httpx.Client(verify=context) as client:
            response = client.get(f"{url}/healthz")
            version = response.extensions["network_stream"].get_extra_info("ssl_object").version()
    assert response.status_code == 200
    assert version in {"TLSv1.2", "TLSv1.3"}


@pytest.mark.parametrize(
    ("server", "message"),
    [
        ({"basic_auth_users": {"prometheus": "plaintext"}}, "server.basic_auth_users.prometheus"),
        (
            {
                "tls_server_config": {
                    "cert_file": "/nonexistent.pem",
                    "key_file": "/nonexistent.key",
                }
            },
            "server.tls_server_config.cert_file",
        ),
    ],
)
def test_bad_web_settings_exit_2(
    start_sim: Callable[..., Sim], tmp_path: Path, server: dict[str, Any], message: str
) -> None:
    sim = start_sim(make_scenario([{"name": "orders"}]))
    config, _ = write_config(sim, tmp_path, server=server)
    result = subprocess.run(
        [EXE, "check-config", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert "plaintext" not in result.stderr, "a would-be password is not echoed"
