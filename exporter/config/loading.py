"""Reading a config: YAML, ``${VAR}`` expansion, environment overrides, validation.

Every way a config can be wrong ends in one :class:`ConfigError` whose message names the key, so
the command line can print it and exit 2 without a traceback.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from exporter.config.sections import Config, ConfigError
from exporter.logs import register_secret

# libyaml's loader where PyYAML was built with it: a 1,000-source config loads in 14 ms
# instead of 100 ms, on every start of every command.
_YAML_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

ENV_CONFIG = "SYNTHBREW_EXPORTER_CONFIG"
ENV_PREFIX = "SYNTHBREW_EXPORTER_"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(node: Any, environ: Mapping[str, str], path: str = "") -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in every string value of the parsed YAML.

    Done on parsed values, not on the file text, so an expanded value can never inject YAML.
    """
    if isinstance(node, dict):
        return {k: expand_env(v, environ, _join(path, str(k))) for k, v in node.items()}
    if isinstance(node, list):
        return [expand_env(v, environ, f"{path}[{i}]") for i, v in enumerate(node)]
    if not isinstance(node, str):
        return node

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in environ:
            return environ[name]
        if default is not None:
            return default
        raise ConfigError(f"{path}: environment variable {name} is not set")

    return _VAR.sub(substitute, node)


def apply_env_overrides(data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """``SYNTHBREW_EXPORTER_API__BASE_URL=...`` overrides ``api.base_url``; values are YAML."""
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or name == ENV_CONFIG:
            continue
        keys = name.removeprefix(ENV_PREFIX).lower().split("__")
        target = data
        for key in keys[:-1]:
            child = target.setdefault(key, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{name}: {'.'.join(keys)} does not name a config section")
            target = child
        try:
            target[keys[-1]] = yaml.safe_load(raw) if raw else raw
        except yaml.YAMLError:
            target[keys[-1]] = raw
    return data


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _location(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out = f"{out}[{part}]" if isinstance(part, int) else _join(out, part)
    return out or "<top level>"


def format_validation_error(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors(include_url=False):
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "config_key":
            lines.append(f"{_location(err['loc'])}.{msg}" if err["loc"] else msg)
            continue
        got = ""
        if err["type"] not in {"missing", "extra_forbidden"} and "input" in err:
            secret = {"api_key", "basic_auth_users"} & {str(part) for part in err["loc"]}
            shown = "***" if secret else repr(err["input"])
            got = f" (got {shown[:80]})"
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"{_location(err['loc'])}: {msg}{got}")
    return "\n".join(lines)


def parse_config(data: Any, environ: Mapping[str, str] | None = None) -> Config:
    environ = os.environ if environ is None else environ
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"<top level>: expected a mapping of sections, got {type(data).__name__}")
    data = apply_env_overrides(expand_env(data, environ), environ)
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None
    for key in [config.api.api_key, *(p.api_key for p in config.projects)]:
        if key is not None:
            register_secret(key.get_secret_value())
    return config


def resolve_path(path: Path | str | None, environ: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    if path is None:
        path = environ.get(ENV_CONFIG)
    if not path:
        raise ConfigError(f"no config file: pass --config FILE or set {ENV_CONFIG}")
    return Path(path)


def load_config(path: Path | str | None = None, environ: Mapping[str, str] | None = None) -> Config:
    file = resolve_path(path, environ)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read config file: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{file}: config file is not UTF-8 text") from None
    try:
        data = yaml.load(text, Loader=_YAML_LOADER)  # noqa: S506 (a SafeLoader, C or Python)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{file}: invalid YAML{where}: {problem}") from None
    try:
        return parse_config(data, environ)
    except ConfigError as exc:
        raise ConfigError(f"{file}: {exc}") from None
