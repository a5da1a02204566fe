"""The Supabase fake refuses what the real service refuses, so a wrong request from our
clients fails a test instead of passing against a lenient fake: PostgREST's unknown columns
(42703, PGRST204), values a column cannot hold (22P02), `Prefer: return=...`, functions
called with other parameters than they declare (PGRST202); Storage's
private buckets on the public route, `allowed_mime_types`, and binary (non-multipart)
uploads typed by their Content-Type, multipart bodies split on their boundary, bodies cut short.
Filters select what PostgREST's would (an unknown operator is PGRST100)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.fakes.images import image_bytes
from tests.fakes.supabase_fake import FakeSupabase


@pytest.fixture
def fake() -> Iterator[FakeSupabase]:
    with FakeSupabase() as server:
        yield server


@pytest.fixture
def client(fake: FakeSupabase) -> Iterator[httpx.Client]:
    headers = {"apikey": fake.key, "Authorization": f"Bearer {fake.key}"}
    with httpx.Client(base_url=fake.url, headers=headers, timeout=10) as http:
        yield http


def test_unknown_columns_are_refused_as_postgrest_does(client: httpx.Client) -> None:
    selected = client.get("/rest/v1/videos", params={"select": "id,nope"})
    filtered = client.get("/rest/v1/videos", params={"nope": "eq.1"})
    inserted = client.post("/rest/v1/videos", json={"id": "v1", "nope": 1})
    assert (selected.status_code, selected.json()["code"]) == (400, "42703")
    assert (filtered.status_code, filtered.json()["code"]) == (400, "42703")
    assert (inserted.status_code, inserted.json()["code"]) == (400, "PGRST204")


def test_a_value_its_column_cannot_hold_is_22p02(client: httpx.Client) -> None:
    wrong = client.post("/rest/v1/preview_scenes", json={"video_id": "v", "scene": "three", "state": "stored"})
    assert (wrong.status_code, wrong.json()["code"]) == (400, "22P02")
    flag = client.post(
        "/rest/v1/preview_scenes", json={"video_id": "v", "scene": 1, "state": "stored", "placeholder": "yes"}
    )
    assert (flag.status_code, flag.json()["code"]) == (400, "22P02")


def test_prefer_return_decides_whether_rows_come_back(client: httpx.Client) -> None:
    minimal = client.post("/rest/v1/videos", json={"id": "m1"})
    full = client.post("/rest/v1/videos", json={"id": "m2"}, headers={"Prefer": "return=representation"})
    patched = client.patch("/rest/v1/videos", params={"id": "eq.m1"}, json={"status": "failed"})
    assert minimal.status_code == 201 and minimal.content == b""
    assert full.status_code == 201 and full.json()[0]["id"] == "m2"
    assert patched.status_code == 204 and patched.content == b""


def test_a_function_is_called_with_exactly_its_named_parameters(client: httpx.Client) -> None:
    params = {
        "p_id": "h1",
        "p_video_id": "v",
        "p_owner": "",
        "p_usd": 0.04,
        "p_since_ms": 0,
        "p_daily_usd": 1.0,
        "p_video_usd": None,
        "p_owner_usd": None,
        "p_ttl_ms": 60_000,
    }
    unknown = client.post("/rest/v1/rpc/reserve_spend", json=params)
    missing = client.post(
        "/rest/v1/rpc/reserve_preview_spend", json={k: v for k, v in params.items() if k != "p_ttl_ms"}
    )
    typed = client.post("/rest/v1/rpc/reserve_preview_spend", json={**params, "p_usd": "four cents"})
    called = client.post("/rest/v1/rpc/reserve_preview_spend", json=params)
    assert (unknown.status_code, unknown.json()["code"]) == (404, "PGRST202")
    assert (missing.status_code, missing.json()["code"]) == (404, "PGRST202")
    assert (typed.status_code, typed.json()["code"]) == (400, "22P02")
    assert called.status_code == 200 and called.json() == [
        {"granted_usd": 0.04, "daily_left_usd": 1.0, "video_left_usd": None, "owner_left_usd": None}
    ]
    deleted = client.delete("/rest/v1/preview_spend_holds", params={"id": "eq.h1"})
    assert deleted.status_code == 204 and client.get("/rest/v1/preview_spend_holds").json() == []


def test_a_private_bucket_serves_nothing_on_the_public_route(fake: FakeSupabase, client: httpx.Client) -> None:
    fake.add_bucket("private", public=False)
    fake.add_bucket("open")
    png = image_bytes()
    for bucket in ("private", "open"):
        stored = client.post(f"/storage/v1/object/{bucket}/a.png", content=png, headers={"Content-Type": "image/png"})
        assert stored.status_code == 200, stored.text
    hidden = httpx.get(f"{fake.url}/storage/v1/object/public/private/a.png")
    shown = httpx.get(f"{fake.url}/storage/v1/object/public/open/a.png")
    assert hidden.status_code == 400 and "not found" in hidden.text.lower()
    assert shown.status_code == 200 and shown.content == png and shown.headers["content-type"] == "image/png"


def test_allowed_mime_types_are_enforced(fake: FakeSupabase, client: httpx.Client) -> None:
    fake.add_bucket("images", types=["image/png"])
    refused = client.post(
        "/storage/v1/object/images/a.jpg", content=image_bytes("JPEG"), headers={"Content-Type": "image/jpeg"}
    )
    assert refused.status_code == 400 and refused.json()["statusCode"] == "415"
    assert ("images", "a.jpg") not in fake.objects


def test_multipart_uploads_are_split_on_their_boundary_and_a_broken_body_is_refused(
    fake: FakeSupabase, client: httpx.Client
) -> None:
    """What storage3 sends (multipart/form-data with a `file` part) is taken byte for byte,
    also when the image's bytes contain CRLFs and dashes; a body without its closing
    boundary or without a file part is refused."""
    fake.add_bucket("images")
    png = image_bytes() + b"\r\n--\r\n\r\n"  # trailing bytes after IEND, as a hostile image might carry
    stored = client.post(
        "/storage/v1/object/images/a.png", files={"file": ("a.png", png, "image/png")}, data={"cacheControl": "3600"}
    )
    assert stored.status_code == 200, stored.text
    assert fake.objects[("images", "a.png")] == (png, "image/png")
    boundary = "b0undary"
    cut = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="b.png"\r\n\r\n'.encode() + png
    refused = client.post(
        "/storage/v1/object/images/b.png",
        content=cut,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert refused.status_code == 400 and ("images", "b.png") not in fake.objects
    no_file = client.post("/storage/v1/object/images/c.png", files={"other": ("c.png", png, "image/png")})
    assert no_file.status_code == 400 and ("images", "c.png") not in fake.objects


def test_a_body_cut_short_of_its_content_length_stores_nothing(fake: FakeSupabase) -> None:
    import socket

    fake.add_bucket("images")
    png = image_bytes()
    head = (
        f"POST /storage/v1/object/images/a.png HTTP/1.1\r\nHost: x\r\napikey: {fake.key}\r\n"
        f"Authorization: Bearer {fake.key}\r\nContent-Type: image/png\r\nContent-Length: {len(png)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", fake.port), timeout=5) as sock:
        sock.sendall(head + png[: len(png) // 2])
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(100) == b""  # no answer: the connection is closed
    assert ("images", "a.png") not in fake.objects


def test_filters_select_the_rows_postgrest_would(client: httpx.Client) -> None:
    for id_, progress in (("v-fox", 10), ("v-Fox-2", 50), ("v-owl", 90)):
        assert client.post("/rest/v1/videos", json={"id": id_, "image_upload_progress": progress}).status_code == 201

    def ids(**filters: str) -> list[str]:
        answer = client.get("/rest/v1/videos", params={"select": "id", **filters})
        assert answer.status_code == 200, answer.text
        return sorted(row["id"] for row in answer.json())

    assert ids(image_upload_progress="lte.50") == ["v-Fox-2", "v-fox"]
    assert ids(image_upload_progress="lt.50") == ["v-fox"]
    assert ids(image_upload_progress="gte.50") == ["v-Fox-2", "v-owl"]
    assert ids(id="like.v-fox*") == ["v-fox"]  # case matters
    assert ids(id="like.v-f%") == ["v-fox"]  # % is a wildcard too
    assert ids(id="like.v-_wl") == ["v-owl"]  # _ is one character
    assert ids(id="ilike.V-FOX*") == ["v-Fox-2", "v-fox"]
    assert ids(id="like.v.fox") == []  # a dot is itself, not any character


def test_an_unknown_filter_operator_is_pgrst100(client: httpx.Client) -> None:
    answer = client.get("/rest/v1/videos", params={"id": "resembles.v1"})
    assert (answer.status_code, answer.json()["code"]) == (400, "PGRST100")
    assert "failed to parse filter" in answer.json()["message"]
