"""biomint's Hydra config tree: config.yaml (the defaults list) and one folder per group.

The schemas are dataclasses registered in Hydra's ConfigStore by `pipeline.config`
(stage configs by their stage modules' dataclasses); the YAML files here are presets only.
"""
from pathlib import Path

CONF_DIR = Path(__file__).resolve().parent
