"""The `biomint` console script.

    biomint [dataset=<preset>] [output_dir=<dir>] [seed=<int>] [key=value ...]   mint (Hydra app)
    biomint validate <dir>
    biomint regenerate <dir> <sample_id> <out_file>
    biomint evaluate <dir> [setting=value ...]
    biomint export-ansi-nist <dir> [--out DIR] [--compression png|wsq]

Subcommands are dispatched before Hydra sees argv. Exit codes: 0 success, 2 bad input
(config, paths, checkpoints: one sentence, no traceback), 1 anything else.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

import pipeline.config  # noqa: F401  (registers the structured configs)
from pipeline.errors import BAD_INPUT_ERRORS

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def fail_bad_input(message: str) -> None:
    print(f"biomint: {message}", file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def hydra_main(cfg: DictConfig) -> None:
    from pipeline.runner import ShardsFailed, run

    try:
        run(cfg)
    except BAD_INPUT_ERRORS as e:
        fail_bad_input(str(e))
    except ShardsFailed as e:
        print(f"biomint: {e}", file=sys.stderr)
        sys.exit(EXIT_FAILED)


def cmd_validate(args: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="biomint validate", description="Check a minted dataset.")
    parser.add_argument("dataset", type=Path)
    ns = parser.parse_args(args)
    from pipeline.validate import validate_dataset

    report = validate_dataset(ns.dataset)
    print(report.summary())
    return EXIT_OK if report.ok else EXIT_FAILED


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

    try:
        with _dask_client(ns.scheduler) as client:
            summary = evaluate_root(ns.dataset, settings, client=client)
    except EVALUATION_INPUT_ERRORS as e:
        fail_bad_input(str(e))
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


SUBCOMMANDS = {"validate": cmd_validate, "regenerate": cmd_regenerate, "evaluate": cmd_evaluate,
               "export-ansi-nist": cmd_export_ansi_nist}


def main() -> None:
    argv = sys.argv[1:]
    if argv and argv[0] in SUBCOMMANDS:
        try:
            sys.exit(SUBCOMMANDS[argv[0]](argv[1:]))
        except BAD_INPUT_ERRORS as e:
            fail_bad_input(str(e))
    from pipeline.precheck import precheck_overrides

    try:
        precheck_overrides(argv)
    except BAD_INPUT_ERRORS as e:
        fail_bad_input(str(e))
    hydra_main()


if __name__ == "__main__":
    main()
