"""Integration fixtures shared by every test that needs the TGIService API: the CRD, installed once."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tgi_operator.crd import CRD_NAME, CRD_PATH
from tgi_operator.devenv.testing import KubeCluster


@pytest.fixture(scope="session")
def crd_installed(cluster: KubeCluster) -> Iterator[str]:
    """The TGIService CRD, applied (server-side, as GitOps tools do) and Established; yields its name.

    It applies the committed file (a unit test keeps it identical to what crd.py generates).
    """
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=tgi-operator-tests",
                    "-f", str(CRD_PATH))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{CRD_NAME}")
    yield CRD_NAME
