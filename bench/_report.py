"""What every benchmark ends with: its figures printed as JSON, and written to --out if given."""

import json
from pathlib import Path


def report(result: dict, out: str | None) -> None:
    text = json.dumps(result, indent=2)
    print(text)
    if out:
        Path(out).write_text(text + "\n")
