"""S3 on loopback: moto's S3 server behind a front that adds what MinIO adds.

The front (a WSGI middleware) checks the access key, answers 503 while "MinIO"
restarts, serves MinIO's listen extension, and turns every completed object
write into an event for the listen streams and the job runner.  Everything
else is moto's S3 implementation, so the wire protocol is the real one.

Each front owns a private moto backend: two doubles in one process (or a test
using ``moto.mock_aws``) never see each other's buckets.
"""

from __future__ import annotations

import contextlib
import io
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import parse_qs, unquote
from xml.etree import ElementTree
from xml.sax.saxutils import escape as xml_escape

from moto.moto_server.werkzeug_app import create_backend_app
from moto.s3 import responses as s3_responses
from moto.s3.exceptions import BucketAlreadyExists, MissingBucket
from moto.s3.models import FakeBucket, S3Backend, s3_backends

from . import conditional
from .events import (
    OBJECT_CREATED_COPY,
    OBJECT_CREATED_MULTIPART,
    OBJECT_CREATED_PUT,
    OBJECT_REMOVED_DELETE,
    ObjectEvent,
)
from .listen import ListenHub, ListenStream
from .refusals import REFUSALS, XML_ERRORS

BACKEND_ENVIRON_KEY = "tests.double.s3_backend"
ACCESS_KEY_ENVIRON_KEY = "tests.double.access_key"
_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/")
_account_ids = iter(range(100_000_000_000, 999_999_999_999))
_account_lock = threading.Lock()

WriteListener = Callable[[list[ObjectEvent]], None]


# -- a moto backend of our own ----------------------------------------------------


class PrivateS3Backend(S3Backend):
    """A moto S3 backend whose bucket namespace is its own (moto's is process-wide)."""

    def __init__(self, region_name: str = "us-east-1", account_id: str | None = None) -> None:
        if account_id is None:  # moto's reset() passes the old one back in
            with _account_lock:
                account_id = str(next(_account_ids))
        super().__init__(region_name, account_id)

    def create_bucket(  # type: ignore[override]
        self, bucket_name: str, region_name: str, bucket_namespace: str | None = None
    ) -> FakeBucket:
        if bucket_name in self.buckets:
            raise BucketAlreadyExists(bucket=bucket_name)
        bucket = FakeBucket(name=bucket_name, account_id=self.account_id, region_name=region_name)
        # FakeBucket registers itself in moto's global namespace: take it back out.
        if s3_backends.bucket_accounts.get(bucket_name, (None, None))[1] == self.account_id:
            s3_backends.bucket_accounts.pop(bucket_name, None)
        self.buckets[bucket_name] = bucket
        return bucket

    def get_bucket(self, bucket_name: str) -> FakeBucket:
        try:
            return self.buckets[bucket_name]
        except KeyError:
            raise MissingBucket(bucket=bucket_name) from None


def _route_moto_to_private_backends() -> None:
    """Make moto's S3Response use the backend our front put in the WSGI environ."""
    response_cls = s3_responses.S3Response
    if getattr(response_cls, "_double_patched", False):
        return
    original = response_cls.backend

    def backend(self: Any) -> S3Backend:
        request = getattr(self, "request", None)
        private = getattr(request, "environ", {}).get(BACKEND_ENVIRON_KEY)
        return private if private is not None else original.fget(self)

    response_cls.backend = property(backend)  # type: ignore[assignment]
    response_cls._double_patched = True  # type: ignore[attr-defined]


_route_moto_to_private_backends()
_moto_app_lock = threading.Lock()
_moto_app: Any = None


def _shared_moto_app() -> Any:
    """moto's S3 Flask app is stateless once routed per request: build it once (slow)."""
    global _moto_app
    with _moto_app_lock:
        if _moto_app is None:
            _moto_app = create_backend_app("s3")
        return _moto_app


# -- the front --------------------------------------------------------------------


def error_xml(
    code: str, message: str, resource: str = "", bucket: str = "", key: str = ""
) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Error>'
        f"<Code>{code}</Code><Message>{xml_escape(message)}</Message>"
        f"<Key>{xml_escape(key)}</Key><BucketName>{xml_escape(bucket)}</BucketName>"
        f"<Resource>{xml_escape(resource)}</Resource>"
        f"<RequestId>{uuid.uuid4().hex[:16].upper()}</RequestId><HostId>double</HostId></Error>"
    ).encode()


class S3Front:
    """The WSGI app of the double's "MinIO"."""

    def __init__(self, access_key: str, secret_key: str) -> None:
        self.access_key = access_key
        self.secret_key = secret_key
        # More keys S3 accepts: the per-user keys OSCAR hands to bearer-token users.
        self.extra_access_keys: set[str] = set()
        # Whether a key may do an action on a bucket (MinIO's per-user policies):
        # ``bucket_access(access_key, bucket, action)``; None: everything.
        self.bucket_access: Callable[[str, str, str], bool] | None = None
        #: Every access key a request was signed with (tests check whose keys were used).
        self.access_keys_used: set[str] = set()
        self.backend = PrivateS3Backend()
        self.hub = ListenHub(endpoint="")
        self.on_object_created: Callable[[str, str, float], None] | None = None
        self._write_listeners: list[WriteListener] = []
        self._down_until = 0.0
        # Uploads held in flight (stall_uploads): MinIO stores an object only once its
        # whole body has arrived (cmd/object-handlers.go, PutObjectHandler), so until
        # then the key does not exist, and a delete of it finds nothing.
        self._upload_gate: tuple[str, threading.Event] | None = None
        self._stalled_lock = threading.Lock()
        self.stalled_uploads = 0
        self._moto = _shared_moto_app()
        # Conditional writes (If-None-Match / If-Match) check and write in one step.
        self._conditional_write = threading.Lock()
        #: The MinIO release whose conditional PUT this front answers like (conditional.py).
        self.minio_release = conditional.DEFAULT_RELEASE

    # -- switches ---------------------------------------------------------------

    def add_write_listener(self, listener: WriteListener) -> None:
        """Called with the events of every completed write (the job runner uses it)."""
        self._write_listeners.append(listener)

    def restart(self, downtime: float = 0.0, abort: bool = False) -> None:
        """Drop every stream (``abort``: reset their connections); answer S3 requests 503
        XMinioServerNotInitialized for ``downtime`` seconds."""
        self._down_until = time.monotonic() + downtime
        self.hub.drop_all(abort=abort)

    def stall_uploads(self, prefix: str) -> None:
        """PUTs of keys under ``prefix`` stay in flight (not stored) until resumed.

        As MinIO does: ``PutObjectHandler`` (minio/minio ``cmd/object-handlers.go``)
        stores the object, and the event fires, only once the whole body is read.
        """
        self._upload_gate = (prefix, threading.Event())

    def resume_uploads(self) -> None:
        gate, self._upload_gate = self._upload_gate, None
        if gate is not None:
            gate[1].set()

    def _maybe_stall(self, method: str, key: str) -> None:
        gate = self._upload_gate
        if gate is not None and method == "PUT" and key.startswith(gate[0]):
            with self._stalled_lock:
                self.stalled_uploads += 1
            gate[1].wait(60)

    @property
    def down(self) -> bool:
        return time.monotonic() < self._down_until

    # -- direct access for the double itself (same event path as a client PUT) --

    def make_bucket(self, bucket: str) -> None:
        if bucket not in self.backend.buckets:
            self.backend.create_bucket(bucket, "us-east-1")

    def put_object(self, bucket: str, key: str, data: bytes,
                   metadata: dict[str, str] | None = None) -> ObjectEvent:
        """Write an object without firing its event (see :meth:`written`), with
        ``metadata`` as its ``x-amz-meta-*`` fields."""
        fake = self.backend.put_object(bucket, key, data)
        if metadata:
            fake.set_metadata({f"x-amz-meta-{name}": value for name, value in metadata.items()})
        content_type, user_meta = _describe(fake)
        return ObjectEvent(OBJECT_CREATED_PUT, bucket, key, size=fake.size, etag=fake.etag,
                           content_type=content_type, user_metadata=user_meta,
                           principal=self.access_key)

    def get_object(self, bucket: str, key: str) -> bytes:
        fake = self.backend.get_object(bucket, key)
        if fake is None:
            raise KeyError(f"{bucket}/{key}")
        return fake.value

    def list_keys(self, bucket: str, prefix: str = "") -> list[str]:
        keys = self.backend.get_bucket(bucket).keys
        return sorted(k for k in list(keys.keys()) if k.startswith(prefix))

    def written(self, events: list[ObjectEvent]) -> None:
        """Objects are stored: run the hook, send the events, tell the job runner."""
        hook = self.on_object_created
        if hook is not None:
            now = time.perf_counter()
            for event in events:
                if event.created:
                    hook(event.bucket, event.key, now)
        if not self.down:  # a restarting MinIO notifies nobody
            self.hub.publish(events)
        for listener in list(self._write_listeners):
            listener(events)

    # -- WSGI -----------------------------------------------------------------------

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"]
        path = environ.get("PATH_INFO", "/").encode("latin-1").decode("utf-8", "replace")
        bucket, _, key = path.lstrip("/").partition("/")
        query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        if self.down:
            return self._error(start_response, environ, 503, "XMinioServerNotInitialized",
                               "Server not initialized, please try again.", path, bucket, key)
        listen = method == "GET" and bool(bucket) and not key and "events" in query
        action = "s3:ListenBucketNotification" if listen else "s3:" + method
        denied = self._check_access_key(environ, query, bucket, action)
        if denied is not None:
            code, message = denied
            return self._error(start_response, environ, 403, code, message, path, bucket, key)
        environ[BACKEND_ENVIRON_KEY] = self.backend
        if method == "GET" and bucket and not key and "events" in query:
            return self._listen(environ, start_response, bucket, query)
        return self._storage(environ, start_response, method, bucket, key, query)

    def _check_access_key(self, environ: dict, query: dict, bucket: str,
                          action: str) -> tuple[str, str] | None:
        auth = environ.get("HTTP_AUTHORIZATION", "")
        match = _CREDENTIAL.search(auth)
        if match is None and "X-Amz-Credential" in query:  # a presigned URL
            match = re.match(r"([^/]+)/", unquote(query["X-Amz-Credential"][0]))
        if match is None:
            return "AccessDenied", "Access Denied."
        if match.group(1) != self.access_key and match.group(1) not in self.extra_access_keys:
            return ("InvalidAccessKeyId",
                    "The Access Key Id you provided does not exist in our records.")
        self.access_keys_used.add(match.group(1))
        environ[ACCESS_KEY_ENVIRON_KEY] = match.group(1)
        allowed = self.bucket_access
        if bucket and allowed is not None and not allowed(match.group(1), bucket, action):
            return "AccessDenied", "Access Denied."
        return None

    def _error(self, start_response: Callable, environ: dict, status: int, code: str,
               message: str, resource: str, bucket: str, key: str) -> list[bytes]:
        reason = {400: "Bad Request", 403: "Forbidden", 404: "Not Found",
                  405: "Method Not Allowed", 501: "Not Implemented",
                  503: "Service Unavailable"}[status]
        body = b"" if environ["REQUEST_METHOD"] == "HEAD" else error_xml(
            code, message, resource, bucket, key)
        start_response(f"{status} {reason}", [
            ("Content-Type", "application/xml"), ("Content-Length", str(len(body))),
            ("Server", "MinIO"), ("x-amz-request-id", uuid.uuid4().hex[:16].upper())])
        return [body]

    # -- listen -------------------------------------------------------------------

    def _listen(self, environ: dict, start_response: Callable, bucket: str,
                query: dict) -> Iterable[bytes]:
        """MinIO's ListenNotificationHandler (cmd/listen-notification-handlers.go)."""
        how = self.hub.refusal(environ.get(ACCESS_KEY_ENVIRON_KEY, ""))
        if how == "ignored":  # AWS S3 ignores unknown parameters: a plain listing
            return self._storage(environ, start_response, "GET", bucket, "", query)
        if how is not None:
            return self._refuse_listen(start_response, environ, how, bucket)
        if bucket not in self.backend.buckets:
            return self._error(start_response, environ, 404, "NoSuchBucket",
                               "The specified bucket does not exist", f"/{bucket}", bucket, "")
        ping = query.get("ping", [""])[0]
        if ping and (not ping.isdigit() or int(ping) < 1):  # strconv.Atoi, then >= 1
            return self._error(start_response, environ, 400, "InvalidArgument",
                               "Invalid query params", f"/{bucket}", bucket, "")
        stream = ListenStream(
            bucket=bucket,
            prefix=query.get("prefix", [""])[0],
            suffix=query.get("suffix", [""])[0],
            events=[e for e in query.get("events", []) if e],
            keepalive_interval=self.hub.keepalive_interval,
            ping=int(ping) if ping else None,
            queue_size=self.hub.queue_size,
            sock=environ.get("werkzeug.socket"),
        )
        # Subscribed before a byte is written: once the client holds the 200, no event is
        # missed. The headers themselves go out with the first keep-alive or event.
        self.hub.open(stream)
        start_response("200 OK", [
            ("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache"),
            ("X-Accel-Buffering", "no"), ("Server", "MinIO"),
            ("x-amz-request-id", uuid.uuid4().hex[:16].upper())])
        return self._stream_body(stream)

    def _refuse_listen(self, start_response: Callable, environ: dict, how: str,
                       bucket: str) -> list[bytes]:
        status, content_type, text = REFUSALS[how]
        if text is None:
            code, message = XML_ERRORS[how]
            return self._error(start_response, environ, int(status[:3]), code, message,
                               f"/{bucket}", bucket, "")
        body = text(bucket)
        start_response(status, [("Content-Type", content_type),
                                ("Content-Length", str(len(body)))])
        return [body]

    def _stream_body(self, stream: ListenStream) -> Iterator[bytes]:
        try:
            yield from stream.body()
        finally:
            self.hub.closed(stream)

    # -- storage ------------------------------------------------------------------

    def _storage(self, environ: dict, start_response: Callable, method: str, bucket: str,
                 key: str, query: dict) -> Iterable[bytes]:
        deleted_keys: list[str] = []
        if method == "POST" and bucket and not key and "delete" in query:
            body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
            environ["wsgi.input"] = io.BytesIO(body)
            deleted_keys = _keys_in_delete_request(body)
        self._maybe_stall(method, key)
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list, exc_info: Any = None) -> None:
            captured["status"], captured["headers"] = status, headers

        # moto 5.2.5 (s3/responses.py put_object) already answers 412 PreconditionFailed
        # for If-None-Match: * on an existing key and for an If-Match that names another
        # ETag, as MinIO does (cmd/object-handlers.go PutObjectHandler -> CheckPrecondFn,
        # cmd/object-handlers-common.go checkPreconditionsPUT). MinIO evaluates the
        # condition under the object's write lock, so of two racing claims exactly one
        # wins; moto checks, then writes. The lock makes the two one step here too.
        is_conditional = method in ("PUT", "POST") and key and (
            "HTTP_IF_NONE_MATCH" in environ or "HTTP_IF_MATCH" in environ)
        with self._conditional_write if is_conditional else contextlib.nullcontext():
            if is_conditional and method == "PUT":
                refused = self._as_release(environ, bucket, key)
                if refused:
                    return self._error(start_response, environ, 404, "NoSuchKey",
                                       "The specified key does not exist.", f"/{bucket}/{key}",
                                       bucket, key)
            result = self._list_or_call(environ, capture, method, bucket, key)
            try:
                body = b"".join(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        status = captured["status"]
        if status.startswith("2"):
            events = self._events_for(environ, method, bucket, key, query, deleted_keys, body)
            if events:
                self.written(events)
        start_response(status, captured["headers"])
        return [body]

    def _list_or_call(self, environ: dict, capture: Callable, method: str, bucket: str,
                      key: str) -> Iterable[bytes]:
        """moto's answer; a listing that met a key deleted under it is made again.

        moto 5.2.5's ``list_objects`` (s3/models.py, via s3/utils.py ``_iteritems``)
        walks the bucket's key dict unguarded, so a delete in another thread makes it
        raise KeyError, or ValueError when it reads the ETag of a key whose buffer the
        delete closed meanwhile (``FakeKey.etag``): a 500. MinIO lists from its
        metacache (``cmd/metacache-set.go``) and never fails a listing because an
        object went away meanwhile; the listing is read-only, so reading it again is
        what a consistent listing would have answered."""
        listing = method == "GET" and bool(bucket) and not key
        for _ in range(9 if listing else 0):
            try:
                return self._moto(environ, capture)
            except (KeyError, ValueError):
                continue
        return self._moto(environ, capture)

    def _as_release(self, environ: dict, bucket: str, key: str) -> bool:
        """Bend a conditional PUT to ``minio_release``; True when that release refuses it."""
        release = self.minio_release
        if conditional.refuses_missing_key(release) and self.backend.get_object(
                bucket, key) is None:
            return True
        if conditional.star_is_literal(release) and environ.get(
                "HTTP_IF_NONE_MATCH", "").strip() == "*":
            del environ["HTTP_IF_NONE_MATCH"]  # a literal "*" matches no ETag: the PUT goes on
        return False

    def _events_for(self, environ: dict, method: str, bucket: str, key: str, query: dict,
                    deleted_keys: list[str], body: bytes) -> list[ObjectEvent]:
        agent = environ.get("HTTP_USER_AGENT", "")
        host = environ.get("REMOTE_ADDR", "127.0.0.1")
        if method == "PUT" and key and "partNumber" not in query and len(query) == 0:
            name = OBJECT_CREATED_COPY if environ.get("HTTP_X_AMZ_COPY_SOURCE") else (
                OBJECT_CREATED_PUT)
        elif method == "POST" and key and "uploadId" in query and b"<Error>" not in body:
            name = OBJECT_CREATED_MULTIPART
        elif method == "DELETE" and key and not query:
            return [ObjectEvent(OBJECT_REMOVED_DELETE, bucket, key, principal=self.access_key,
                                source_host=host, user_agent=agent)]
        elif deleted_keys:
            return [ObjectEvent(OBJECT_REMOVED_DELETE, bucket, k, principal=self.access_key,
                                source_host=host, user_agent=agent) for k in deleted_keys]
        else:
            return []
        fake = self.backend.get_object(bucket, key)
        if fake is None:
            return []
        content_type, user_meta = _describe(fake)
        return [ObjectEvent(name, bucket, key, size=fake.size, etag=fake.etag,
                            content_type=content_type, user_metadata=user_meta,
                            principal=self.access_key, source_host=host, user_agent=agent)]


def _describe(fake: Any) -> tuple[str, dict[str, str]]:
    """Content type and user metadata of a moto key, spelled as MinIO spells them."""
    metadata = dict(fake.metadata.items())
    content_type = next((v for k, v in metadata.items() if k.lower() == "content-type"),
                        "binary/octet-stream")
    user_meta = {k.title(): v for k, v in metadata.items() if k.lower().startswith("x-amz-meta-")}
    return content_type, user_meta


def _keys_in_delete_request(body: bytes) -> list[str]:
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        return []
    return [el.text or "" for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "Key"]
