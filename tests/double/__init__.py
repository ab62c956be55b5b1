"""A cluster double for the tests: OSCAR's REST API and MinIO (S3 + listen) on loopback.

See :class:`ClusterDouble`.  ``services`` holds ready-made service handlers.
"""

from . import services
from .cluster import ClusterDouble
from .events import escape_key
from .jobs import Job, ScriptFailed, ScriptHandler

__all__ = ["ClusterDouble", "Job", "ScriptFailed", "ScriptHandler", "escape_key", "services"]
