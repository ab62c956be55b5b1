"""A cluster double for the tests: OSCAR's REST API and MinIO (S3 + listen) on loopback.

    from tests.double import ClusterDouble, services

    with OidcProviderDouble() as oidc, ClusterDouble(oidc=oidc) as double:
        double.add_service("stable-diffusion", input_path="stable-diffusion/in",
                           output_path="stable-diffusion/out", handler=services.fake_generator)
        double.oscar_endpoint, double.minio_endpoint    # http://127.0.0.1:<port>
        double.minio_access_key, double.minio_secret_key
        double.admin                                    # ("oscar", "oscar-pw"): the one account
        double.sign_in("alice@egi.eu")["access_token"]  # an OIDC user's bearer token

Files, one idea each:
- ``cluster.py``: :class:`ClusterDouble`, the switches and helpers tests use;
- ``s3.py``: moto's S3 behind a front that checks access keys, serves listen, fires events;
- ``conditional.py``: conditional PUT as each MinIO release answers it (``minio_release``);
- ``listen.py``: open listen streams and the fan-out of events to them;
- ``events.py``: MinIO's event record shape, key escaping, event-name wildcards;
- ``oscar.py``: the OSCAR REST subset (Flask): one admin account, OIDC users;
- ``versions.py``: what OSCAR 3.6.5 / 4.0.0 / 4.1.2 accept and set (``oscar_version``);
- ``policies.py``: MinIO policies per service owner and visibility (restricted: no listen);
- ``system.py``: ``/system/status`` (GPUs) and the quotas API (v4);
- ``oidc.py``: an OIDC provider on loopback (``oidc-provider-mock``);
- ``jobs.py``: uploads become jobs run the faas-supervisor way; ``ScriptHandler``;
- ``kueue.py``: per-owner quotas that hold users' jobs ``Suspended`` until admitted;
- ``services.py``: ready-made handlers (``fake_generator``, ``upstream_example``, ...);
- ``server.py``: a threaded werkzeug server on a random loopback port.
"""

from . import services
from .cluster import ClusterDouble
from .events import escape_key
from .jobs import Job, ScriptHandler
from .oidc import OidcProviderDouble

__all__ = ["ClusterDouble", "Job", "OidcProviderDouble", "ScriptHandler", "escape_key", "services"]
