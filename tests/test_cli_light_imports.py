"""Commands that mint nothing start fast: the CLI, the stage configs and the error types load
without torch (importing it costs seconds)."""
from __future__ import annotations

import subprocess
import sys


def test_the_cli_and_the_generator_settings_import_without_torch():
    code = ("import sys, pipeline.cli, pipeline.config, pipeline.errors, pipeline.validate, "
            "generators.fingerprint, generators.latent, generators.face.errors; "
            "from generators.fingerprint import FingerprintSettings; FingerprintSettings(); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stdout + out.stderr


def test_the_lazy_packages_still_export_every_name():
    import generators.face as face
    import generators.fingerprint as fingerprint
    import generators.latent as latent

    for package in (face, fingerprint, latent):
        for name in package.__all__:
            assert getattr(package, name) is not None, (package.__name__, name)


def test_the_script_leaves_with_its_exit_code_and_every_line_written():
    """The script skips the interpreter's teardown (os._exit): buffered output must still
    reach a pipe, and bad input must still exit 2 with its sentence."""
    helped = subprocess.run([sys.executable, "-m", "pipeline.cli", "--help"], capture_output=True, text=True)
    assert helped.returncode == 0 and helped.stdout.rstrip().endswith("See README.md."), helped.stdout[-200:]
    refused = subprocess.run([sys.executable, "-m", "pipeline.cli", "validate", "/nonexistent/biomint"],
                             capture_output=True, text=True)
    assert refused.returncode == 2 and "is not a biomint dataset" in refused.stderr, refused.stderr


def test_a_small_run_on_automatic_workers_mints_in_this_process():
    """Starting worker processes costs seconds (each imports torch): a run of a few dozen
    samples is minted in the client unless workers, threads or a dashboard are asked for."""
    from pipeline.cluster import SMALL_RUN_SAMPLES, available_cores, runs_inline
    from pipeline.config import LocalClusterConfig, SlurmClusterConfig

    auto = LocalClusterConfig()
    assert runs_inline(auto, False, samples=12) and runs_inline(auto, False, samples=SMALL_RUN_SAMPLES)
    assert runs_inline(auto, False, samples=SMALL_RUN_SAMPLES + 1) == (available_cores() == 1)
    assert runs_inline(LocalClusterConfig(workers=1), False, samples=10 ** 6)
    assert not runs_inline(LocalClusterConfig(workers=2), False, samples=12)
    assert not runs_inline(LocalClusterConfig(threads_per_worker=2), False, samples=12)
    assert not runs_inline(LocalClusterConfig(dashboard=True), False, samples=12)
    assert not runs_inline(SlurmClusterConfig(), False, samples=12)
