"""Integration fixtures shared by every test that needs the TGIService API: the CRD, installed once."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tgi_operator.crd import CRD_NAME, CRD_PATH
from tgi_operator.devenv.stack import wait_for_admission_rules
from tgi_operator.devenv.testing import KubeCluster


@pytest.fixture(scope="session")
def crd_installed(cluster: KubeCluster) -> Iterator[str]:
    """The TGIService API (CRD and admission policy), applied server-side as GitOps tools do, the CRD Established
    and the policy enforced; yields the CRD's name.

    It applies the committed file (a unit test keeps it identical to what crd.py generates).
    """
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=tgi-operator-tests",
                    "-f", str(CRD_PATH))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{CRD_NAME}")
    wait_for_admission_rules(cluster)
    yield CRD_NAME
