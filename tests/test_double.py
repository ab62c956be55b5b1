"""The cluster double itself: wire formats, S3, listen, faults, OSCAR REST, jobs.

Synchronisation is always on the thing awaited (a record on the stream, a job's
``done`` event); timeouts are only a safety net.
"""

from __future__ import annotations

import http.client
import io
import json
import queue
import socket
import stat
import threading
import time
import urllib.parse
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openapi_schema_validator
import pytest
import requests
import urllib3
import yaml
from minio import Minio
from minio.commonconfig import CopySource
from minio.deleteobjects import DeleteObject
from minio.error import S3Error
from oscar_python.client import Client
from PIL import Image

from tests.double import ClusterDouble, ScriptHandler, services

SPEC = yaml.safe_load((Path(__file__).parent / "data" / "oscar-api.yaml").read_text())
BUCKET = "stable-diffusion"
TIMEOUT = 10.0


# -- helpers ------------------------------------------------------------------------


class RawListen:
    """A listen request on a raw socket: checks the chunked framing byte by byte."""

    def __init__(self, double: ClusterDouble, bucket: str = BUCKET, query: str = "",
                 access_key: str | None = None, read_head: bool = True) -> None:
        port = urllib.parse.urlsplit(double.minio_endpoint).port
        assert port is not None
        key = access_key or double.minio_access_key
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.sock.sendall((
            f"GET /{bucket}?{query} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: AWS4-HMAC-SHA256 Credential={key}/20260101/us-east-1/s3/"
            "aws4_request, SignedHeaders=host, Signature=0\r\n\r\n").encode())
        self.file = self.sock.makefile("rb")
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = b""
        self._buffer = b""
        if read_head:
            self.read_head()

    def read_head(self) -> None:
        """The status line and headers (MinIO sends them with its first tick or event)."""
        self.status = int(self.file.readline().split()[1])
        while (line := self.file.readline().strip()):
            name, _, value = line.decode().partition(":")
            self.headers[name.strip().lower()] = value.strip()
        self.body = b""
        if "content-length" in self.headers:
            self.body = self.file.read(int(self.headers["content-length"]))

    def chunk(self, timeout: float = TIMEOUT) -> bytes | None:
        """The next chunk of the body as sent, or None at the end of the stream."""
        self.sock.settimeout(timeout)
        size = int(self.file.readline().strip(), 16)
        if size == 0:
            return None
        data = self.file.read(size)
        assert self.file.read(2) == b"\r\n"
        return data

    def line(self, timeout: float = TIMEOUT) -> bytes | None:
        """The next line (keep-alives included), or None at the end of the stream."""
        self.sock.settimeout(timeout)
        while b"\n" not in self._buffer:
            size_line = self.file.readline()
            if not size_line:
                raise ConnectionError("connection closed without the last chunk")
            size = int(size_line.strip(), 16)
            if size == 0:
                assert self.file.readline() == b"\r\n"
                return None
            self._buffer += self.file.read(size)
            assert self.file.read(2) == b"\r\n"
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.lstrip(b" ") + b"\n"  # keep-alive spaces before a line carry nothing

    def event(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The next line with records (keep-alives and pings skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            line = self.line(max(0.01, deadline - time.monotonic()))
            assert line is not None, "stream ended while waiting for an event"
            if line.strip() and json.loads(line)["Records"]:
                return json.loads(line)

    def silent_for(self, seconds: float) -> bool:
        """True if nothing at all arrives for ``seconds`` (a bounded negative check)."""
        self.sock.settimeout(seconds)
        try:
            self.sock.recv(1, socket.MSG_PEEK)  # the file object stays usable afterwards
        except TimeoutError:
            return True
        return False  # data or EOF arrived

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@pytest.fixture
def listen(cluster: ClusterDouble) -> Iterator[Any]:
    opened: list[RawListen] = []

    def open_stream(query: str = "", bucket: str = BUCKET, **kw: Any) -> RawListen:
        stream = RawListen(cluster, bucket, query, **kw)
        opened.append(stream)
        return stream

    yield open_stream
    for stream in opened:
        stream.close()


def minio_client(double: ClusterDouble, access_key: str | None = None) -> Minio:
    return Minio(urllib.parse.urlsplit(double.minio_endpoint).netloc,
                 access_key or double.minio_access_key, double.minio_secret_key, secure=False)


def oscar_client(double: ClusterDouble, user: str = "oscar", password: str = "oscar-pw") -> Client:
    return Client({"cluster_id": "double", "endpoint": double.oscar_endpoint, "user": user,
                   "password": password, "ssl": False})


def validate(instance: Any, schema_name: str, array: bool = False) -> None:
    schema: dict[str, Any] = {"$ref": f"#/components/schemas/{schema_name}"}
    if array:
        schema = {"type": "array", "items": schema}
    openapi_schema_validator.validate(
        instance, {**schema, "components": SPEC["components"]},
        cls=openapi_schema_validator.OAS30Validator,
        format_checker=openapi_schema_validator.OAS30Validator.FORMAT_CHECKER)


def record(line: dict[str, Any], index: int = 0) -> dict[str, Any]:
    return line["Records"][index]


def key_of(line: dict[str, Any], index: int = 0) -> str:
    return record(line, index)["s3"]["object"]["key"]


def wait_for(predicate: Any, timeout: float = TIMEOUT) -> None:
    """Wait for state the double changes from another thread (no event exposed for it)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.002)


def put_request(double: ClusterDouble, job: str, prompt: str = "a cat", seed: int = 7,
                **extra: Any) -> None:
    body = json.dumps({"prompt": prompt, "seed": seed, **extra}).encode()
    minio_client(double).put_object(BUCKET, f"in/{job}.json", io.BytesIO(body), len(body))


def only_job(double: ClusterDouble, service: str = BUCKET) -> Any:
    jobs = double.jobs(service)
    assert len(jobs) == 1
    return next(iter(jobs.values()))


# -- lifecycle ----------------------------------------------------------------------


def test_starts_fast_and_stops_cleanly() -> None:
    started = time.perf_counter()
    with ClusterDouble(admin=("u", "p")) as double:
        assert time.perf_counter() - started < 1.0
        assert requests.get(f"{double.oscar_endpoint}/health", timeout=5).status_code == 200
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{double.oscar_endpoint}/health", timeout=5)


@pytest.mark.parametrize("server", ["minio", "oscar"])
def test_a_connection_serves_request_after_request(cluster: ClusterDouble, server: str) -> None:
    # MinIO and OSCAR are Go net/http servers: they keep connections alive, so a
    # client's pool reuses one connection (werkzeug's own server closes each).
    endpoint = cluster.minio_endpoint if server == "minio" else cluster.oscar_endpoint
    connection = http.client.HTTPConnection(urllib.parse.urlsplit(endpoint).netloc, timeout=10)
    try:
        # A body the server answers without reading (the request is refused): the
        # rest of it must not be taken for the next request.
        connection.request("PUT", "/refused/key", body=b"x" * 200_000)
        first = connection.getresponse()
        first.read()
        assert first.getheader("Connection") != "close"
        socket_used = connection.sock
        for _ in range(3):
            connection.request("GET", "/health" if server == "oscar" else "/refused")
            answer = connection.getresponse()
            answer.read()
            assert answer.status in (200, 403, 404), answer.status
            assert connection.sock is socket_used, "the server closed the connection"
    finally:
        connection.close()


def test_stop_closes_open_streams() -> None:
    double = ClusterDouble().start()
    double.make_bucket("bucket")
    stream = RawListen(double, "bucket", "events=s3:ObjectCreated:*")
    double.stall_streams()  # even a silent one
    double.stop()
    try:
        assert stream.line() is None
    except ConnectionError:
        pass  # ended by the connection shutdown rather than the last chunk: also closed
    finally:
        stream.close()
    assert double.listen_connections == 0


def test_two_doubles_keep_their_buckets_apart() -> None:
    with ClusterDouble() as one, ClusterDouble() as two:
        one.put_object("shared-name", "k", b"one")
        two.put_object("shared-name", "k", b"two")
        assert one.get_object("shared-name", "k") == b"one"
        assert two.get_object("shared-name", "k") == b"two"


# -- listen: the wire format -----------------------------------------------------------


def test_listen_is_chunked_json_lines_in_minio_shape(cluster: ClusterDouble, listen: Any) -> None:
    stream = listen("prefix=out/&suffix=&events=s3:ObjectCreated:*")
    assert stream.status == 200
    assert stream.headers["transfer-encoding"] == "chunked"
    assert stream.headers["content-type"] == "text/event-stream"  # setEventStreamHeaders
    cluster.put_object(BUCKET, "out/abc.zip", b"zip bytes")
    line = stream.event()
    assert set(line) == {"Records"}  # struct{ Records []event.Event }, nothing else
    rec = record(line)
    assert rec["eventVersion"] == "2.0"
    assert rec["eventSource"] == "minio:s3"
    assert rec["eventName"] == "s3:ObjectCreated:Put"
    assert rec["eventTime"].endswith("Z")
    assert set(rec) >= {"userIdentity", "requestParameters", "responseElements", "s3", "source"}
    s3 = rec["s3"]
    assert s3["s3SchemaVersion"] == "1.0" and s3["configurationId"] == "Config"
    assert s3["bucket"] == {"name": BUCKET, "ownerIdentity": s3["bucket"]["ownerIdentity"],
                           "arn": f"arn:aws:s3:::{BUCKET}"}
    obj = s3["object"]
    assert obj["key"] == "out/abc.zip" and obj["size"] == len(b"zip bytes")
    assert len(obj["eTag"]) == 32 and obj["sequencer"]
    assert obj["contentType"] and obj["userMetadata"]["content-type"] == obj["contentType"]


def test_nothing_not_even_headers_before_the_first_tick_or_event(cluster: ClusterDouble,
                                                                 listen: Any) -> None:
    cluster.keepalive_interval = 60.0  # no tick during this test
    stream = listen("prefix=out/&events=s3:ObjectCreated:*", read_head=False)
    wait_for(lambda: cluster.listen_connections == 1)  # subscribed...
    assert stream.silent_for(0.3)  # ...and silent: no status line, no headers
    cluster.put_object(BUCKET, "out/first.zip", b"x")
    stream.read_head()  # the first event brings the headers with it
    assert stream.status == 200
    assert key_of(stream.event()) == "out/first.zip"


def test_keepalives_are_single_spaces_every_half_second(cluster: ClusterDouble,
                                                        listen: Any) -> None:
    started = time.monotonic()
    stream = listen("events=s3:ObjectCreated:*")  # the head comes with the first tick
    assert time.monotonic() - started >= 0.4
    assert stream.chunk() == b" "
    assert stream.chunk() == b" "


def test_ping_sends_null_records_every_whole_second(cluster: ClusterDouble,
                                                    listen: Any) -> None:
    stream = listen("events=s3:ObjectCreated:*&ping=1")
    assert json.loads(stream.line()) == {"Records": None}  # type: ignore[arg-type]
    for bad in ("0.05", "0", "x"):  # strconv.Atoi, then at least 1
        refused = listen(f"events=s3:ObjectCreated:*&ping={bad}")
        assert refused.status == 400 and b"InvalidArgument" in refused.body


def test_filters_by_prefix_suffix_and_event_name(cluster: ClusterDouble, listen: Any) -> None:
    stream = listen("prefix=out/&suffix=.zip&events=s3:ObjectCreated:*")
    cluster.put_object(BUCKET, "out/a.txt", b"x")  # wrong suffix
    cluster.put_object(BUCKET, "elsewhere/b.zip", b"x")  # wrong prefix
    minio_client(cluster).remove_object(BUCKET, "out/a.txt")  # not an ObjectCreated
    cluster.put_object(BUCKET, "out/c.zip", b"x")
    assert key_of(stream.event()) == "out/c.zip"  # per-stream order: nothing came before


def test_removed_events_when_asked(cluster: ClusterDouble, listen: Any) -> None:
    stream = listen("prefix=out/&events=s3:ObjectRemoved:*")
    cluster.put_object(BUCKET, "out/a.zip", b"x")
    minio_client(cluster).remove_object(BUCKET, "out/a.zip")
    line = stream.event()
    assert record(line)["eventName"] == "s3:ObjectRemoved:Delete"
    assert key_of(line) == "out/a.zip"
    assert "size" not in record(line)["s3"]["object"]


@pytest.mark.parametrize(("escape", "expected"), [
    (False, "out/a b+c.zip"),
    (True, "out%2Fa+b%2Bc.zip"),
])
def test_raw_or_escaped_keys(cluster: ClusterDouble, listen: Any, escape: bool,
                             expected: str) -> None:
    cluster.escape_keys = escape
    stream = listen("prefix=out/&events=s3:ObjectCreated:*")
    cluster.put_object(BUCKET, "out/a b+c.zip", b"x")
    got = key_of(stream.event())
    assert got == expected
    assert (urllib.parse.unquote_plus(got) if escape else got) == "out/a b+c.zip"


def test_listener_is_registered_before_the_response_headers(cluster: ClusterDouble,
                                                            listen: Any) -> None:
    client = minio_client(cluster)
    for i in range(20):
        stream = listen("prefix=out/&events=s3:ObjectCreated:*")
        client.put_object(BUCKET, f"out/{i}.zip", io.BytesIO(b"x"), 1)
        assert key_of(stream.event()) == f"out/{i}.zip"
        stream.close()


def test_listen_on_a_missing_bucket_is_nosuchbucket(cluster: ClusterDouble, listen: Any) -> None:
    stream = listen("events=s3:ObjectCreated:*", bucket="no-such-bucket")
    assert stream.status == 404 and b"<Code>NoSuchBucket</Code>" in stream.body


# -- S3 through the minio client ---------------------------------------------------------


def test_minio_client_round_trip_and_event_names(cluster: ClusterDouble, listen: Any) -> None:
    client = minio_client(cluster)
    stream = listen("prefix=data/&events=s3:ObjectCreated:*&events=s3:ObjectRemoved:*")
    assert client.bucket_exists(BUCKET) and not client.bucket_exists("not-there")
    client.make_bucket("made-by-client")
    assert client.bucket_exists("made-by-client")

    client.put_object(BUCKET, "data/small.bin", io.BytesIO(b"hello"), 5,
                      content_type="text/plain", metadata={"owner": "alice"})
    line = stream.event()
    assert record(line)["eventName"] == "s3:ObjectCreated:Put"
    assert record(line)["s3"]["object"]["contentType"] == "text/plain"
    assert record(line)["s3"]["object"]["userMetadata"]["X-Amz-Meta-Owner"] == "alice"
    assert client.get_object(BUCKET, "data/small.bin").read() == b"hello"
    assert client.stat_object(BUCKET, "data/small.bin").size == 5

    big = bytes(range(256)) * (6 * 1024 * 1024 // 256)
    client.put_object(BUCKET, "data/big.bin", io.BytesIO(big), len(big), part_size=5 * 1024 * 1024)
    line = stream.event()
    assert record(line)["eventName"] == "s3:ObjectCreated:CompleteMultipartUpload"
    assert record(line)["s3"]["object"]["size"] == len(big)
    assert client.get_object(BUCKET, "data/big.bin").read() == big

    client.copy_object(BUCKET, "data/copy.bin", CopySource(BUCKET, "data/small.bin"))
    assert record(stream.event())["eventName"] == "s3:ObjectCreated:Copy"

    names = [o.object_name for o in client.list_objects(BUCKET, prefix="data/", recursive=True)]
    assert names == ["data/big.bin", "data/copy.bin", "data/small.bin"]

    client.remove_object(BUCKET, "data/small.bin")
    line = stream.event()
    assert (record(line)["eventName"], key_of(line)) == ("s3:ObjectRemoved:Delete",
                                                         "data/small.bin")
    errors = list(client.remove_objects(BUCKET, [DeleteObject("data/big.bin"),
                                                 DeleteObject("data/copy.bin")]))
    assert errors == []
    assert {key_of(stream.event()), key_of(stream.event())} == {"data/big.bin", "data/copy.bin"}
    assert cluster.list_keys(BUCKET, "data/") == []


def test_s3_errors_are_s3_xml(cluster: ClusterDouble) -> None:
    client = minio_client(cluster)
    with pytest.raises(S3Error) as missing_key:
        client.get_object(BUCKET, "out/nothing.zip")
    assert missing_key.value.code == "NoSuchKey"
    with pytest.raises(S3Error) as missing_bucket:
        client.get_object("no-such-bucket", "k")
    assert missing_bucket.value.code == "NoSuchBucket"


def test_wrong_access_key_is_403_invalidaccesskeyid(cluster: ClusterDouble,
                                                    listen: Any) -> None:
    with pytest.raises(S3Error) as wrong:
        minio_client(cluster, access_key="not-the-key").get_object(BUCKET, "k")
    assert wrong.value.code == "InvalidAccessKeyId"
    assert wrong.value.response.status == 403
    stream = listen("events=s3:ObjectCreated:*", access_key="not-the-key")
    assert stream.status == 403 and b"InvalidAccessKeyId" in stream.body
    anonymous = urllib3.request("GET", f"{cluster.minio_endpoint}/{BUCKET}", retries=False)
    assert anonymous.status == 403 and b"AccessDenied" in anonymous.data


# -- fault switches ---------------------------------------------------------------------


def test_drop_streams_ends_them_and_minio_reconnects(cluster: ClusterDouble,
                                                     listen: Any) -> None:
    raw = listen("events=s3:ObjectCreated:*")
    events: queue.Queue[dict[str, Any]] = queue.Queue()
    client = minio_client(cluster)
    iterator = client.listen_bucket_notification(BUCKET, prefix="out/",
                                                 events=("s3:ObjectCreated:*",))

    def consume() -> None:
        try:
            for line in iterator:
                events.put(line)
        except Exception:  # the double stopping under it
            pass

    threading.Thread(target=consume, daemon=True).start()
    wait_for(lambda: cluster.listen_connections == 2)
    total = cluster.listen_connects_total
    cluster.drop_streams()
    assert raw.line() is None  # a clean end of the chunked body
    wait_for(lambda: cluster.listen_connects_total == total + 1)  # minio-py reconnected
    cluster.put_object(BUCKET, "out/after-drop.zip", b"x")
    assert key_of(events.get(timeout=TIMEOUT)) == "out/after-drop.zip"
    iterator._close_response()


def test_stall_streams_silences_open_streams_only(cluster: ClusterDouble, listen: Any) -> None:
    cluster.keepalive_interval = 0.05
    stalled = listen("events=s3:ObjectCreated:*")
    assert stalled.chunk() == b" "
    cluster.stall_streams()
    fresh = listen("events=s3:ObjectCreated:*")
    cluster.put_object(BUCKET, "out/x.zip", b"x")
    assert key_of(fresh.event()) == "out/x.zip"
    assert cluster.listen_connections == 2  # the stalled one is still open
    assert stalled.silent_for(0.3)  # no event, no keep-alive


def test_restart_minio_drops_streams_and_refuses_requests(cluster: ClusterDouble,
                                                          listen: Any) -> None:
    stream = listen("events=s3:ObjectCreated:*")
    cluster.restart_minio(downtime=0.5)
    assert stream.line() is None
    during = urllib3.request("GET", f"{cluster.minio_endpoint}/{BUCKET}", retries=False)
    assert during.status == 503
    refused = listen("events=s3:ObjectCreated:*")
    assert refused.status == 503
    cluster.put_object(BUCKET, "out/during.zip", b"x")  # stored, but nobody hears of it
    # minio-py retries 503s with back-off, as against a real restarting MinIO
    assert minio_client(cluster).get_object(BUCKET, "out/during.zip").read() == b"x"
    after = listen("events=s3:ObjectCreated:*")
    assert after.status == 200
    cluster.put_object(BUCKET, "out/after.zip", b"x")
    assert key_of(after.event()) == "out/after.zip"


def test_a_real_restart_refuses_connections_resets_open_ones_and_comes_back(
        cluster: ClusterDouble, listen: Any) -> None:
    port = urllib.parse.urlsplit(cluster.minio_endpoint).port
    stream = listen("events=s3:ObjectCreated:*")
    idle = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    idle.request("HEAD", f"/{BUCKET}")
    idle.getresponse().read()  # answered, and kept alive: idle now
    restart = cluster.restart_minio(refuse_for=0.5)
    assert restart is not None
    with pytest.raises(OSError):  # the stream's connection is reset mid-response
        while stream.line() is not None:
            pass
    wait_for(lambda: _refused(port))  # the listening socket is gone
    restart.join(TIMEOUT)
    with pytest.raises((OSError, http.client.HTTPException)):  # closed under it: reset
        idle.request("HEAD", f"/{BUCKET}")
        idle.getresponse()
    assert cluster._s3_server.restarts == 1
    after = listen("events=s3:ObjectCreated:*")  # back, on the same port
    assert after.status == 200
    cluster.put_object(BUCKET, "out/after.zip", b"x")
    assert key_of(after.event()) == "out/after.zip"


def _refused(port: int | None) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    except OSError:  # accepted into the closing socket's queue, then reset: look again
        return False
    return False


def test_lose_next_event(cluster: ClusterDouble, listen: Any) -> None:
    stream = listen("events=s3:ObjectCreated:*")
    cluster.lose_next_event()
    cluster.put_object(BUCKET, "out/lost.zip", b"x")
    cluster.put_object(BUCKET, "out/kept.zip", b"x")
    assert key_of(stream.event()) == "out/kept.zip"


def test_lose_next_event_under_a_prefix_spares_other_keys(cluster: ClusterDouble,
                                                          listen: Any) -> None:
    stream = listen("events=s3:ObjectCreated:*")
    cluster.lose_next_event("out/")
    cluster.put_object(BUCKET, "in/job.json", b"x")  # an input: not the one to lose
    cluster.put_object(BUCKET, "out/lost.zip", b"x")
    cluster.put_object(BUCKET, "out/kept.zip", b"x")
    keys = [key_of(stream.event()) for _ in range(2)]
    assert keys[0] == "in/job.json"
    assert "out/lost.zip" not in keys and "out/kept.zip" in keys


def test_a_slow_reader_loses_events_silently(cluster: ClusterDouble, listen: Any) -> None:
    stream = listen("prefix=out/&events=s3:ObjectCreated:*")
    cluster.readers_fall_behind(queue_size=1)
    for i in range(3):
        cluster.put_object(BUCKET, f"out/{i}.zip", b"x")
    assert cluster.storage.hub.dropped_total == 2
    cluster.readers_catch_up()
    assert key_of(stream.event()) == "out/0.zip"  # the one that fitted
    cluster.put_object(BUCKET, "out/after.zip", b"x")
    assert key_of(stream.event()) == "out/after.zip"  # healthy: 1 and 2 are simply gone
    assert cluster.listen_connections == 1


def test_a_server_without_the_listen_api(cluster: ClusterDouble, listen: Any) -> None:
    cluster.listen_api = "not-implemented"  # MinIO without listen support
    refused = listen("prefix=out/&events=s3:ObjectCreated:*")
    assert refused.status == 501 and b"<Code>NotImplemented</Code>" in refused.body
    cluster.listen_api = "ignored"  # AWS S3 ignores unknown parameters: a listing
    cluster.put_object(BUCKET, "out/a.zip", b"x")
    listed = listen("prefix=out/&events=s3:ObjectCreated:*")
    assert listed.status == 200 and "xml" in listed.headers["content-type"]
    body = listed.file.read(int(listed.headers.get("content-length", 0))) if not listed.body \
        else listed.body
    assert b"ListBucketResult" in body and b"out/a.zip" in body
    assert cluster.listen_connections == 0


@pytest.mark.parametrize("how, status, marker", [
    ("access-denied", 403, b"<Code>AccessDenied</Code>"),
    ("method-not-allowed", 405, b"<Code>MethodNotAllowed</Code>"),
    ("not-implemented", 501, b"<Code>NotImplemented</Code>"),
    ("proxy-501", 501, b"501 Not Implemented"),
    ("proxy-403", 403, b"403 Forbidden"),
])
def test_listen_refused_for_one_access_key_while_its_other_calls_work(
        cluster: ClusterDouble, listen: Any, how: str, status: int, marker: bytes) -> None:
    user_key, _ = cluster.minio_keys_for("restricted-user")
    cluster.refuse_listen(user_key, how)
    refused = listen("prefix=out/&events=s3:ObjectCreated:*", access_key=user_key)
    assert refused.status == status and marker in refused.body
    assert ("xml" in refused.headers["content-type"]) == refused.body.startswith(b"<?xml")
    served = listen("prefix=out/&events=s3:ObjectCreated:*")  # the admin's key still listens
    cluster.put_object(BUCKET, "out/a.zip", b"x")
    assert key_of(served.event()) == "out/a.zip"
    client = minio_client(cluster, access_key=user_key)  # and the user may still use S3
    assert [o.object_name for o in client.list_objects(BUCKET, "out/")] == ["out/a.zip"]
    cluster.refuse_listen(user_key, None)
    assert cluster.storage.hub.refusal(user_key) is None


def test_on_object_created_runs_before_the_event(cluster: ClusterDouble, listen: Any) -> None:
    seen: list[tuple[str, str, float]] = []
    cluster.on_object_created = lambda bucket, key, at: seen.append((bucket, key, at))
    stream = listen("events=s3:ObjectCreated:*")
    minio_client(cluster).put_object(BUCKET, "out/hook.zip", io.BytesIO(b"x"), 1)
    stream.event()
    received = time.perf_counter()
    assert [(b, k) for b, k, _ in seen] == [(BUCKET, "out/hook.zip")]
    assert seen[0][2] <= received


def test_each_event_is_its_own_line(cluster: ClusterDouble, listen: Any) -> None:
    def three_files(input_file: Path, output_dir: Path) -> None:
        for name in ("a.png", "b.png", "c.png"):
            (output_dir / name).write_bytes(b"png")

    cluster.add_service("multi", input_path="multi/in", output_path="multi/out",
                        handler=three_files)
    stream = listen("prefix=out/&events=s3:ObjectCreated:*", bucket="multi")
    cluster.put_object("multi", "in/one.txt", b"p")
    lines = [stream.event() for _ in range(3)]
    assert [len(line["Records"]) for line in lines] == [1, 1, 1]
    assert [key_of(line) for line in lines] == ["out/a.png", "out/b.png", "out/c.png"]


# -- jobs -----------------------------------------------------------------------------


def test_upload_runs_the_fake_generator(cluster: ClusterDouble, listen: Any) -> None:
    stream = listen("prefix=out/&events=s3:ObjectCreated:*")
    put_request(cluster, "job1", prompt="a red fox", seed=42, num_images=3, width=768)
    line = stream.event()
    assert key_of(line) == "out/job1.zip"
    archive = zipfile.ZipFile(io.BytesIO(minio_client(cluster).get_object(
        BUCKET, "out/job1.zip").read()))
    assert archive.namelist() == ["1.png", "2.png", "3.png"]
    for index in (1, 2, 3):
        png = archive.read(f"{index}.png")
        assert services.png_fingerprint(png) == services.expected_png_fingerprint(
            "a red fox", 42, index)
        with Image.open(io.BytesIO(png)) as image:
            assert image.text["parameters"].startswith("a red fox\nSteps: ")
            assert "Seed: 42" in image.text["parameters"]
            assert "Size: 768x512" in image.text["parameters"]
            meta = json.loads(image.text["oscar-sd"])
            assert (meta["prompt"], meta["seed"], meta["index"]) == ("a red fox", 42, index)
    assert services.expected_png_fingerprint("a red fox", 43, 1) != (
        services.expected_png_fingerprint("a red fox", 42, 1))
    job = only_job(cluster)
    assert job.done.wait(TIMEOUT) and job.status == "Succeeded"
    assert job.name.startswith("stable-diffusion-")


def test_text_input_and_default_six_images(cluster: ClusterDouble, listen: Any) -> None:
    stream = listen("prefix=out/&events=s3:ObjectCreated:*")
    cluster.put_object(BUCKET, "in/plain.txt", b"just a prompt\n")
    assert key_of(stream.event()) == "out/plain.zip"
    names = zipfile.ZipFile(io.BytesIO(cluster.get_object(BUCKET, "out/plain.zip"))).namelist()
    assert names == [f"{i}.png" for i in range(1, 7)]


def test_upstream_example_names_its_output_after_the_input(cluster: ClusterDouble,
                                                           listen: Any) -> None:
    cluster.add_service("upstream", input_path="upstream/input", output_path="upstream/output",
                        handler=services.upstream_example)
    stream = listen("prefix=output/&events=s3:ObjectCreated:*", bucket="upstream")
    cluster.put_object("upstream", "input/abc.txt", b"a lighthouse")
    assert key_of(stream.event()) == "output/abc.txt.png"


def test_a_handler_that_raises_still_uploads_and_the_job_succeeds(cluster: ClusterDouble,
                                                                   listen: Any) -> None:
    # faas-supervisor never checks the script's exit code: the job ends Succeeded.
    stream = listen("prefix=out/&events=s3:ObjectCreated:*")
    put_request(cluster, "bad", prompt="FAIL")
    assert key_of(stream.event()) == "out/bad.error.json"
    error = json.loads(cluster.get_object(BUCKET, "out/bad.error.json"))
    assert set(error) == {"error", "type"}
    job = only_job(cluster)
    assert job.done.wait(TIMEOUT) and job.status == "Succeeded"
    assert "GenerationFailed" in job.log


def test_fail_next_job_reports_a_failure_and_the_job_succeeds(cluster: ClusterDouble,
                                                              listen: Any) -> None:
    stream = listen("prefix=out/&events=s3:ObjectCreated:*")
    cluster.fail_next_job("GPU fell off the bus")
    put_request(cluster, "doomed")
    assert key_of(stream.event()) == "out/doomed.error.json"
    assert json.loads(cluster.get_object(BUCKET, "out/doomed.error.json")) == {
        "error": "GPU fell off the bus", "type": "JobFailed"}
    job = only_job(cluster)
    assert job.done.wait(TIMEOUT) and job.status == "Succeeded"
    assert "GPU fell off the bus" in job.log
    assert cluster.list_keys(BUCKET, "out/") == ["out/doomed.error.json"]  # handler not run
    put_request(cluster, "fine")
    assert key_of(stream.event()) == "out/fine.zip"


def test_kill_next_job_fails_the_job_and_writes_nothing(cluster: ClusterDouble,
                                                        listen: Any) -> None:
    stream = listen("prefix=out/&events=s3:ObjectCreated:*")
    cluster.kill_next_job()
    put_request(cluster, "killed")
    job = only_job(cluster)
    assert job.done.wait(TIMEOUT) and job.status == "Failed"
    assert "killed" in job.log
    assert cluster.list_keys(BUCKET, "out/") == []
    put_request(cluster, "next")  # only one job is killed
    assert key_of(stream.event()) == "out/next.zip"
    assert cluster.list_keys(BUCKET, "out/") == ["out/next.zip"]


def test_error_writer_handler(cluster: ClusterDouble, listen: Any) -> None:
    cluster.add_service("broken", input_path="broken/in", output_path="broken/out",
                        handler=services.error_writer("out of memory"))
    stream = listen("prefix=out/&events=s3:ObjectCreated:*", bucket="broken")
    cluster.put_object("broken", "in/j9.json", b'{"prompt": "x"}')
    assert key_of(stream.event()) == "out/j9.error.json"
    assert json.loads(cluster.get_object("broken", "out/j9.error.json"))["error"] == "out of memory"


def test_hold_and_release_jobs(cluster: ClusterDouble, listen: Any) -> None:
    stream = listen("prefix=out/&events=s3:ObjectCreated:*")
    cluster.hold_jobs()
    put_request(cluster, "held")
    job = only_job(cluster)
    assert not job.done.wait(0.2)
    assert job.status == "Pending"
    cluster.release_jobs()
    assert key_of(stream.event()) == "out/held.zip"


def test_job_delay_keeps_the_job_pending(cluster: ClusterDouble, listen: Any) -> None:
    cluster.add_service("slow", input_path="slow/in", output_path="slow/out", job_delay=0.3)
    stream = listen("prefix=out/&events=s3:ObjectCreated:*", bucket="slow")
    started = time.monotonic()
    cluster.put_object("slow", "in/s1.json", b'{"prompt": "x"}')
    assert only_job(cluster, "slow").status == "Pending"
    assert key_of(stream.event()) == "out/s1.zip"
    assert time.monotonic() - started >= 0.3


def test_an_input_suffix_filters_nothing(cluster: ClusterDouble, listen: Any) -> None:
    # OSCAR's webhook filters by the folder only (pkg/utils/minio.go): a start image or
    # any other object put beside a prompt starts a job of its own.
    cluster.add_service("picky", input_path="picky/in", output_path="picky/out",
                        input_suffix=[".json"])
    stream = listen("prefix=out/&events=s3:ObjectCreated:*", bucket="picky")
    cluster.put_object("picky", "in/also.txt", b"x")
    cluster.put_object("picky", "in/taken.json", b'{"prompt": "x"}')
    assert sorted(key_of(stream.event()) for _ in range(2)) == ["out/also.zip", "out/taken.zip"]
    assert len(cluster.jobs("picky")) == 2


def test_script_handler_gets_the_oscar_job_contract(cluster: ClusterDouble, listen: Any,
                                                    tmp_path: Path) -> None:
    script = tmp_path / "script.sh"
    script.write_text(
        '#!/bin/sh\necho "running for $INPUT_FILE_PATH"\n'
        'printf "%s\\n%s\\n%s\\n%s\\n" "$INPUT_FILE_PATH" "$TMP_INPUT_DIR" "$TMP_OUTPUT_DIR" '
        '"$GREETING" > "$TMP_OUTPUT_DIR/env.txt"\n'
        'mkdir -p "$TMP_OUTPUT_DIR/sub" && cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/sub/copy"\n'
        '[ "$(cat "$INPUT_FILE_PATH")" = "boom" ] && { echo "exploding"; exit 3; }\nexit 0\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    cluster.add_service("scripted", input_path="scripted/in", output_path="scripted/out",
                        handler=ScriptHandler(script, env={"GREETING": "hello"}))
    stream = listen("prefix=out/&events=s3:ObjectCreated:*", bucket="scripted")
    cluster.put_object("scripted", "in/deep/name.txt", b"fine")
    assert {key_of(stream.event()), key_of(stream.event())} == {"out/env.txt", "out/sub/copy"}
    input_path, input_dir, output_dir, greeting = cluster.get_object(
        "scripted", "out/env.txt").decode().splitlines()
    assert input_path.endswith("/input/name.txt")
    assert input_dir == str(Path(input_path).parent)
    assert output_dir.endswith("/output") and greeting == "hello"
    job = only_job(cluster, "scripted")
    assert job.done.wait(TIMEOUT) and job.status == "Succeeded"
    assert not Path(input_dir).exists()  # the temp dir is cleaned up
    assert "running for" in job.log

    # A script that exits 3 after writing: its files are uploaded all the same and the
    # job ends Succeeded, as faas-supervisor ignores the exit code.
    cluster.put_object("scripted", "in/boom.txt", b"boom")
    assert {key_of(stream.event()), key_of(stream.event())} == {"out/env.txt", "out/sub/copy"}
    exploded = next(j for j in cluster.jobs("scripted").values() if j is not job)
    assert exploded.done.wait(TIMEOUT) and exploded.status == "Succeeded"
    assert "exploding" in exploded.log
    assert cluster.get_object("scripted", "out/sub/copy") == b"boom"


def test_many_jobs_in_flight(cluster: ClusterDouble, listen: Any) -> None:
    stream = listen("prefix=out/&events=s3:ObjectCreated:*")
    count = 200
    for i in range(count):
        cluster.put_object(BUCKET, f"in/many{i}.txt", b"p")
    keys = {key_of(stream.event()) for _ in range(count)}
    assert keys == {f"out/many{i}.zip" for i in range(count)}


def test_event_latency_is_small(cluster: ClusterDouble, listen: Any) -> None:
    written: dict[str, float] = {}
    cluster.on_object_created = lambda bucket, key, at: written.__setitem__(key, at)
    stream = listen("prefix=lat/&events=s3:ObjectCreated:*")
    client = minio_client(cluster)
    latencies = []
    for i in range(30):
        client.put_object(BUCKET, f"lat/{i}", io.BytesIO(b"x"), 1)
        key = key_of(stream.event())
        latencies.append(time.perf_counter() - written[key])
    latencies.sort()
    # ~0.8 ms here; the bound leaves room for a busy machine, and the app's 5 ms budget
    assert latencies[len(latencies) // 2] < 0.005


# -- OSCAR REST -----------------------------------------------------------------------


def test_auth(cluster: ClusterDouble) -> None:
    base = cluster.oscar_endpoint
    assert requests.get(f"{base}/health", timeout=5).status_code == 200
    assert requests.get(f"{base}/system/info", timeout=5).status_code == 401
    assert requests.get(f"{base}/system/info", auth=("alice", "nope"),
                        timeout=5).status_code == 401
    assert requests.get(f"{base}/system/info", auth=("oscar", "oscar-pw"),
                        timeout=5).status_code == 200
    with pytest.raises(requests.HTTPError) as wrong:
        oscar_client(cluster, password="wrong").get_cluster_info()
    assert wrong.value.response.status_code == 401


def test_only_the_one_admin_account_passes_basic_auth(cluster: ClusterDouble) -> None:
    url = f"{cluster.oscar_endpoint}/system/info"
    assert requests.get(url, auth=cluster.admin, timeout=5).status_code == 200
    # OSCAR's gin.BasicAuth has one entry: any other name is refused, even with its password.
    assert requests.get(url, auth=("alice", cluster.admin[1]), timeout=5).status_code == 401


def test_bearer_tokens(oidc_cluster: ClusterDouble) -> None:
    double = oidc_cluster
    carol_token = double.sign_in("carol")["access_token"]
    url = f"{double.oscar_endpoint}/system/config"
    ok = requests.get(url, headers={"Authorization": f"Bearer {carol_token}"}, timeout=5)
    assert ok.status_code == 200
    bad = requests.get(url, headers={"Authorization": "Bearer tok-mallory"}, timeout=5)
    assert bad.status_code == 401
    # a token user gets MinIO keys of their own, and they work
    provider = ok.json()["minio_provider"]
    assert provider["access_key"] != double.minio_access_key
    assert (provider["access_key"], provider["secret_key"]) == double.user_minio_keys["carol"]
    carol = Minio(urllib.parse.urlsplit(provider["endpoint"]).netloc, provider["access_key"],
                  provider["secret_key"], secure=False)
    # ... on the buckets of the services open to her, and no others
    assert carol.bucket_exists("stable-diffusion")
    with pytest.raises(S3Error):
        carol.make_bucket("carols-bucket")


def test_info_and_config_match_the_spec(cluster: ClusterDouble) -> None:
    client = oscar_client(cluster)
    validate(client.get_cluster_info().json(), "Info")
    config = client.get_cluster_config().json()
    validate(config, "ConfigForUser")
    assert config["minio_provider"] == {
        "endpoint": cluster.minio_endpoint, "verify": False,
        "access_key": cluster.minio_access_key, "secret_key": cluster.minio_secret_key,
        "region": "us-east-1"}
    # what the app does with it: a working minio client
    provider = config["minio_provider"]
    minio = Minio(urllib.parse.urlsplit(provider["endpoint"]).netloc, provider["access_key"],
                  provider["secret_key"], secure=False)
    assert minio.bucket_exists(BUCKET)


def test_services_with_oscar_python(cluster: ClusterDouble, listen: Any) -> None:
    client = oscar_client(cluster)
    services_list = client.list_services().json()
    validate(services_list, "Service", array=True)
    assert [s["name"] for s in services_list] == [BUCKET]
    sd = client.get_service(BUCKET).json()
    validate(sd, "Service")
    assert sd["input"][0] == {"storage_provider": "minio.default", "path": f"{BUCKET}/in"}
    with pytest.raises(requests.HTTPError) as missing:
        client.get_service("nope")
    assert missing.value.response.status_code == 404 and missing.value.response.text

    stream = listen("events=s3:ObjectCreated:*")
    total = cluster.listen_connects_total
    definition = {
        "name": "rest-made", "image": "example/image", "script": "#!/bin/sh\n",
        "input": [{"storage_provider": "minio.default", "path": "rest-made/in"}],
        "output": [{"storage_provider": "minio.default", "path": "rest-made/out"}],
    }
    assert client.create_service(definition).status_code == 201
    assert stream.line() is None  # creating a service restarts MinIO
    assert minio_client(cluster).bucket_exists("rest-made")
    with pytest.raises(ValueError):
        client.create_service(definition)
    duplicate = requests.post(f"{cluster.oscar_endpoint}/system/services", json=definition,
                              auth=("oscar", "oscar-pw"), timeout=5)
    assert duplicate.status_code == 409

    # a REST-made service runs the default handler (the fake generator)
    made = listen("prefix=out/&events=s3:ObjectCreated:*", bucket="rest-made")
    cluster.put_object("rest-made", "in/r1.json", b'{"prompt": "x", "num_images": 1}')
    assert key_of(made.event()) == "out/r1.zip"

    updated = client.update_service("rest-made", {**definition, "memory": "2Gi"})
    assert updated.status_code == 204
    assert client.get_service("rest-made").json()["memory"] == "2Gi"
    with pytest.raises(ValueError):
        client.update_service("nope", {**definition, "name": "nope"})
    put_missing = requests.put(f"{cluster.oscar_endpoint}/system/services",
                               json={**definition, "name": "nope"},
                               auth=("oscar", "oscar-pw"), timeout=5)
    assert put_missing.status_code == 404

    assert client.remove_service("rest-made").status_code == 204
    assert made.line() is None  # deleting restarts MinIO too
    assert cluster.listen_connects_total == total + 1
    with pytest.raises(requests.HTTPError):
        client.remove_service("rest-made")


def test_the_job_list_comes_70_a_page_as_oscar_pages_it(cluster: ClusterDouble) -> None:
    client = oscar_client(cluster)
    cluster.hold_jobs()  # Pending jobs are listed like any other
    for i in range(150):
        cluster.put_object(BUCKET, f"in/page{i}.txt", b"p")
    pages, page = [], ""
    while True:
        answer = client.list_jobs(BUCKET, page).json()
        validate(answer, "JobsResponse")
        pages.append(sorted(answer["jobs"]))
        assert "remaining_jobs" not in answer  # Kubernetes omits it under a label selector
        page = answer.get("next_page", "")
        if not page:
            break
    assert [len(names) for names in pages] == [70, 70, 10]
    listed = [name for names in pages for name in names]
    assert listed == sorted(cluster.jobs(BUCKET))  # each once, in name order
    assert requests.get(f"{cluster.oscar_endpoint}/system/logs/{BUCKET}?page=%25%25",
                        auth=("oscar", "oscar-pw"), timeout=5).status_code == 500


def test_jobs_and_logs_with_oscar_python(cluster: ClusterDouble, listen: Any) -> None:
    client = oscar_client(cluster)
    stream = listen("prefix=out/&events=s3:ObjectCreated:*")
    put_request(cluster, "ok1")
    assert key_of(stream.event()) == "out/ok1.zip"
    cluster.kill_next_job()
    put_request(cluster, "bad1")
    for job in cluster.jobs(BUCKET).values():
        assert job.done.wait(TIMEOUT)
    listing = client.list_jobs(BUCKET).json()
    validate(listing, "JobsResponse")
    statuses = sorted(info["status"] for info in listing["jobs"].values())
    assert statuses == ["Failed", "Succeeded"]
    failed = next(name for name, info in listing["jobs"].items() if info["status"] == "Failed")
    assert "killed" in client.get_job_logs(BUCKET, failed).text

    assert client.remove_job(BUCKET, failed).status_code == 204
    assert len(client.list_jobs(BUCKET).json()["jobs"]) == 1
    assert client.remove_all_jobs(BUCKET).status_code == 204  # completed ones
    assert client.list_jobs(BUCKET).json()["jobs"] == {}
    with pytest.raises(requests.HTTPError):
        client.get_job_logs(BUCKET, "no-such-job")


def test_post_job_runs_the_service(cluster: ClusterDouble, listen: Any) -> None:
    stream = listen("prefix=out/&events=s3:ObjectCreated:*")
    answer = requests.post(f"{cluster.oscar_endpoint}/job/{BUCKET}", auth=("oscar", "oscar-pw"),
                           data=json.dumps({"prompt": "direct", "num_images": 1}), timeout=5)
    assert answer.status_code == 201 and answer.content == b""
    assert key_of(stream.event()).endswith(".zip")
    token = cluster.runner.services[BUCKET].definition["token"]
    with_token = requests.post(f"{cluster.oscar_endpoint}/job/{BUCKET}", data=b"a prompt",
                               headers={"Authorization": f"Bearer {token}"}, timeout=5)
    assert with_token.status_code == 201
    missing = requests.post(f"{cluster.oscar_endpoint}/job/nope", auth=("oscar", "oscar-pw"),
                            data=b"x", timeout=5)
    assert missing.status_code == 404
