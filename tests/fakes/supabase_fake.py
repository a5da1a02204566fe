"""A fake Supabase (Storage API and a PostgREST subset): real HTTP on a loopback port that
the real `supabase` client talks to, with faults injected per route.

Storage speaks like the real one: HTTP 400 for most errors with the real code in the body
(`{"statusCode": "409", "error": "Duplicate", "message": ...}`). PostgREST supports what the
status store uses: select with eq/neq/lt/lte/gt/gte/in/is/like/ilike filters (any other
operator is PGRST100, as PostgREST answers), order, exact counts, insert/upsert
(merge or ignore duplicates), update and delete, each answering a representation, and the
SQL functions the store calls through /rpc."""

from __future__ import annotations

import email.message
import email.parser
import email.policy
import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from tests.fakes.http import LoopbackServer, QuietHandler


@dataclass
class Fail:
    """Answer an error. For storage: HTTP status plus the body's statusCode and error."""

    http: int = 500
    status_code: str = "500"
    error: str = "InternalError"
    message: str = "internal error"


@dataclass
class Hang:
    """Accept and never answer (until the fake stops)."""


@dataclass
class Pass:
    """Behave normally."""


@dataclass
class Record:
    method: str
    route: str
    path: str
    at: float
    headers: dict[str, str]


Fault = Fail | Hang | Pass

TOO_LARGE = Fail(400, "413", "Payload too large", "The object exceeded the maximum allowed size")
BAD_KEY = Fail(400, "403", "Unauthorized", "invalid signature")
DUPLICATE = Fail(400, "409", "Duplicate", "The resource already exists")
UNAVAILABLE = Fail(503, "503", "ServiceUnavailable", "try again")

# Column defaults, as sql/postgres declares them (tests/status/test_supabase_fake_schema.py
# compares them, and SCHEMA, PRIMARY_KEYS and FUNCTIONS, with a migrated PostgreSQL).
DEFAULTS: dict[str, dict[str, Any]] = {
    "videos": {"status": "draft", "image_upload_progress": 0},
    "preview_spend_holds": {"owner": ""},
    "preview_runs": {"scene_count": 0, "error": "", "summary": "{}", "prompts": "[]", "owner": ""},
    "preview_scenes": {
        "url": "",
        "path": "",
        "content_type": "",
        "placeholder": False,
        "provider": "",
        "attempts": 0,
        "generate_ms": 0,
        "upload_ms": 0,
        "cost_usd": 0.0,
        "cost_known": True,
        "paid_at_ms": 0,
        "error": "",
        "prompt": "",
        "reencoded": False,
        "preview_url": "",
        "preview_index": 0,
    },
}
FILTER_OPERATORS = {"eq", "neq", "lt", "lte", "gt", "gte", "in", "is", "like", "ilike"}


def like(pattern: str, fold: bool) -> re.Pattern[str]:
    """A PostgREST like/ilike pattern: `*` or `%` any run of characters, `_` any one."""
    parts = ("." if c == "_" else ".*" if c in "*%" else re.escape(c) for c in pattern)
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL if fold else re.DOTALL)


# Each table's columns and their types, as sql/postgres declares them: PostgREST refuses a
# column it does not know (42703 in a filter or select, PGRST204 in a body) and a value its
# column cannot hold (22P02).
SCHEMA: dict[str, dict[str, type]] = {
    "videos": {"id": str, "status": str, "image_upload_progress": int},
    "preview_runs": {
        "video_id": str,
        "scene_count": int,
        "error": str,
        "summary": str,
        "prompts": str,
        "owner": str,
        "updated_at_ms": int,
    },
    "preview_scenes": {
        "video_id": str,
        "scene": int,
        "state": str,
        "url": str,
        "path": str,
        "content_type": str,
        "placeholder": bool,
        "provider": str,
        "attempts": int,
        "generate_ms": int,
        "upload_ms": int,
        "error": str,
        "cost_usd": float,
        "cost_known": bool,
        "paid_at_ms": int,
        "prompt": str,
        "reencoded": bool,
        "preview_url": str,
        "preview_index": int,
        "updated_at_ms": int,
    },
    "preview_user_starts": {"owner": str, "video_id": str, "scenes": int, "at_ms": int},
    "preview_spend_holds": {"id": str, "video_id": str, "owner": str, "usd": float, "expires_at_ms": int},
}
# The functions sql/postgres declares, with their parameters' types: PostgREST answers
# PGRST202 for a name or a set of parameter names it does not know.
FUNCTIONS: dict[str, dict[str, type]] = {
    "reserve_preview_spend": {
        "p_id": str,
        "p_video_id": str,
        "p_owner": str,
        "p_usd": float,
        "p_since_ms": int,
        "p_daily_usd": float,
        "p_video_usd": float,
        "p_owner_usd": float,
        "p_ttl_ms": int,
    }
}


def _fits(value: Any, kind: type) -> bool:
    if value is None or kind is str:
        return True
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, str) and value.lstrip("-").isdigit()
        )
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return True


def file_part(sent_type: str, raw: bytes) -> tuple[bytes, str] | None:
    """The `file` field of a multipart/form-data body (RFC 7578) and its Content-Type, or None
    when the body is malformed or has none. Split on the boundary as the real server's streaming
    parser does (the email package's parser took about 30 ms per MiB, slower than the server
    it stands for, which made every upload benchmark through this fake look cheap)."""
    boundary = email.message.Message()
    boundary["Content-Type"] = sent_type
    marker = boundary.get_param("boundary")
    if not isinstance(marker, str) or not marker:
        return None
    delimiter = b"--" + marker.encode()
    sections = raw.split(b"\r\n" + delimiter)
    if not sections[0].startswith(delimiter) or not sections[-1].startswith(b"--"):
        return None  # no opening delimiter, or the closing one is missing (a cut body)
    sections[0] = sections[0][len(delimiter) :]
    for section in sections[:-1]:
        head, sep, body = section.partition(b"\r\n\r\n")
        if not sep:
            return None
        headers = email.parser.BytesHeaderParser(policy=email.policy.HTTP).parsebytes(head.lstrip(b"\r\n"))
        if headers.get_param("name", header="content-disposition") == "file":
            return body, headers.get_content_type() if headers["Content-Type"] else ""
    return None


def pgrst_error(code: str, message: str) -> dict[str, Any]:
    return {"code": code, "message": message, "details": None, "hint": None}


PRIMARY_KEYS = {
    "videos": ("id",),
    "preview_runs": ("video_id",),
    "preview_scenes": ("video_id", "scene"),
    "preview_user_starts": (),  # no key: every insert is a new row
    "preview_spend_holds": ("id",),
}


@dataclass
class FakeSupabase(LoopbackServer):
    key: str = "service-role-key-for-tests-0123456789"
    buckets: dict[str, dict[str, Any]] = field(default_factory=dict)
    objects: dict[tuple[str, str], tuple[bytes, str]] = field(default_factory=dict)
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    faults: dict[str, list[Fault]] = field(default_factory=dict)
    requests: list[Record] = field(default_factory=list)
    # Bucket appears between our check and our create (a racing creator).
    race_bucket_on_create: bool = False
    # Slow every storage/rest answer by this many seconds (a slow server).
    latency: float = 0.0
    # Take request bodies no faster than this many bytes per second (0: as fast as read):
    # a real Storage server parses and writes an upload at its own pace (bench_storage).
    upload_rate: float = 0.0
    # Columns typed uuid, per table (a StoryShort `videos.id`): PostgreSQL refuses other
    # values with 22P02, and PostgREST passes that on as HTTP 400.
    uuid_columns: dict[str, set[str]] = field(default_factory=dict)
    # A table's own schema beyond ours (a StoryShort `videos` table): column defaults, NOT
    # NULL columns (an insert without them is refused with 23502, as PostgreSQL does), and
    # a BEFORE UPDATE trigger run on every row an update or merge changes.
    defaults: dict[str, dict[str, Any]] = field(default_factory=dict)
    not_null: dict[str, set[str]] = field(default_factory=dict)
    on_update: dict[str, Callable[[dict[str, Any]], None]] = field(default_factory=dict)
    # Columns a test's own table adds to the schema (a StoryShort `videos`: user_id, title, ...).
    columns: dict[str, dict[str, type]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        for table in PRIMARY_KEYS:
            self.tables.setdefault(table, [])
        LoopbackServer.__init__(self, self._handler(), "fake-supabase")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add_bucket(
        self, name: str, *, public: bool = True, file_size_limit: int | None = None, types: list[str] | None = None
    ) -> None:
        """A bucket that exists already (as the app's own would), shaped as the API answers it."""
        with self.lock:
            self.buckets[name] = {
                "id": name,
                "name": name,
                "owner": "",
                "public": public,
                "created_at": "2026-01-01T00:00:00Z",
                "updated_at": "2026-01-01T00:00:00Z",
                "file_size_limit": file_size_limit,
                "allowed_mime_types": types,
            }

    def inject(self, route: str, *faults: Fault) -> None:
        """Faults for a route ('get_bucket', 'list_buckets', 'create_bucket', 'upload', 'rest'),
        used one per request; the last one repeats."""
        with self.lock:
            self.faults[route] = list(faults)

    def count(self, route: str) -> int:
        with self.lock:
            return sum(1 for r in self.requests if r.route == route)

    def times(self, route: str) -> list[float]:
        with self.lock:
            return [r.at for r in self.requests if r.route == route]

    def _fault(self, route: str) -> Fault:
        with self.lock:
            queue = self.faults.get(route)
            if not queue:
                return Pass()
            return queue.pop(0) if len(queue) > 1 else queue[0]

    # ---- PostgREST subset -------------------------------------------------------------

    def _match(self, row: dict[str, Any], filters: list[tuple[str, str, str]]) -> bool:
        for column, op, raw in filters:
            value = row.get(column)
            if op == "is":
                wanted = {"null": None, "true": True, "false": False}.get(raw.lower(), raw)
                if value is not wanted:
                    return False
                continue
            if op == "in":
                options = [o.strip().strip('"') for o in raw.strip("()").split(",") if o.strip()]
                if str(value) not in options:
                    return False
                continue
            if op in ("like", "ilike"):
                if value is None or not like(raw, op == "ilike").fullmatch(str(value)):
                    return False
                continue
            other: Any = raw
            if isinstance(value, bool):
                other = raw.lower() == "true"
            elif isinstance(value, int | float):
                other = float(raw)
            if op == "eq" and value != other:
                return False
            if op == "neq" and value == other:
                return False
            if op == "lt" and not (value is not None and value < other):
                return False
            if op == "gt" and not (value is not None and value > other):
                return False
            if op == "gte" and not (value is not None and value >= other):
                return False
            if op == "lte" and not (value is not None and value <= other):
                return False
        return True

    def _updated(self, table: str, row: dict[str, Any]) -> None:
        trigger = self.on_update.get(table)
        if trigger is not None:
            trigger(row)

    def _call(self, name: str, body: Any) -> tuple[int, Any, dict[str, str]]:
        """POST /rest/v1/rpc/<name>: the SQL functions of sql/postgres, as PostgREST runs them
        (named parameters in a JSON object; a set-returning function answers an array)."""
        params = FUNCTIONS.get(name)
        if params is None or not isinstance(body, dict) or set(body) != set(params):
            given = ", ".join(sorted(body)) if isinstance(body, dict) else ""
            return 404, pgrst_error("PGRST202", f"Could not find the function public.{name}({given})"), {}
        for param, kind in params.items():
            value = body[param]
            if value is not None and not _fits(value, kind):
                kind_name = {int: "bigint", float: "double precision"}.get(kind, "text")
                return 400, pgrst_error("22P02", f'invalid input syntax for type {kind_name}: "{value}"'), {}
        with self.lock:
            return 200, [self._reserve_preview_spend(**body)], {}

    def _reserve_preview_spend(
        self,
        p_id: str,
        p_video_id: str,
        p_owner: str,
        p_usd: float,
        p_since_ms: int,
        p_daily_usd: float | None,
        p_video_usd: float | None,
        p_owner_usd: float | None,
        p_ttl_ms: int,
    ) -> dict[str, Any]:
        """What sql/postgres/006_spend_holds.sql's function does, under the fake's lock (its
        transaction and advisory lock)."""
        now = int(time.time() * 1000)
        holds = self.tables["preview_spend_holds"]
        holds[:] = [h for h in holds if h["expires_at_ms"] > now]
        scenes = self.tables["preview_scenes"]
        owned = {r["video_id"] for r in self.tables["preview_runs"] if r.get("owner") == p_owner}
        others = [h for h in holds if h["id"] != p_id]
        left: dict[str, float | None] = {"daily": None, "video": None, "owner": None}
        if p_daily_usd is not None:
            paid = sum(s["cost_usd"] for s in scenes if s["paid_at_ms"] >= p_since_ms)
            left["daily"] = p_daily_usd - paid - sum(h["usd"] for h in others)
        if p_video_usd is not None:
            paid = sum(s["cost_usd"] for s in scenes if s["video_id"] == p_video_id)
            left["video"] = p_video_usd - paid - sum(h["usd"] for h in others if h["video_id"] == p_video_id)
        if p_owner_usd is not None and p_owner:
            paid = sum(s["cost_usd"] for s in scenes if s["paid_at_ms"] >= p_since_ms and s["video_id"] in owned)
            left["owner"] = p_owner_usd - paid - sum(h["usd"] for h in others if h["owner"] == p_owner)
        existing = next((h for h in holds if h["id"] == p_id), None)
        if existing is not None:
            granted = existing["usd"]
        else:
            granted = max(0.0, min([p_usd, *(room for room in left.values() if room is not None)]))
            if granted > 0:
                hold = {"id": p_id, "video_id": p_video_id, "owner": p_owner, "usd": granted}
                holds.append({**hold, "expires_at_ms": now + p_ttl_ms})
        return {"granted_usd": granted, **{f"{cap}_left_usd": room for cap, room in left.items()}}

    def _rest(
        self, method: str, table: str, query: list[tuple[str, str]], body: Any, prefer: str
    ) -> tuple[int, Any, dict[str, str]]:
        if table.startswith("rpc/") and method == "POST":
            return self._call(table.removeprefix("rpc/"), body)
        if table not in self.tables:
            return (
                404,
                {
                    "code": "42P01",
                    "message": f'relation "public.{table}" does not exist',
                    "details": None,
                    "hint": None,
                },
                {},
            )
        rows = self.tables[table]
        filters = []
        select, order, on_conflict = "*", "", ""
        for k, v in query:
            if k == "select":
                select = v
            elif k == "order":
                order = v
            elif k == "on_conflict":
                on_conflict = v
            elif k in ("limit", "offset", "columns"):
                continue
            else:
                op, _, raw = v.partition(".")
                if op not in FILTER_OPERATORS:
                    return 400, pgrst_error("PGRST100", f'"failed to parse filter ({v})" (line 1, column 1)'), {}
                filters.append((k, op, raw))
        known = {
            **SCHEMA.get(table, {}),
            **{c: object for c in self.defaults.get(table, {})},
            **{c: object for c in self.not_null.get(table, set())},
            **self.columns.get(table, {}),
        }
        written = body if isinstance(body, list) else [body] if isinstance(body, dict) else []
        wanted = [c for c in select.split(",") if c and c != "*"] + [c for c, _op, _raw in filters]
        wanted += [c.split(".")[0] for c in order.split(",") if c]
        for column in wanted:
            if column not in known:
                return 400, pgrst_error("42703", f"column {table}.{column} does not exist"), {}
        for item in written:
            for column, value in item.items():
                if column not in known:
                    return (
                        400,
                        pgrst_error(
                            "PGRST204", f"Could not find the '{column}' column of '{table}' in the schema cache"
                        ),
                        {},
                    )
                kind = known[column]
                if isinstance(kind, type) and kind is not object and not _fits(value, kind):
                    name = {int: "integer", float: "double precision", bool: "boolean"}.get(kind, kind.__name__)
                    return 400, pgrst_error("22P02", f'invalid input syntax for type {name}: "{value}"'), {}
        typed = self.uuid_columns.get(table, set())
        values = [v for c, _op, raw in filters if c in typed for v in raw.strip("()").split(",")]
        values += [str(item[c]) for item in written for c in typed if c in item]
        for value in values:
            try:
                uuid.UUID(value.strip('"'))
            except ValueError:
                return 400, pgrst_error("22P02", f'invalid input syntax for type uuid: "{value}"'), {}

        def project(row: dict[str, Any]) -> dict[str, Any]:
            if select in ("*", ""):
                return dict(row)
            return {c: row.get(c) for c in select.split(",")}

        headers: dict[str, str] = {}
        with self.lock:
            if method == "GET":
                found = [r for r in rows if self._match(r, filters)]
                if order:
                    col, _, direction = order.partition(".")
                    found.sort(key=lambda r: r.get(col) or 0, reverse=direction == "desc")
                if "count=exact" in prefer:
                    headers["Content-Range"] = f"0-{max(len(found) - 1, 0)}/{len(found)}"
                return 200, [project(r) for r in found], headers
            if method == "POST":
                items = body if isinstance(body, list) else [body]
                keys = tuple(on_conflict.split(",")) if on_conflict else PRIMARY_KEYS[table]
                out = []
                for item in items:
                    existing = (
                        next((r for r in rows if all(r.get(k) == item.get(k) for k in keys)), None) if keys else None
                    )
                    if existing is None:
                        row = {**DEFAULTS.get(table, {}), **self.defaults.get(table, {}), **item}
                        missing = sorted(c for c in self.not_null.get(table, set()) if row.get(c) is None)
                        if missing:
                            return (
                                400,
                                pgrst_error(
                                    "23502",
                                    f'null value in column "{missing[0]}" of relation "{table}" violates '
                                    "not-null constraint",
                                ),
                                {},
                            )
                        rows.append(row)
                        out.append(dict(row))
                    elif "merge-duplicates" in prefer:
                        existing.update(item)
                        self._updated(table, existing)
                        out.append(dict(existing))
                    elif "ignore-duplicates" in prefer:
                        continue
                    else:
                        return (
                            409,
                            {
                                "code": "23505",
                                "message": "duplicate key value violates unique constraint",
                                "details": None,
                                "hint": None,
                            },
                            {},
                        )
                if "return=representation" not in prefer:
                    return 201, b"", headers  # PostgREST's default (and return=minimal): no body
                return 201, [project(r) for r in out], headers
            if method == "PATCH":
                changed = []
                for row in rows:
                    if self._match(row, filters):
                        row.update(body)
                        self._updated(table, row)
                        changed.append(dict(row))
                if "return=representation" not in prefer:
                    return 204, b"", headers
                return 200, [project(r) for r in changed], headers
            if method == "DELETE":
                gone = [r for r in rows if self._match(r, filters)]
                rows[:] = [r for r in rows if not self._match(r, filters)]
                if "return=representation" not in prefer:
                    return 204, b"", headers
                return 200, [project(r) for r in gone], headers
        return 405, {"code": "PGRST", "message": "method not allowed", "details": None, "hint": None}, {}

    # ---- HTTP -------------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(QuietHandler):
            def _storage_error(self, fail: Fail) -> None:
                self.send(fail.http, {"statusCode": fail.status_code, "error": fail.error, "message": fail.message})

            def _route(self, method: str, path: str) -> str:
                if path.startswith("/rest/v1/"):
                    return "rest"
                if path.startswith("/storage/v1/object/public/"):
                    return "public"
                if path == "/storage/v1/bucket":
                    return "list_buckets" if method == "GET" else "create_bucket"
                if path.startswith("/storage/v1/bucket/"):
                    return "get_bucket"
                if path.startswith("/storage/v1/object/"):
                    return "upload" if method in ("POST", "PUT") else "object"
                return "unknown"

            def _handle(self, method: str) -> None:
                parts = urlsplit(self.path)
                path = unquote(parts.path)
                length = int(self.headers.get("Content-Length") or 0)
                started = time.monotonic()
                raw = self.rfile.read(length) if length else b""
                if len(raw) < length:
                    self.close_connection = True  # the client gave up mid-body: nothing is stored
                    return
                if fake.upload_rate and raw:
                    fake.stopping.wait(max(0.0, len(raw) / fake.upload_rate - (time.monotonic() - started)))
                route = self._route(method, path)
                with fake.lock:
                    fake.requests.append(
                        Record(method, route, path, time.monotonic(), {k.lower(): v for k, v in self.headers.items()})
                    )
                fault = fake._fault(route)
                if isinstance(fault, Hang):
                    fake.stopping.wait(120)
                    return
                if fake.latency and fake.stopping.wait(fake.latency):
                    return
                if isinstance(fault, Fail):
                    if route == "rest":
                        self.send(
                            fault.http,
                            {"code": fault.status_code, "message": fault.message, "details": None, "hint": None},
                        )
                    else:
                        self._storage_error(fault)
                    return
                if route == "public":
                    bucket, _, key = path.removeprefix("/storage/v1/object/public/").partition("/")
                    with fake.lock:
                        found = fake.objects.get((bucket, key))
                        public = bool(fake.buckets.get(bucket, {}).get("public"))
                    if found is None or not public:  # a private bucket serves nothing publicly
                        self._storage_error(Fail(400, "404", "not_found", "Object not found"))
                    else:
                        self.send(200, found[0], content_type=found[1])
                    return
                auth = self.headers.get("Authorization", "")
                if auth != f"Bearer {fake.key}" or self.headers.get("apikey") != fake.key:
                    if route == "rest":
                        self.send(401, {"code": "PGRST301", "message": "JWT invalid", "details": None, "hint": None})
                    else:
                        self._storage_error(BAD_KEY)
                    return
                if route == "rest":
                    table = path.removeprefix("/rest/v1/")
                    body = json.loads(raw) if raw else None
                    status, payload, headers = fake._rest(
                        method, table, parse_qsl(parts.query), body, self.headers.get("Prefer", "")
                    )
                    self.send(status, payload, headers)
                    return
                getattr(self, f"_storage_{route}", self._not_found)(path, raw)

            def _not_found(self, path: str, raw: bytes) -> None:
                self._storage_error(Fail(400, "404", "not_found", f"no route {path}"))

            def _storage_list_buckets(self, path: str, raw: bytes) -> None:
                with fake.lock:
                    self.send(200, list(fake.buckets.values()))

            def _storage_get_bucket(self, path: str, raw: bytes) -> None:
                name = path.rsplit("/", 1)[-1]
                with fake.lock:
                    bucket = fake.buckets.get(name)
                if bucket is None:
                    self._storage_error(Fail(400, "404", "Bucket not found", "Bucket not found"))
                else:
                    self.send(200, bucket)

            def _storage_create_bucket(self, path: str, raw: bytes) -> None:
                spec = json.loads(raw or b"{}")
                name = spec.get("id") or spec.get("name")
                now = "2026-11-24T00:00:00Z"
                bucket = {
                    "id": name,
                    "name": name,
                    "owner": "",
                    "public": bool(spec.get("public")),
                    "created_at": now,
                    "updated_at": now,
                    "file_size_limit": spec.get("file_size_limit"),
                    "allowed_mime_types": spec.get("allowed_mime_types"),
                }
                with fake.lock:
                    if fake.race_bucket_on_create and name not in fake.buckets:
                        fake.buckets[name] = {**bucket, "owner": "someone-else"}
                    if name in fake.buckets:
                        exists = True
                    else:
                        fake.buckets[name] = bucket
                        exists = False
                if exists:
                    self._storage_error(DUPLICATE)
                else:
                    self.send(200, {"name": name})

            def _storage_upload(self, path: str, raw: bytes) -> None:
                bucket, _, key = path.removeprefix("/storage/v1/object/").partition("/")
                sent_type = self.headers.get("Content-Type", "")
                if sent_type.startswith("multipart/form-data"):
                    parsed = file_part(sent_type, raw)
                    if parsed is None:
                        self._storage_error(Fail(400, "400", "invalid_request", "no file in the multipart body"))
                        return
                    data, content_type = parsed
                else:  # a binary body, typed by its Content-Type header, as the real API takes it
                    data, content_type = raw, sent_type.split(";")[0].strip() or "application/octet-stream"
                with fake.lock:
                    spec = fake.buckets.get(bucket)
                    upsert = self.headers.get("x-upsert") == "true"
                    if spec is None:
                        error: Fail | None = Fail(400, "404", "Bucket not found", "Bucket not found")
                    elif spec.get("file_size_limit") and len(data) > spec["file_size_limit"]:
                        error = TOO_LARGE
                    elif spec.get("allowed_mime_types") and content_type not in spec["allowed_mime_types"]:
                        error = Fail(400, "415", "invalid_mime_type", f"mime type {content_type} is not supported")
                    elif (bucket, key) in fake.objects and not upsert:
                        error = DUPLICATE
                    else:
                        error = None
                        fake.objects[(bucket, key)] = (data, content_type)
                if error is not None:
                    self._storage_error(error)
                else:
                    self.send(200, {"Key": f"{bucket}/{key}", "Id": str(uuid.uuid4())})

            def do_GET(self) -> None:
                self._handle("GET")

            def do_HEAD(self) -> None:
                self._handle("GET")

            def do_POST(self) -> None:
                self._handle("POST")

            def do_PUT(self) -> None:
                self._handle("PUT")

            def do_PATCH(self) -> None:
                self._handle("PATCH")

            def do_DELETE(self) -> None:
                self._handle("DELETE")

        return Handler


def main() -> None:
    """`python -m tests.fakes.supabase_fake [--upload-rate BYTES_PER_S]`: the fake in a process
    of its own (benchmarks), printing its port; it serves until stdin closes."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--upload-rate", type=float, default=0.0)
    args = parser.parse_args()
    with FakeSupabase(upload_rate=args.upload_rate) as fake:
        print(fake.port, flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main()
