"""MinIO policies OSCAR writes for a service's buckets, per owner and visibility.

Read in grycap/oscar v4.1.2 (the same in v3.6.5):

* ``pkg/handlers/create.go``: the owner is the OIDC ``sub`` of the creator, or
  ``cluster_admin`` (``types.DefaultOwner``) for basic auth; ``visibility``
  defaults to ``private``; and ``SetPolicies`` runs only
  ``if service.Owner != types.DefaultOwner``: a service created with basic
  auth gives no OIDC user any access to its buckets.
* ``pkg/utils/minio.go`` ``SetPolicies``: the owner gets ``s3:*``; ``restricted``
  adds a group of ``allowed_users`` with ``RESTRICTED_ACTIONS``
  (``s3:ListBucket``, ``s3:GetObject``, ``s3:PutObject``, ``s3:DeleteObject``):
  no ``s3:ListenBucketNotification``, so MinIO answers their listen 403
  AccessDenied; ``public`` gives the all-users group ``s3:*``.
* ``pkg/handlers/list.go`` / ``read.go``: an OIDC user sees public services,
  their own, and restricted ones that list them.

A definition without ``owner`` is a test's own set-up (``ClusterDouble.add_service``
without ``owner=``): there ``allowed_users``, when given, is the whole rule.
"""

from __future__ import annotations

from typing import Any

DEFAULT_OWNER = "cluster_admin"
RESTRICTED_ACTIONS = frozenset(
    {"s3:ListBucket", "s3:GetObject", "s3:PutObject", "s3:DeleteObject"})
LISTEN = "s3:ListenBucketNotification"


def visibility(definition: dict[str, Any]) -> str:
    return str(definition.get("visibility") or "private").lower()


def may_see(definition: dict[str, Any], uid: str) -> bool:
    """Whether OIDC user ``uid`` may list and read the service (list.go, read.go)."""
    allowed = definition.get("allowed_users") or []
    if "owner" not in definition:
        return not allowed or uid in allowed
    if definition["owner"] == uid:
        return True
    kind = visibility(definition)
    return kind == "public" or (kind == "restricted" and uid in allowed)


def bucket_actions(definition: dict[str, Any], uid: str) -> frozenset[str] | None:
    """The actions ``uid``'s MinIO key may do on the service's shared buckets:
    None for every action (``s3:*``), an empty set for none."""
    allowed = definition.get("allowed_users") or []
    if "owner" not in definition:
        return None if not allowed or uid in allowed else frozenset()
    owner = definition["owner"]
    if owner == DEFAULT_OWNER:
        return frozenset()  # create.go: no SetPolicies for the admin's services
    if owner == uid or visibility(definition) == "public":
        return None
    if visibility(definition) == "restricted" and uid in allowed:
        return RESTRICTED_ACTIONS
    return frozenset()


def permits(actions: frozenset[str] | None, action: str) -> bool:
    """Whether ``actions`` allow ``action``: the listen action by name; any other S3
    request (``s3:GET``, ``s3:PUT``... from the double's S3 front) is one of the
    object and listing calls ``RESTRICTED_ACTIONS`` covers, for what the app uses."""
    if actions is None:
        return True
    if action == LISTEN:
        return LISTEN in actions
    return bool(actions & RESTRICTED_ACTIONS)
