"""The emulator's state: everything a restart with `--state-file` must bring back.

Plain data in memory; `save()` writes it as JSON (atomically) after every mutation when a
state file is configured. Protobuf messages are stored in their canonical JSON forms.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.cloud import iam_admin_v1, run_v2
from google.iam.v1 import policy_pb2
from google.longrunning import operations_pb2
from google.protobuf import json_format

DEFAULT_GPU_QUOTA = 10  # GPUs per project and region, for each zonal-redundancy setting
DEFAULT_IAM_PROPAGATION_SECONDS = 2.0  # how long a new service account stays invisible (see access.py)


@dataclass
class QuotaBook:
    """GPU quotas per (project, region, zonal redundancy); unset entries use the defaults."""

    default_zonal: int = DEFAULT_GPU_QUOTA
    default_no_zonal: int = DEFAULT_GPU_QUOTA
    limits: dict[tuple[str, str, bool], int] = field(default_factory=dict)

    def limit(self, project: str, region: str, zonal_redundancy: bool) -> int:
        default = self.default_zonal if zonal_redundancy else self.default_no_zonal
        return self.limits.get((project, region, zonal_redundancy), default)

    def to_json(self) -> dict[str, Any]:
        return {
            "defaultZonalRedundancy": self.default_zonal,
            "defaultNoZonalRedundancy": self.default_no_zonal,
            "limits": [
                {"project": p, "region": r, "zonalRedundancy": z, "limit": n} for (p, r, z), n in sorted(self.limits.items())
            ],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> QuotaBook:
        return cls(
            default_zonal=data["defaultZonalRedundancy"],
            default_no_zonal=data["defaultNoZonalRedundancy"],
            limits={(q["project"], q["region"], q["zonalRedundancy"]): q["limit"] for q in data["limits"]},
        )


@dataclass
class State:
    services: dict[str, run_v2.Service] = field(default_factory=dict)
    policies: dict[str, policy_pb2.Policy] = field(default_factory=dict)
    operations: dict[str, operations_pb2.Operation] = field(default_factory=dict)
    service_accounts: dict[str, iam_admin_v1.ServiceAccount] = field(default_factory=dict)  # by email
    ports: dict[str, int] = field(default_factory=dict)  # service name -> data-plane port (stable URL)
    serving: dict[str, run_v2.Service] = field(default_factory=dict)  # the service as its ready revision was made
    pending: dict[str, dict[str, Any]] = field(default_factory=dict)  # service name -> {operation, newRevision} or {operation, delete}
    revision_counters: dict[str, int] = field(default_factory=dict)
    revisions: dict[str, dict[str, str]] = field(default_factory=dict)  # service -> revision id -> its template (JSON)
    fail_next_revision: dict[str, str] = field(default_factory=dict)  # service name -> failure message
    project_roles: dict[str, set[str]] = field(default_factory=dict)  # email -> roles
    quotas: QuotaBook = field(default_factory=QuotaBook)
    reconcile_seconds: float = 1.0
    # The access model (access.py): account visibility, disabled APIs, denied permissions, org policy, groups.
    iam_propagation_seconds: float = DEFAULT_IAM_PROPAGATION_SECONDS
    account_created: dict[str, float] = field(default_factory=dict)  # email -> creation time (epoch seconds)
    disabled_apis: dict[str, set[str]] = field(default_factory=dict)  # project -> {"run.googleapis.com", ...}
    iam_denied: set[str] = field(default_factory=set)  # IAM permissions the caller lacks
    act_as_denied: set[str] = field(default_factory=set)  # accounts the caller may not act as
    allowed_domains: dict[str, list[str]] = field(default_factory=dict)  # project -> iam.allowedPolicyMemberDomains
    groups: dict[str, set[str]] = field(default_factory=dict)  # group email -> members (user:/serviceAccount:)
    issuer_key_pem: str | None = None
    path: Path | None = None

    def save(self) -> None:
        if self.path is None:
            return
        document = {
            "version": 1,
            "services": {n: json.loads(run_v2.Service.to_json(s)) for n, s in self.services.items()},
            "policies": {n: json_format.MessageToDict(p) for n, p in self.policies.items()},
            "operations": {n: json_format.MessageToDict(o) for n, o in self.operations.items()},
            "serviceAccounts": {e: json.loads(iam_admin_v1.ServiceAccount.to_json(a)) for e, a in self.service_accounts.items()},
            "ports": self.ports,
            "serving": {n: json.loads(run_v2.Service.to_json(s)) for n, s in self.serving.items()},
            "pending": self.pending,
            "revisionCounters": self.revision_counters,
            "revisions": self.revisions,
            "failNextRevision": self.fail_next_revision,
            "projectRoles": {e: sorted(r) for e, r in self.project_roles.items()},
            "quotas": self.quotas.to_json(),
            "reconcileSeconds": self.reconcile_seconds,
            "iamPropagationSeconds": self.iam_propagation_seconds,
            "accountCreated": self.account_created,
            "disabledApis": {p: sorted(s) for p, s in self.disabled_apis.items()},
            "iamDenied": sorted(self.iam_denied),
            "actAsDenied": sorted(self.act_as_denied),
            "allowedDomains": self.allowed_domains,
            "groups": {g: sorted(m) for g, m in self.groups.items()},
            "issuerKeyPem": self.issuer_key_pem,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".emulator-state-")
        with os.fdopen(fd, "w") as out:
            json.dump(document, out, indent=1, sort_keys=True)
        os.replace(tmp, self.path)  # atomic: a crash never leaves half a file

    @classmethod
    def load(cls, path: Path) -> State:
        """The state saved at `path`, or an empty state bound to it when the file does not exist yet."""
        if not path.exists():
            return cls(path=path)
        d = json.loads(path.read_text())
        return cls(
            services={n: run_v2.Service.from_json(json.dumps(s)) for n, s in d["services"].items()},
            policies={n: json_format.ParseDict(p, policy_pb2.Policy()) for n, p in d["policies"].items()},
            operations={n: json_format.ParseDict(o, operations_pb2.Operation()) for n, o in d["operations"].items()},
            service_accounts={
                e: iam_admin_v1.ServiceAccount.from_json(json.dumps(a)) for e, a in d["serviceAccounts"].items()
            },
            ports={n: int(p) for n, p in d["ports"].items()},
            serving={n: run_v2.Service.from_json(json.dumps(s)) for n, s in d["serving"].items()},
            pending=d["pending"],
            revision_counters=d["revisionCounters"],
            revisions=d.get("revisions", {}),  # absent from files written before revision names were recorded
            fail_next_revision=d["failNextRevision"],
            project_roles={e: set(r) for e, r in d["projectRoles"].items()},
            quotas=QuotaBook.from_json(d["quotas"]),
            reconcile_seconds=d["reconcileSeconds"],
            # Absent from files written before the access model: the defaults.
            iam_propagation_seconds=d.get("iamPropagationSeconds", DEFAULT_IAM_PROPAGATION_SECONDS),
            account_created=d.get("accountCreated", {}),
            disabled_apis={p: set(s) for p, s in d.get("disabledApis", {}).items()},
            iam_denied=set(d.get("iamDenied", [])),
            act_as_denied=set(d.get("actAsDenied", [])),
            allowed_domains=d.get("allowedDomains", {}),
            groups={g: set(m) for g, m in d.get("groups", {}).items()},
            issuer_key_pem=d["issuerKeyPem"],
            path=path,
        )
