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
