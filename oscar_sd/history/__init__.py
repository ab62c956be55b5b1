"""The history of an identity: its finished runs, in storage only it can read.

- :class:`History` the runs (add, list, fetch, delete), held to a :class:`HistoryBudget`;
- :class:`RunRecord` one run's parameters and image names;
- behind it an :class:`Objects`: :class:`DiskObjects` (a folder, local mode) or
  :class:`MinioObjects` (the identity's bucket on the cluster, :func:`cluster_history`).

Nothing here imports Gradio: the page (``oscar_sd.ui``) uses it as any program may.
"""

from ._budget import MB, HistoryBudget
from ._disk import DiskObjects, default_data_dir
from ._history import History
from ._minio import MinioObjects, cluster_history, history_bucket
from ._objects import Objects
from ._record import RunRecord, is_run_id
from ._share import MAX_SHARE_SECONDS, read_shared, share_locations

__all__ = [
    "MAX_SHARE_SECONDS",
    "MB",
    "DiskObjects",
    "History",
    "HistoryBudget",
    "MinioObjects",
    "Objects",
    "RunRecord",
    "cluster_history",
    "default_data_dir",
    "history_bucket",
    "is_run_id",
    "read_shared",
    "share_locations",
]
