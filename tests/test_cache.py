import json
import multiprocessing as mp

from alpagasus.judging.cache import JudgementCache, judgement_key

MSG = [{"role": "user", "content": "rate this"}]
PARAMS = {"temperature": 0.0, "top_p": 1.0, "max_tokens": 256}


def test_key_depends_on_everything_that_defines_a_judgement():
    base = judgement_key("m", "v1", PARAMS, MSG)
    assert base == judgement_key("m", "v1", dict(reversed(PARAMS.items())), MSG)
    assert base != judgement_key("m2", "v1", PARAMS, MSG)
    assert base != judgement_key("m", "v2", PARAMS, MSG)
    assert base != judgement_key("m", "v1", {**PARAMS, "temperature": 0.7}, MSG)
    assert base != judgement_key("m", "v1", PARAMS, [{"role": "user", "content": "rate this!"}])


def test_put_survives_reopen_and_torn_last_line(tmp_path):
    path = tmp_path / "j.jsonl"
    with JudgementCache(path) as c:
        c.put("k1", "4.5\nok", 10, 3, "m", "v", 0.001)
        c.put("k2", "3\nmeh", 11, 4, "m", "v", 0.002)
    with open(path, "a") as fh:  # what a kill -9 in the middle of a write leaves
        fh.write('{"key": "k3", "text": "5\\n')
    c = JudgementCache(path)
    assert len(c) == 2 and c.get("k1")["text"] == "4.5\nok" and "k3" not in c
    c.put("k3", "5", 1, 1, "m", "v", 0.0)
    c.close()
    assert "k3" in JudgementCache(path)


def _writer(path, start, n):
    c = JudgementCache(path)
    for i in range(start, start + n):
        c.put(f"k{i}", "x" * 5000, 1, 1, "m", "v", 0.0)  # long lines: interleaving would tear them
    c.close()


def test_concurrent_processes_never_tear_lines(tmp_path):
    path = tmp_path / "j.jsonl"
    procs = [mp.Process(target=_writer, args=(path, i * 200, 200)) for i in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    lines = path.read_text().splitlines()
    assert len(lines) == 600
    assert {json.loads(line)["key"] for line in lines} == {f"k{i}" for i in range(600)}
