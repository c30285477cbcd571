"""The four AlpaGasus test sets: pinned download (or a local folder), checksum, normalisation.

Sources: gpt4life/alpagasus @ 95ad3e5, ``test_data/`` (../shared/data/PROVENANCE.md). Every set
is normalised to one JSON line per item: ``{"id", "instruction", "input", "question"}`` where
``instruction``/``input`` feed Alpaca's template at generation time and ``question`` is the text
the pairwise judge will see (for Self-Instruct: ``"{instruction} Input: {input}"`` when the
first instance has an input, else the instruction; PAPER.md section 3).
"""

from __future__ import annotations

import hashlib
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from alpagasus.core.config import REPO
from alpagasus.core.io import write_jsonl
from alpagasus.data import DataError

REPO_COMMIT = "95ad3e52510df8c0a2f0dd6cbe50b501acde83a1"
BASE_URL = f"https://raw.githubusercontent.com/gpt4life/alpagasus/{REPO_COMMIT}/test_data/"


class ChecksumError(DataError):
    """A test-set file is not the pinned one."""


@dataclass(frozen=True)
class TestSetSource:
    name: str
    filename: str
    sha256: str
    count: int
    normalise: Callable[[dict, int, str], dict]

    @property
    def url(self) -> str:
        return BASE_URL + self.filename


def _field(row: dict, key: str, n: int, source: str):
    if key not in row:
        raise DataError(f"{source}: line {n} has no field {key!r}")
    return row[key]


def _str_field(row: dict, key: str, n: int, source: str) -> str:
    value = _field(row, key, n, source)
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{source}: line {n} field {key!r} must be a non-empty string")
    return value


def _plain(id_key: str, text_key: str):
    def normalise(row: dict, n: int, source: str) -> dict:
        text = _str_field(row, text_key, n, source)
        return {"id": str(_field(row, id_key, n, source)), "instruction": text, "input": "", "question": text}

    return normalise


def _sinstruct(row: dict, n: int, source: str) -> dict:
    instruction = _str_field(row, "instruction", n, source)
    instances = _field(row, "instances", n, source)
    if not isinstance(instances, list) or not instances or not isinstance(instances[0], dict):
        raise DataError(f"{source}: line {n} field 'instances' must be a non-empty list of objects")
    inp = instances[0].get("input", "")
    if not isinstance(inp, str):
        raise DataError(f"{source}: line {n} field 'instances[0].input' must be a string")
    question = f"{instruction} Input: {inp}" if inp.strip() else instruction
    return {"id": str(_field(row, "id", n, source)), "instruction": instruction, "input": inp, "question": question}


TEST_SETS: dict[str, TestSetSource] = {
    s.name: s
    for s in (
        TestSetSource("vicuna", "vicuna_test_set.jsonl",
                      "590c39157bc561eadd7f03cad4be18c2b597f93029780af65f86718f39eafa87", 80,
                      _plain("question_id", "text")),
        TestSetSource("koala", "koala_test_set.jsonl",
                      "c8cda5c53810dc30aad34fabbb828fe3eba0957119e00916650c971905d19886", 180,
                      _plain("id", "prompt")),
        TestSetSource("wizardlm", "wizardlm_test_set.jsonl",
                      "1a39103c4ad7e0b68a0f7ed770f13a60cc60749418263dafb20cfe8f5e51901e", 218,
                      _plain("idx", "Instruction")),
        TestSetSource("sinstruct", "sinstruct_test_set.jsonl",
                      "81d60a117db495cecedecd9193504fd07c5b5a42f6699ef6b0f9da10fc22f42e", 252,
                      _sinstruct),
    )
}


def _source(name: str) -> TestSetSource:
    if name not in TEST_SETS:
        raise DataError(f"unknown test set {name!r}; known: {sorted(TEST_SETS)}")
    return TEST_SETS[name]


def download(url: str, timeout: float = 60.0, attempts: int = 3) -> bytes:
    last: Exception | None = None
    for k in range(attempts):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                return resp.read()
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            last = exc
            if k + 1 < attempts:
                time.sleep(2 ** k)
    reason = last.reason if isinstance(last, urllib.error.URLError) else last
    raise ConnectionError(f"could not download {url} ({attempts} attempts; the last: {reason})")


def _where_to_put(src: TestSetSource) -> str:
    """What to do without the download: the config key, the files, and a copy where there is one."""
    files = ", ".join(s.filename for s in TEST_SETS.values())
    shared = REPO.parent / "shared" / "data" / "test_sets"
    copy = f"; a copy of all four is in {shared}" if (shared / src.filename).is_file() else ""
    return (f"without internet, set generation.test_sets_dir to a folder holding {files} "
            f"(gpt4life/alpagasus@{REPO_COMMIT[:7]} test_data/, checked against their pinned sha256){copy}")


def fetch_raw(name: str, local_dir: str | Path | None = None, verify: bool = True) -> tuple[bytes, str]:
    """The pinned file's bytes (and where they came from), checked against its sha256."""
    src = _source(name)
    if local_dir:
        path = Path(local_dir) / src.filename
        if not path.is_file():
            raise DataError(f"test set {name!r}: {path} not found (generation.test_sets_dir is {local_dir}: "
                            f"the folder that holds {src.filename})")
        data, origin = path.read_bytes(), str(path)
    else:
        try:
            data, origin = download(src.url), src.url
        except ConnectionError as exc:
            raise DataError(f"test set {name!r}: {exc}; {_where_to_put(src)}") from None
    if verify:
        got = hashlib.sha256(data).hexdigest()
        if got != src.sha256:
            raise ChecksumError(
                f"test set {name!r}: {origin} has sha256 {got}, expected {src.sha256} "
                f"(gpt4life/alpagasus@{REPO_COMMIT[:7]} test_data/{src.filename}); refusing a different test set"
            )
    return data, origin


def parse(name: str, data: bytes, origin: str = "", verify_count: bool = True) -> list[dict]:
    """Normalised items of a raw test-set file."""
    src = _source(name)
    origin = origin or src.filename
    items, seen = [], set()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{origin}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{origin}: line {n} is not valid JSON: {exc.msg}") from None
        item = src.normalise(row, n, origin)
        if item["id"] in seen:
            raise DataError(f"{origin}: line {n} repeats id {item['id']!r}")
        seen.add(item["id"])
        items.append(item)
    if verify_count and len(items) != src.count:
        raise DataError(f"{origin}: {len(items)} items, expected {src.count} for {name}")
    return items


def load_test_set(name: str, local_dir: str | Path | None = None, verify: bool = True) -> list[dict]:
    data, origin = fetch_raw(name, local_dir, verify)
    return parse(name, data, origin, verify_count=verify)


def write_test_set(name: str, output: str | Path, local_dir: str | Path | None = None,
                   max_items: int | None = None) -> int:
    """Normalise the pinned test set ``name`` into ``output`` (atomically); returns the item count.
    ``max_items``: its first N items only (a rehearsal), after the whole file is checked."""
    items = load_test_set(name, local_dir)[:max_items]
    write_jsonl(output, items)
    return len(items)
