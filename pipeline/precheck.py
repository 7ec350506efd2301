"""Check the command line before Hydra starts a run: bad input becomes one sentence + exit 2
instead of Hydra's multi-line report (and no run directory, no dataset is created).

For a --multirun sweep every value of every swept key is checked.
"""
from __future__ import annotations

import contextlib
import itertools

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf.errors import OmegaConfBaseException

from conf import CONF_DIR
from pipeline.errors import ConfigError

# Flags after which Hydra does something other than a run (help, printing config...).
PASS_THROUGH_FLAGS = ("-h", "--help", "--hydra-help", "--version", "-c", "--cfg", "-i", "--info",
                      "-cp", "--config-path", "-cn", "--config-name", "-cd", "--config-dir",
                      "--resolve", "-p", "--package", "--shell-completion", "-sc", "--run", "-r")
MAX_SWEEP_COMBINATIONS = 64


def precheck_overrides(argv: list[str]) -> None:
    for overrides in override_combinations(argv):
        check_one(overrides)


def plain_run_overrides(argv: list[str]) -> list[str] | None:
    """The overrides of a plain run (key=value arguments only: no flag, no sweep), or None
    when Hydra's own command line must handle `argv` (--multirun, --cfg, --help...).
    Raises ConfigError for a command line that cannot be parsed or a sweep without --multirun."""
    if any(a.startswith("-") for a in argv):
        return None
    (overrides,) = override_combinations(argv)
    return overrides


def override_combinations(argv: list[str]) -> list[list[str]]:
    """Every combination of override values the command line asks for: one list for a plain
    run, one per swept value for --multirun (at most MAX_SWEEP_COMBINATIONS), none when a
    flag hands the command line to Hydra as it is."""
    if any(a in PASS_THROUGH_FLAGS or a.split("=")[0] in PASS_THROUGH_FLAGS for a in argv):
        return []
    overrides = [a for a in argv if not a.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException as e:
        raise ConfigError(f"the command line could not be parsed ({str(e).splitlines()[0]}); "
                          "write overrides as key=value, lists as key=[a,b]") from None
    multirun = "--multirun" in argv or "-m" in argv
    choices = []
    for o in parsed:
        if o.is_sweep_override() and not multirun:
            raise ConfigError(f"{o.input_line} is a sweep: add --multirun to mint one dataset per value, "
                              "or write a list as key=[a,b]")
        key = o.get_key_element()
        values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
        choices.append([f"{key}={v}" for v in values] if not o.is_delete() else [o.input_line])
    return [list(c) for c in itertools.islice(itertools.product(*choices), MAX_SWEEP_COMBINATIONS)]


@contextlib.contextmanager
def composition_errors(overrides: list[str]):
    """Hydra's and OmegaConf's composition errors as ConfigError (one sentence)."""
    try:
        yield
    except MissingConfigException as e:
        raise ConfigError(_missing_option_sentence(str(e))) from None
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(_override_sentence(e, overrides)) from None


def compose_checked(overrides: list[str]):
    """The composed config of `overrides`; ConfigError (one sentence) for a bad one."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"), composition_errors(overrides):
        return compose("config", overrides=overrides)


def check_one(overrides: list[str]) -> None:
    check_composed(compose_checked(overrides))


def check_composed(cfg) -> None:
    """Every check a run makes before it writes anything (the config composed without
    Hydra's own `hydra` node)."""
    from pipeline.config import check_config, check_writable, resolve_output_dir, to_config
    from pipeline.runner import active_stages

    config = to_config(cfg)
    check_config(config)
    active_stages(config)
    check_writable(resolve_output_dir(config.output_dir))


def _missing_option_sentence(message: str) -> str:
    # "In 'config': Could not find 'dataset/nope'\n\nAvailable options in 'dataset':\n\ta\n\tb\n..."
    lines = message.splitlines()
    missing = lines[0].split("Could not find ")[-1].strip("'")
    options = [line.strip() for line in lines[3:] if line.startswith("\t")]
    options = options[: next((i for i, o in enumerate(options) if o.startswith("provider=")), len(options))]
    group, _, option = missing.partition("/")
    return f"{group}={option} is not a known option; allowed: {', '.join(options) or 'see conf/' + group}"


def _override_sentence(error: Exception, overrides: list[str]) -> str:
    cause = error.__cause__ or error
    key = getattr(cause, "full_key", None)
    line = overrides and next((o for o in overrides if key and o.lstrip("+~").split("=")[0] == key), None)
    if "not in struct" in str(cause) or "Could not override" in str(error):
        key = key or str(error).split("'")[1]
        parent = key.rpartition(".")[0]
        return (f"{key} is not a config key; see the allowed keys with `biomint --cfg job`"
                + (f" (under {parent})" if parent else ""))
    detail = str(cause).splitlines()[0]
    return f"{line or key or 'an override'} is not valid: {detail}"
