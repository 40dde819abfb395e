"""Configuration: one YAML file, checked key by key against ``config.defaults.yaml``."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

__all__ = ["ConfigError", "DEFAULTS_PATH", "load_config", "load_defaults", "check_config"]

#: The repository's documented defaults; installed packages fall back to the copy beside them.
DEFAULTS_PATH = Path(__file__).resolve().parent.parent / "config.defaults.yaml"


class ConfigError(ValueError):
    """A configuration file is missing, malformed, or has missing or unknown keys."""


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(
            f"config file {path} does not exist: copy config.defaults.yaml to it and edit it"
        )
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys, got {type(data).__name__}")
    return data


def load_defaults() -> dict:
    """The defaults of ``config.defaults.yaml``."""
    return _read_yaml(DEFAULTS_PATH)


def check_config(config: dict, defaults: dict, prefix: str = "") -> None:
    """Check that ``config`` has exactly the keys of ``defaults``, recursively.

    Raises
    ------
    ConfigError
        Naming the first missing or unknown key by its dotted path.
    """
    missing = [k for k in defaults if k not in config]
    unknown = [k for k in config if k not in defaults]
    if missing:
        raise ConfigError(
            f"config key '{prefix}{missing[0]}' is missing: add it (see config.defaults.yaml)"
        )
    if unknown:
        raise ConfigError(
            f"config key '{prefix}{unknown[0]}' is unknown: remove it or check its spelling "
            "against config.defaults.yaml"
        )
    for key, default in defaults.items():
        value = config[key]
        if isinstance(default, dict):
            if not isinstance(value, dict):
                raise ConfigError(
                    f"config key '{prefix}{key}' must be a mapping like in config.defaults.yaml"
                )
            check_config(value, default, prefix=f"{prefix}{key}.")


def load_config(config_file: str | Path | None = None) -> dict[str, Any]:
    """Load a configuration file and check it against the defaults.

    Parameters
    ----------
    config_file : str or Path, optional
        A YAML file with the keys of ``config.defaults.yaml``.  ``None`` returns the defaults.

    Returns
    -------
    dict

    Raises
    ------
    ConfigError
        If the file is missing or malformed, a key is missing or unknown (named), or the
        ``tails.refine`` or ``tails.vet`` section has a bad value (named).
    """
    defaults = load_defaults()
    if config_file is None:
        return copy.deepcopy(defaults)
    path = Path(config_file).expanduser()
    config = _read_yaml(path)
    check_config(config, defaults)
    from .refine import check_refine_config
    from .vet import check_vet_config

    for check, section in ((check_refine_config, "refine"), (check_vet_config, "vet")):
        try:  # the detector's own sections, checked here so that every program refuses them at once
            check(config["tails"][section])
        except ValueError as err:
            raise ConfigError(f"{path}: {err}") from None
    return config
