"""End to end on each OSCAR release: a person deploys the manifest, then generates with it.

The double plays v3.6.5, v4.0.0 and v4.1.2 (tests/double/versions.py). Alice
deploys ``manifests/stable-diffusion.yaml`` with her token through
``oscar_sd.deploy_service`` (so it is hers, as OSCAR records the owner), the
admin gives her a quota that fits it where Kueue queues her jobs (v4), and
her request goes the whole way: upload with her keys, job, result, event,
download. Its job writes the started marker with the keys OSCAR mounts
(``services.started_then``); the real worker's own run is
tests/test_end_to_end.py's (a process start per job: ~30 s here, once is enough).
"""

from __future__ import annotations

import anyio
import pytest

from oscar_sd import GenerationRequest, OscarSD, deploy_service
from tests.double import ClusterDouble, services
from tests.test_end_to_end import REAL_CLUSTER, SCRIPT

pytestmark = [pytest.mark.anyio,
              pytest.mark.skipif(bool(REAL_CLUSTER), reason="plays each release on the double")]

FDL = SCRIPT.parent / "stable-diffusion.yaml"


@pytest.mark.parametrize("versioned", ["3.6.5", "4.0.0", "4.1.2"], indirect=True)
async def test_a_person_deploys_then_generates_on_each_release(versioned: ClusterDouble) -> None:
    double = versioned
    double.default_handler = services.started_then()
    double.set_quota("alice", cpu=4000, memory=12 * 1024**3, gpu=1)
    token = double.sign_in("alice")["access_token"]

    deployed = await deploy_service(double.oscar_endpoint, fdl_path=FDL, token=token)
    assert deployed.warnings == ()  # the quota fits; a private service raises no sharing note
    assert double.runner.services["stable-diffusion"].definition["owner"] == "alice"

    request = GenerationRequest(prompt="a fox on each release", seed=7, width=64, height=64,
                                num_images=1, steps=1)
    with anyio.fail_after(300):
        async with OscarSD.connect(double.oscar_endpoint, token=token) as sd:
            result = await sd.generate(request)
    assert [path.name for path in result.images] == ["1.png"]
    result.cleanup()
