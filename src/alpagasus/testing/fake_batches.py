"""The Batch API on the fake OpenAI server: ``/v1/files`` and ``/v1/batches``.

Mounted on every FakeOpenAIServer (``server.batch_api``). A batch goes through the real status
progression, one step every ``BatchPlan.step_s`` seconds of wall time, computed when it is
looked at: validating -> in_progress (request_counts.completed growing) -> finalizing ->
completed; or failed (validation), expired (half its lines done), cancelling -> cancelled.
Each line is answered with the same deterministic reply as /v1/chat/completions
(rating_reply, pairwise_reply), so a batch judge and an online judge must give equal results.

Ground truth for tests: every executed line goes into the server's request log with
``path="/v1/batches"`` and ``paid=True`` for a 200 (so ``server.paid_counts()`` counts both
endpoints), ``uploads`` counts uploads per filename, ``created`` the batches, ``calls`` every
files/batches call (method, path, status, time).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import itertools
import json
import math
import time

from aiohttp import web

from alpagasus.testing.replies import classify, draw, error_body, format_name, reply_text, reply_usage, request_key


MAX_LINES = 50_000
MAX_BYTES = 200 * 1024 * 1024
ENDPOINTS = ("/v1/chat/completions",)
_CALL = web.RequestKey("fake_call", dict)  # the calls-log entry of the request being served


@dataclasses.dataclass
class BatchPlan:
    """How the fake Batch API behaves; may be reassigned while the server runs."""

    step_s: float = 0.2               # seconds in each of validating, in_progress, finalizing
    expire_first: int = 0             # the first N batches created expire with half their lines done
    fail_first: int = 0               # the first N batches created fail validation
    line_error_500: float = 0.0       # chance a line is answered 500 (drawn per custom_id and attempt)
    upload_latency_s: float = 0.0     # after the file is stored, before the answer
    create_latency_s: float = 0.0     # after the batch is created, before the answer
    content_latency_s: float = 0.0    # before the content of an output or error file is sent
    http_500_first: int = 0           # the first N files/batches calls answer 500 and do nothing
    upload_drop_first: int = 0        # the first N uploads are stored, then the connection dropped
    create_drop_first: int = 0        # the first N batch creations happen, then the connection dropped
    # False: GET /v1/files (GET /v1/batches) answers 404, as on a server without the list endpoint
    # (only the list: upload, retrieve and content are served as ever).
    list_files: bool = True
    list_batches: bool = True


class FakeBatches:
    def __init__(self, server):  # the FakeOpenAIServer it is mounted on (which imports this module)
        self.server = server
        self.plan = BatchPlan()
        self.files: dict[str, dict] = {}
        self.contents: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}
        self.uploads: collections.Counter = collections.Counter()   # filename -> uploads
        self.created = 0
        self.calls: list[dict] = []
        self._ids = itertools.count(1)
        self._line_attempts: collections.Counter = collections.Counter()
        self._call_n = 0
        self._uploads_n = 0

    @property
    def _lock(self):
        return self.server._lock

    def mount(self, app: web.Application) -> None:
        r = app.router
        r.add_post("/v1/files", self._create_file)
        r.add_get("/v1/files", self._list_files)
        r.add_get("/v1/files/{id}", self._get_file)
        r.add_get("/v1/files/{id}/content", self._file_content)
        r.add_post("/v1/batches", self._create_batch)
        r.add_get("/v1/batches", self._list_batches)
        r.add_get("/v1/batches/{id}", self._get_batch)
        r.add_post("/v1/batches/{id}/cancel", self._cancel_batch)

    # -- test views ---------------------------------------------------------------------------

    def batch_objects(self) -> list[dict]:
        with self._lock:
            return [self._advance(b) for b in self.batches.values()]

    def reset(self) -> None:
        with self._lock:
            self.files.clear()
            self.contents.clear()
            self.batches.clear()
            self.uploads.clear()
            self.created = 0
            self.calls.clear()
            self._line_attempts.clear()
            self._call_n = self._uploads_n = 0

    # -- common -------------------------------------------------------------------------------

    async def _enter(self, request: web.Request) -> web.Response | None:
        """Auth, latency and injected 500s for every files/batches call; None = go on."""
        call = {"method": request.method, "path": request.path, "t": time.monotonic(), "status": None}
        with self._lock:
            self.calls.append(call)
            n = self._call_n
            self._call_n += 1
        request[_CALL] = call
        auth = request.headers.get("Authorization")
        api_key = self.server.api_key
        if auth is None or (api_key is not None and auth != f"Bearer {api_key}"):
            call["status"] = 401
            return web.json_response(error_body("Incorrect API key provided.", "invalid_request_error",
                                                 "invalid_api_key"), status=401)
        if self.server.latency_s > 0:
            await asyncio.sleep(self.server.latency_s)
        if n < self.plan.http_500_first:
            call["status"] = 500
            return web.json_response(error_body("The server had an error (injected).", "server_error", None), status=500)
        return None

    @staticmethod
    def _done(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
        request[_CALL]["status"] = response.status
        return response

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}-fake{next(self._ids):06d}"

    # -- files ----------------------------------------------------------------------------------

    async def _create_file(self, request: web.Request) -> web.StreamResponse:
        if (err := await self._enter(request)) is not None:
            return err
        form = await request.post()
        field, purpose = form.get("file"), form.get("purpose")
        if field is None or not hasattr(field, "file") or purpose is None:
            return self._done(request, web.json_response(
                error_body("multipart form with 'file' and 'purpose' required", "invalid_request_error", None), status=400))
        data = field.file.read()
        with self._lock:
            fid = self._new_id("file")
            obj = {"id": fid, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                   "filename": field.filename, "purpose": purpose, "status": "processed"}
            self.files[fid] = obj
            self.contents[fid] = data
            self.uploads[field.filename] += 1
            drop = self._uploads_n < self.plan.upload_drop_first
            self._uploads_n += 1
        if self.plan.upload_latency_s > 0:
            await asyncio.sleep(self.plan.upload_latency_s)
        if drop:
            request[_CALL]["status"] = "drop"
            request.transport.abort()
            return web.Response(status=502)
        return self._done(request, web.json_response(obj))

    def _no_list(self, request: web.Request) -> web.StreamResponse:
        return self._done(request, web.json_response(
            error_body(f"Invalid URL ({request.method} {request.path})", "invalid_request_error", None), status=404))

    async def _list_files(self, request: web.Request) -> web.StreamResponse:
        if (err := await self._enter(request)) is not None:
            return err
        if not self.plan.list_files:
            return self._no_list(request)
        purpose = request.query.get("purpose")
        with self._lock:
            data = [f for f in self.files.values() if purpose is None or f["purpose"] == purpose]
        return self._done(request, web.json_response({"object": "list", "data": data, "has_more": False}))

    async def _get_file(self, request: web.Request) -> web.StreamResponse:
        if (err := await self._enter(request)) is not None:
            return err
        obj = self.files.get(request.match_info["id"])
        if obj is None:
            return self._done(request, self._not_found("file", request.match_info["id"]))
        return self._done(request, web.json_response(obj))

    async def _file_content(self, request: web.Request) -> web.StreamResponse:
        if (err := await self._enter(request)) is not None:
            return err
        fid = request.match_info["id"]
        with self._lock:
            data = self.contents.get(fid)
            is_result = self.files.get(fid, {}).get("purpose") == "batch_output"
        if data is None:
            return self._done(request, self._not_found("file", fid))
        if is_result and self.plan.content_latency_s > 0:
            await asyncio.sleep(self.plan.content_latency_s)
        return self._done(request, web.Response(body=data, content_type="application/octet-stream"))

    @staticmethod
    def _not_found(what: str, id_: str) -> web.Response:
        return web.json_response(error_body(f"No such {what}: {id_}", "invalid_request_error", None), status=404)

    # -- batches --------------------------------------------------------------------------------

    async def _create_batch(self, request: web.Request) -> web.StreamResponse:
        if (err := await self._enter(request)) is not None:
            return err
        try:
            body = await request.json()
        except Exception:  # noqa: BLE001 - any unreadable body is the client's 400
            body = None
        if not isinstance(body, dict) or body.get("endpoint") not in ENDPOINTS or body.get("completion_window") != "24h":
            return self._done(request, web.json_response(error_body(
                f"endpoint must be one of {ENDPOINTS} and completion_window '24h'", "invalid_request_error", None), status=400))
        fid = body.get("input_file_id")
        with self._lock:
            if fid not in self.contents or self.files[fid]["purpose"] != "batch":
                return self._done(request, self._not_found("file", str(fid)))
            lines, errors = _validate(self.contents[fid], body["endpoint"])
            n = self.created
            self.created += 1
            bid = self._new_id("batch")
            now = time.time()
            b = {"id": bid, "object": "batch", "endpoint": body["endpoint"], "errors": None,
                 "input_file_id": fid, "completion_window": "24h", "status": "validating",
                 "output_file_id": None, "error_file_id": None, "created_at": int(now),
                 "in_progress_at": None, "expires_at": int(now) + 86400, "finalizing_at": None,
                 "completed_at": None, "failed_at": None, "expired_at": None, "cancelling_at": None,
                 "cancelled_at": None, "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
                 "metadata": body.get("metadata") or None,
                 "_t0": time.monotonic(), "_lines": lines, "_cancel_t": None, "_cancel_done": None,
                 "_fail": errors or (["batch_failed: injected validation failure"] if n < self.plan.fail_first else None),
                 "_expire": self.plan.expire_first > n, "_step": self.plan.step_s, "_finished": False}
            self.batches[bid] = b
            drop = n < self.plan.create_drop_first
            obj = self._advance(b)
        if self.plan.create_latency_s > 0:
            await asyncio.sleep(self.plan.create_latency_s)
        if drop:
            request[_CALL]["status"] = "drop"
            request.transport.abort()
            return web.Response(status=502)
        return self._done(request, web.json_response(obj))

    async def _list_batches(self, request: web.Request) -> web.StreamResponse:
        if (err := await self._enter(request)) is not None:
            return err
        if not self.plan.list_batches:
            return self._no_list(request)
        with self._lock:
            data = [self._advance(b) for b in reversed(list(self.batches.values()))]  # newest first
        return self._done(request, web.json_response({"object": "list", "data": data, "has_more": False}))

    async def _get_batch(self, request: web.Request) -> web.StreamResponse:
        if (err := await self._enter(request)) is not None:
            return err
        with self._lock:
            b = self.batches.get(request.match_info["id"])
            obj = self._advance(b) if b is not None else None
        if obj is None:
            return self._done(request, self._not_found("batch", request.match_info["id"]))
        return self._done(request, web.json_response(obj))

    async def _cancel_batch(self, request: web.Request) -> web.StreamResponse:
        if (err := await self._enter(request)) is not None:
            return err
        with self._lock:
            b = self.batches.get(request.match_info["id"])
            if b is None:
                return self._done(request, self._not_found("batch", request.match_info["id"]))
            obj = self._advance(b)
            if obj["status"] in ("validating", "in_progress", "finalizing"):
                b["_cancel_done"] = self._executed(b)
                b["_cancel_t"] = time.monotonic()
                b["cancelling_at"] = int(time.time())
                obj = self._advance(b)
            elif obj["status"] != "cancelling":
                return self._done(request, web.json_response(error_body(
                    f"Cannot cancel a batch with status {obj['status']}.", "invalid_request_error", None), status=400))
        return self._done(request, web.json_response(obj))

    # -- the progression (called under the lock) ------------------------------------------------

    def _executed(self, b: dict) -> int:
        """Lines done by now, from the time spent in_progress."""
        step = b["_step"]
        e = time.monotonic() - b["_t0"]
        total = len(b["_lines"])
        if step <= 0 or e >= 2 * step:
            return total
        if e < step:
            return 0
        return math.floor(total * (e - step) / step)

    def _advance(self, b: dict) -> dict:
        if not b["_finished"]:
            step, now = b["_step"], time.monotonic()
            e = now - b["_t0"]
            total = len(b["_lines"])
            if b["_cancel_t"] is not None:
                if now - b["_cancel_t"] >= step:
                    self._finish(b, "cancelled", b["_cancel_done"])
                else:
                    b["status"] = "cancelling"
            elif e < step:
                b["status"] = "validating"
            elif b["_fail"]:
                self._finish(b, "failed", 0)
            elif e < 2 * step:
                b["status"] = "in_progress"
                b["in_progress_at"] = b["in_progress_at"] or int(time.time())
                b["request_counts"]["completed"] = self._executed(b)
            elif b["_expire"]:
                self._finish(b, "expired", total // 2)
            elif e < 3 * step:
                b["status"] = "finalizing"
                b["in_progress_at"] = b["in_progress_at"] or int(time.time())
                b["finalizing_at"] = b["finalizing_at"] or int(time.time())
                b["request_counts"]["completed"] = total
            else:
                self._finish(b, "completed", total)
        return {k: v for k, v in b.items() if not k.startswith("_")}

    def _finish(self, b: dict, status: str, executed: int) -> None:
        """Answer the first ``executed`` lines, write the output and error files, once."""
        b["_finished"] = True
        b["status"] = status
        b[f"{status}_at"] = int(time.time())
        if status == "failed":
            b["errors"] = {"object": "list", "data": [{"code": "invalid_request", "message": m, "param": None, "line": None}
                                                      for m in b["_fail"]]}
            return
        out, err = [], []
        for i, line in enumerate(b["_lines"]):
            cid = line["custom_id"]
            rid = f"batch_req_{b['id']}_{i}"
            if i >= executed:
                code = "batch_expired" if status == "expired" else "batch_cancelled"
                msg = ("This request could not be executed before the completion window expired."
                       if status == "expired" else "This request was not executed because the batch was cancelled.")
                err.append({"id": rid, "custom_id": cid, "response": None, "error": {"code": code, "message": msg}})
                continue
            result, paid = self._execute(line, rid)
            (out if paid else err).append(result)
        b["request_counts"] = {"total": len(b["_lines"]), "completed": len(out), "failed": len(err)}
        if out:
            b["output_file_id"] = self._result_file(b, out, "output")
        if err:
            b["error_file_id"] = self._result_file(b, err, "errors")

    def _result_file(self, b: dict, rows: list[dict], kind: str) -> str:
        fid = self._new_id("file")
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
        self.files[fid] = {"id": fid, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                           "filename": f"{b['id']}_{kind}.jsonl", "purpose": "batch_output", "status": "processed"}
        self.contents[fid] = data
        return fid

    def _execute(self, line: dict, rid: str) -> tuple[dict, bool]:
        srv = self.server
        body = line["body"]
        model, messages = body.get("model"), body.get("messages") or []
        cid = line["custom_id"]
        attempt = self._line_attempts[cid]
        self._line_attempts[cid] += 1
        entry = {"t": time.monotonic(), "t_done": time.monotonic(), "key": request_key(model, messages),
                 "kind": classify(messages), "status": "ok", "paid": True, "model": model, "index": None,
                 "attempt": attempt, "path": "/v1/batches", "custom_id": cid}
        if draw(srv.seed, f"batch:{cid}", attempt) < self.plan.line_error_500:
            entry.update(status="500", paid=False)
            self._log(entry)
            return ({"id": rid, "custom_id": cid, "error": None,
                     "response": {"status_code": 500, "request_id": rid,
                                  "body": error_body("The server had an error while processing your request.",
                                                      "server_error", None)}}, False)
        fmt = body.get("response_format")
        entry["response_format"] = format_name(fmt)
        try:
            text = reply_text(messages, srv.position_bias, srv.length_bias, response_format=fmt)
        except ValueError as exc:  # the line's own fault: an error line, not billed
            entry.update(status="400", paid=False)
            self._log(entry)
            return ({"id": rid, "custom_id": cid, "error": None,
                     "response": {"status_code": 400, "request_id": rid,
                                  "body": error_body(str(exc), "invalid_request_error", "invalid_response_format")}},
                    False)
        pt, ct = reply_usage(messages, text)
        completion = {"id": f"chatcmpl-fakebatch-{rid}", "object": "chat.completion", "created": int(time.time()),
                      "model": model, "system_fingerprint": "fp_fake",
                      "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                   "logprobs": None, "finish_reason": "stop"}],
                      "usage": {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct}}
        self._log(entry)
        return {"id": rid, "custom_id": cid, "error": None,
                "response": {"status_code": 200, "request_id": rid, "body": completion}}, True

    def _log(self, entry: dict) -> None:
        # Under the server's lock already (called from _advance).
        self.server._log.append(entry)
        if self.server._log_file is not None:
            self.server._log_file.write(json.dumps(entry) + "\n")
            self.server._log_file.flush()


def _validate(data: bytes, endpoint: str) -> tuple[list[dict], list[str]]:
    """The lines of an input file, and why the batch must fail validation (empty if it is valid)."""
    errors, lines, seen = [], [], set()
    if len(data) > MAX_BYTES:
        errors.append(f"the input file has {len(data)} bytes, over {MAX_BYTES}")
    for n, raw in enumerate(data.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except json.JSONDecodeError:
            errors.append(f"line {n}: not JSON")
            continue
        if not isinstance(line, dict) or not isinstance(line.get("custom_id"), str):
            errors.append(f"line {n}: no custom_id")
            continue
        if line["custom_id"] in seen:
            errors.append(f"line {n}: duplicate custom_id {line['custom_id']!r}")
        seen.add(line["custom_id"])
        if line.get("method") != "POST" or line.get("url") != endpoint or not isinstance(line.get("body"), dict):
            errors.append(f"line {n}: method must be POST, url {endpoint}, body an object")
        lines.append(line)
    if len(lines) > MAX_LINES:
        errors.append(f"{len(lines)} requests, over {MAX_LINES}")
    if not lines:
        errors.append("the input file is empty")
    return lines, errors


__all__ = ["BatchPlan", "FakeBatches"]
