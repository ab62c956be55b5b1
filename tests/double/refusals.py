"""The ways a listen request is refused while every other S3 call works.

* ``"access-denied"``: 403 ``AccessDenied`` XML. MinIO checks
  ``s3:ListenBucketNotification`` (``policy.ListenBucketNotificationAction``)
  in ``cmd/listen-notification-handlers.go`` before it subscribes; OSCAR's
  policy for the users of a *restricted* service grants only
  ListBucket/GetObject/PutObject/DeleteObject (grycap/oscar ``pkg/utils/minio.go``),
  so MinIO answers their listen request so.
* ``"method-not-allowed"``: 405 ``MethodNotAllowed`` XML (S3 servers that route the
  extension to no handler).
* ``"not-implemented"``: 501 ``NotImplemented`` XML (MinIO built without listen, or
  gateways).
* ``"proxy-501"``, ``"proxy-403"``: a reverse proxy in front of MinIO refusing the
  long-lived request in plain text (an Ingress or WAF rule), not S3's XML.
* ``"ignored"``: the query is ignored and the bucket listed, as AWS S3 does with
  unknown parameters.
"""

from __future__ import annotations

from collections.abc import Callable

#: How -> (status line, content type, body); "ignored" is answered by the S3 front itself.
REFUSALS: dict[str, tuple[str, str, Callable[[str], bytes] | None]] = {
    "access-denied": ("403 Forbidden", "application/xml", None),
    "method-not-allowed": ("405 Method Not Allowed", "application/xml", None),
    "not-implemented": ("501 Not Implemented", "application/xml", None),
    "proxy-501": ("501 Not Implemented", "text/plain; charset=utf-8",
                  lambda bucket: b"501 Not Implemented\n"),
    "proxy-403": ("403 Forbidden", "text/html",
                  lambda bucket: b"<html><body><h1>403 Forbidden</h1></body></html>\n"),
}
#: The S3 error code and message of the XML refusals, as MinIO spells them.
XML_ERRORS = {
    "access-denied": ("AccessDenied", "Access Denied."),
    "method-not-allowed": ("MethodNotAllowed",
                           "The specified method is not allowed against this resource."),
    "not-implemented": ("NotImplemented",
                        "A header you provided implies functionality that is not implemented"),
}
KINDS = (*REFUSALS, "ignored")
