"""A plain `biomint key=value ...` run from one composition of the config.

`@hydra.main` composes the config twice (once to read `hydra.mode`, once for the run), and
the pre-check (pipeline/precheck.py) composed it a third time: ~0.2 s each, a fifth of a
smoke run's fixed cost. For a run without flags or sweeps this module composes once with
Hydra's own loader and search path, runs every pre-check on that config, and hands the same
config to Hydra's `run_job`, which creates the run directory, writes `.hydra/`, sets up
logging and calls the task exactly as `hydra.main` does (Hydra 1.3's `Hydra.run`, whose
steps are repeated here; tests/test_cli_single_compose.py compares the two runs' `.hydra/`
files). Anything else (--multirun, --cfg, --help, ...) still goes through `hydra.main`.
"""
from __future__ import annotations

import copy
from typing import Callable

from omegaconf import DictConfig, open_dict, read_write

from pipeline.precheck import check_composed, composition_errors

CONFIG_NAME = "config"
CONFIG_PATH = "../conf"        # as @hydra.main in pipeline/cli.py: relative to that module


def run_once(overrides: list[str], task_function: Callable[[DictConfig], None]) -> None:
    """Compose `overrides` once, check them (ConfigError before anything is written), and run
    `task_function` (the undecorated body of the `@hydra.main` function) as Hydra runs it."""
    from hydra._internal.callbacks import Callbacks
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import (create_automatic_config_search_path,
                                       detect_calling_file_or_module_from_task_function, detect_task_name,
                                       run_and_report)
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.utils import run_job
    from hydra.types import HydraContext, RunMode

    calling_file, calling_module = detect_calling_file_or_module_from_task_function(task_function)
    search_path = create_automatic_config_search_path(calling_file, calling_module, CONFIG_PATH)
    hydra = Hydra.create_main_hydra2(task_name=detect_task_name(calling_file, calling_module),
                                     config_search_path=search_path)
    try:
        # hydra.main adds hydra.mode=RUN when the config does not set a mode (ours does not)
        overrides = [*overrides, "hydra.mode=RUN"]
        with composition_errors(overrides):
            cfg = hydra.compose_config(CONFIG_NAME, overrides, run_mode=RunMode.RUN, with_log_configuration=True)
        check_composed(_without_hydra_node(cfg))
        callbacks = Callbacks(cfg)

        def run() -> None:
            callbacks.on_run_start(config=cfg, config_name=CONFIG_NAME)
            ret = run_job(hydra_context=HydraContext(config_loader=hydra.config_loader, callbacks=callbacks),
                          task_function=task_function, config=cfg, job_dir_key="hydra.run.dir",
                          job_subdir_key=None, configure_logging=True)
            callbacks.on_run_end(config=cfg, config_name=CONFIG_NAME, job_return=ret)
            _ = ret.return_value          # raises the task's exception, as Hydra.run does

        run_and_report(run)
    finally:
        GlobalHydra.instance().clear()


def _without_hydra_node(cfg: DictConfig) -> DictConfig:
    """The task's view of the config (run_job gives the task the same copy)."""
    task = copy.deepcopy(cfg)
    with read_write(task), open_dict(task):
        del task["hydra"]
    return task
