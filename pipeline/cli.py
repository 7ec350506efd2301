"""The `biomint` console script.

    biomint [dataset=<preset>] [output_dir=<dir>] [seed=<int>] [key=value ...]   mint (Hydra app)
    biomint validate <dir>
    biomint repair <dir> [key=value ...]      re-mint exactly the damaged shards (full sha256 check)
    biomint plan [key=value ...]              what a run would mint and cost, before it starts
    biomint regenerate <dir> <sample_id> <out_file>
    biomint evaluate <dir> [setting=value ...]
    biomint export-ansi-nist <dir> [--out DIR] [--compression png|wsq]

Subcommands are dispatched before Hydra sees argv. Exit codes: 0 success, 2 bad input
(config, paths, checkpoints, a dataset another run holds: one sentence, no traceback), 1
anything else (a full disk, shards that keep failing: one sentence too).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

import pipeline.config  # noqa: F401  (registers the structured configs)
from pipeline.errors import BAD_INPUT_ERRORS, DISK_FULL_ERRNOS, DiskFull, disk_full_sentence

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def fail_bad_input(message: str) -> None:
    print(f"biomint: {message}", file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)


def fail(message: str) -> None:
    print(f"biomint: {message}", file=sys.stderr)
    sys.exit(EXIT_FAILED)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def hydra_main(cfg: DictConfig) -> None:
    from pipeline.runner import ShardsFailed, run

    try:
        run(cfg)
    except BAD_INPUT_ERRORS as e:
        fail_bad_input(str(e))
    except (ShardsFailed, DiskFull) as e:
        fail(str(e))


def cmd_validate(args: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="biomint validate", description="Check a minted dataset.")
    parser.add_argument("dataset", type=Path)
    ns = parser.parse_args(args)
    from pipeline.validate import validate_dataset

    report = validate_dataset(ns.dataset)
    print(report.summary())
    return EXIT_OK if report.ok else EXIT_FAILED


def cmd_repair(args: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="biomint repair",
        description="Check every file of a dataset against its sha256 and re-mint exactly the shards that are "
                    "damaged or missing, with the config dataset.json records (a plain rerun of the minting "
                    "command does the same with a cheaper check: files' existence and sizes).")
    parser.add_argument("dataset", type=Path)
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="how to run, e.g. cluster.workers=8 (what is minted comes from dataset.json)")
    ns = parser.parse_args(args)
    import logging

    from pipeline.repair import repair_dataset
    from pipeline.runner import ShardsFailed

    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")

    try:
        result = repair_dataset(ns.dataset, ns.overrides)
    except (ShardsFailed, DiskFull) as e:
        fail(str(e))
    print(result)
    return EXIT_OK


def cmd_plan(args: list[str]) -> int:
    if any(a in ("-h", "--help") for a in args):
        print("usage: biomint plan [key=value ...]\n\nWhat `biomint <overrides>` would mint and cost: samples, "
              "shards, files, bytes, pairs, worker-hours (from one subject minted in a temporary folder on this "
              "machine); nothing is written to the output_dir.")
        return EXIT_OK
    from pipeline.plan import plan_command

    print(plan_command(args))
    return EXIT_OK


def cmd_regenerate(args: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="biomint regenerate",
                                     description="Rebuild one sample byte-exact from its manifest row.")
    parser.add_argument("dataset", type=Path)
    parser.add_argument("sample_id")
    parser.add_argument("out_file", type=Path)
    parser.add_argument("--device", default="cpu")
    ns = parser.parse_args(args)
    from pipeline.validate import regenerate_sample

    same, row, now = regenerate_sample(ns.dataset, ns.sample_id, ns.out_file, ns.device)
    verdict = "matches" if same else "DIFFERS from"
    print(f"regenerate: {ns.sample_id} → {ns.out_file} ({verdict} the manifest sha256 {row['sha256'][:16]}…)")
    if not same and now != row["generator_version"]:
        print(f"regenerate: the generator changed since minting ({row['generator_version']} → {now})")
    return EXIT_OK if same else EXIT_FAILED


def cmd_evaluate(args: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="biomint evaluate",
                                     description="Quality and distinctness of a minted dataset.")
    parser.add_argument("dataset", type=Path)
    parser.add_argument("settings", nargs="*", metavar="key=value",
                        help="evaluation.EvaluationSettings fields, values parsed as YAML")
    parser.add_argument("--scheduler", metavar="ADDRESS", default=None,
                        help="run on an existing Dask scheduler (e.g. tcp://host:8786) instead of "
                             "local processes")
    ns = parser.parse_args(args)
    from omegaconf import OmegaConf

    settings = {}
    for item in ns.settings:
        key, sep, value = item.partition("=")
        if not sep:
            fail_bad_input(f"evaluate setting {item!r} is not key=value")
        settings[key] = OmegaConf.to_container(OmegaConf.create({"v": value}))["v"] if value else None
    from pipeline.evaluate import evaluate_root

    from evaluation.errors import EVALUATION_INPUT_ERRORS

    from pipeline.lock import dataset_lock

    try:
        with dataset_lock(ns.dataset, "evaluate") if (ns.dataset / "dataset.json").is_file() else \
                contextlib.nullcontext(), _dask_client(ns.scheduler) as client:
            summary = evaluate_root(ns.dataset, settings, client=client)
    except EVALUATION_INPUT_ERRORS as e:
        fail_bad_input(str(e))
    except OSError as e:
        if e.errno in DISK_FULL_ERRNOS:
            fail(disk_full_sentence(e.filename or ns.dataset / "eval", what="the evaluation"))
        raise
    from evaluation.report import format_summary

    print(format_summary(summary))
    return EXIT_OK


def cmd_export_ansi_nist(args: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="biomint export-ansi-nist",
                                     description="One ANSI/NIST-ITL 1-2011 ten-print transaction per "
                                                 "subject (<dir>/export/ansi_nist/<subject>.an2).")
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="output folder (default: <dataset>/export/ansi_nist)")
    parser.add_argument("--compression", default="png",
                        help="png: the dataset's PNG files as they are (default); wsq: WSQ (lossy)")
    ns = parser.parse_args(args)
    from pipeline.export import export_ansi_nist
    from pipeline.lock import dataset_lock

    with dataset_lock(ns.dataset, "export") if (ns.dataset / "dataset.json").is_file() else contextlib.nullcontext():
        result = export_ansi_nist(ns.dataset, ns.out, compression=ns.compression)
    print(f"export-ansi-nist: {result['transactions']} transactions ({result['records']} records, "
          f"{result['bytes'] / 1e6:.1f} MB, {result['compression']}) in {result['seconds']:.1f} s "
          f"({result['transactions_per_second']} transactions/s) → {result['directory']}")
    return EXIT_OK


@contextlib.contextmanager
def _dask_client(address: str | None):
    """A client of the scheduler at `address`, or None (the evaluation's local process pool)."""
    if address is None:
        yield None
        return
    from dask.distributed import Client

    try:
        client = Client(address, timeout="10s")
    except OSError as e:
        fail_bad_input(f"no Dask scheduler answered at {address} ({e}); start one or drop --scheduler")
    with client:
        yield client


SUBCOMMANDS = {"validate": cmd_validate, "repair": cmd_repair, "plan": cmd_plan, "regenerate": cmd_regenerate,
               "evaluate": cmd_evaluate, "export-ansi-nist": cmd_export_ansi_nist}


def _main(argv: list[str]) -> None:
    if argv and argv[0] in SUBCOMMANDS:
        try:
            sys.exit(SUBCOMMANDS[argv[0]](argv[1:]))
        except BAD_INPUT_ERRORS as e:
            fail_bad_input(str(e))
    from pipeline.precheck import plain_run_overrides, precheck_overrides

    try:
        overrides = plain_run_overrides(argv)
        if overrides is not None:
            from pipeline.hydra_run import run_once

            return run_once(overrides, hydra_main.__wrapped__)     # one composition, not three
        precheck_overrides(argv)
    except BAD_INPUT_ERRORS as e:
        fail_bad_input(str(e))
    hydra_main()


def console() -> None:
    """The `biomint` script: main(), then leave without the interpreter's teardown.

    Tearing down the modules of a process that imported torch costs ~0.7 s, a fifth of a
    small run, and nothing is left to do: every file of the dataset has been written and
    closed (atomically) by then. Output streams and log handlers are flushed first. Tests
    call main(), which returns or raises as usual."""
    code = EXIT_OK
    try:
        main()
    except SystemExit as e:
        if not isinstance(e.code, (int, type(None))):
            raise                                  # a message for Python to print
        code = e.code or EXIT_OK
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def main() -> None:
    try:
        _main(sys.argv[1:])
    except BrokenPipeError:
        # the reader went away (`biomint validate ... | head`): stop quietly, and keep Python
        # from failing again when it flushes stdout at exit
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(EXIT_FAILED)
    except DiskFull as e:
        fail(str(e))
    except OSError as e:
        if e.errno in DISK_FULL_ERRNOS:   # a write outside the minting run: evaluation, report, export
            fail(disk_full_sentence(e.filename or Path.cwd()))
        raise


if __name__ == "__main__":
    from pipeline.launch import console as launch

    launch()
