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


@pytest.fixture
def api_key(monkeypatch):
    key = "sk-test-" + os.urandom(12).hex()
    monkeypatch.setenv("OPENAI_API_KEY", key)
    return key
