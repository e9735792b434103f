from __future__ import annotations

import string
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args, get_origin

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from exporter.config import Config, ConfigError, Section, load_config, parse_config
from tests.factories import GOOD, S2, good_config_data


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def error_of(raw: dict[str, Any], environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, environ or {})
    return str(caught.value)


def test_good_config_with_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD), environ={"SYNTHBREW_API_KEY": "sb_api_secret"})
    assert config.api.api_key is not None
    assert config.api.api_key.get_secret_value() == "sb_api_secret"
    assert config.collector.page_limit == 200
    assert config.collector.interval_seconds == 60
    assert config.server.listen == "127.0.0.1:9794"
    assert config.api.max_concurrency == 4
    [project] = config.projects
    assert project.name == "shop"
    assert [s.name for s in project.sources] == ["orders", S2], "name defaults to the id"
    assert project.sources[0].interval_seconds == 30


def test_config_path_from_environment(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    env = {"SYNTHBREW_EXPORTER_CONFIG": str(path), "SYNTHBREW_API_KEY": "sb_api_x"}
    assert load_config(None, environ=env).projects[0].name == "shop"
    with pytest.raises(ConfigError, match="--config"):
        load_config(None, environ={})


def test_env_var_default_and_missing() -> None:
    raw = good_config_data(**{"api.api_key": "${KEY:-sb_api_fallback}"})
    config = parse_config(raw, {})
    assert config.api.api_key is not None
    assert config.api.api_key.get_secret_value() == "sb_api_fallback"
    assert error_of(good_config_data(**{"api.api_key": "${NOPE}"})) == (
        "api.api_key: environment variable NOPE is not set"
    )


def test_env_overrides_file_values() -> None:
    env = {
        "SYNTHBREW_EXPORTER_COLLECTOR__PAGE_LIMIT": "50",
        "SYNTHBREW_EXPORTER_API__BASE_URL": "http://other/api",
        "SYNTHBREW_EXPORTER_CONFIG": "ignored.yaml",
    }
    config = parse_config(good_config_data(), env)
    assert config.collector.page_limit == 50
    assert config.api.base_url == "http://other/api"


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"collector": {"page_limit": 201}}, "collector.page_limit: Input should be less than"),
        ({"collector": {"page_limit": 0}}, "collector.page_limit: Input should be greater than"),
        ({"projects.0.id": "not-a-uuid"}, "projects[0].id: Input should be a valid UUID"),
        ({"projects.0.sources.0.id": "x"}, "projects[0].sources[0].id: Input should be a valid"),
        ({"api.surprise": 1}, "api.surprise: unknown key"),
        ({"server": {"listen": "localhost"}}, "server.listen: expected HOST:PORT"),
        ({"api.base_url": "ftp://x"}, "api.base_url: String should match pattern"),
        ({"projects": []}, "projects: List should have at least 1 item"),
        ({"api.timeout_seconds": -1}, "api.timeout_seconds: Input should be greater than 0"),
        (
            {"projects.0.requests_per_minute": 30},
            "projects[0].requests_per_minute: needs the project's own api_key",
        ),
    ],
)
def test_bad_values_name_the_key(changes: dict[str, Any], expected: str) -> None:
    assert expected in error_of(good_config_data(**changes))


def test_duplicate_source_names() -> None:
    message = error_of(good_config_data(**{"projects.0.sources.1.name": "orders"}))
    assert message == "projects[0].sources[1].name: duplicate name 'orders' (also sources[0])"


def test_duplicate_project_names_and_ids() -> None:
    raw = good_config_data()
    raw["projects"].append({**raw["projects"][0]})
    assert "projects[1].name: duplicate name 'shop'" in error_of(raw)
    raw["projects"][1]["name"] = "other"
    assert "projects[1].id: duplicate id" in error_of(raw)


def test_missing_api_key_names_the_project() -> None:
    raw = good_config_data()
    del raw["api"]["api_key"]
    assert "projects[0].api_key: no API key for project 'shop'" in error_of(raw)
    raw["projects"][0]["api_key"] = "sb_api_project"
    config = parse_config(raw, {})
    assert config.api_key_for(config.projects[0]).get_secret_value() == "sb_api_project"


def test_secret_never_shown_in_errors_or_redacted_output() -> None:
    raw = good_config_data(**{"api.api_key": ["sb_api_TOPSECRET"]})
    assert "TOPSECRET" not in error_of(raw)
    config = parse_config(good_config_data(**{"api.api_key": "sb_api_TOPSECRET"}), {})
    assert "TOPSECRET" not in repr(config)
    assert "TOPSECRET" not in str(config.redacted())
    assert config.redacted()["api"]["api_key"] == "**********"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("api:\n  a: 1\n   b: 2\n", "invalid YAML at line 3, column 5: mapping values"),
        ("- just\n- a list\n", "<top level>: expected a mapping"),
        ("", "api: Field required"),
    ],
)
def test_bad_files(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text), environ={})
    assert expected in str(caught.value)
    assert str(tmp_path) in str(caught.value), "the message names the file"


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "absent.yaml", environ={})


yaml_scalars = st.none() | st.booleans() | st.integers() | st.text(string.printable, max_size=20)
yaml_trees = st.recursive(
    yaml_scalars,
    lambda kids: (
        st.lists(kids, max_size=4)
        | st.dictionaries(st.sampled_from(["api", "projects", "id", "name", "sources"]), kids)
    ),
    max_leaves=15,
)


@settings(max_examples=200)
@given(yaml_trees)
def test_arbitrary_yaml_gives_config_or_clear_error(tree: Any) -> None:
    message = ""
    try:
        parse_config(tree, {})
    except ConfigError as exc:
        message = str(exc)
        assert message.strip(), "an error always says something"
    assert "Traceback" not in message


def _sections(
    model: type[BaseModel], dotted: str = "", shown: str = ""
) -> Iterator[tuple[str, str]]:
    """Every section of the config, as a path for :func:`good_config_data` and as an error
    message names it."""
    yield dotted, shown
    for name, field in model.model_fields.items():
        for kind in (field.annotation, *get_args(field.annotation)):
            if isinstance(kind, type) and issubclass(kind, Section):
                many = get_origin(field.annotation) is list
                yield from _sections(
                    kind,
                    f"{dotted}.{name}".lstrip(".") + (".0" if many else ""),
                    f"{shown}.{name}".lstrip(".") + ("[0]" if many else ""),
                )


SECTIONS = list(_sections(Config))


def test_every_section_is_covered() -> None:
    shown = {s for _, s in SECTIONS}
    assert {"", "api", "api.retry", "collector", "server.tls_server_config"} <= shown
    assert {"projects[0]", "projects[0].sources[0]"} <= shown


@pytest.mark.parametrize(("dotted", "shown"), SECTIONS, ids=[s or "<top>" for _, s in SECTIONS])
def test_an_unknown_key_is_named_once_with_its_section(dotted: str, shown: str) -> None:
    raw = good_config_data()
    node: Any = raw
    for key in filter(None, dotted.split(".")):
        if isinstance(node, list):
            node = node[int(key)]
            continue
        if node.get(key) is None:
            node[key] = {}
        node = node[key]
    node["surprise"] = 1
    lines = error_of(raw).splitlines()
    assert f"{shown}.surprise: unknown key".lstrip(".") in lines
