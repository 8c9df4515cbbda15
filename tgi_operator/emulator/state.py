"""The emulator's state: everything a restart with `--state-file` must bring back.

Plain data in memory; `save()` writes it as JSON (atomically) when a state file is configured: at once, or, once
the emulator runs (`batch_saves`), at most SAVE_DELAY_S after a mutation, so a burst of mutations costs one write
rather than one each (a write covers everything). Stopping the emulator writes whatever is left. Protobuf messages
are stored in their canonical JSON forms, re-encoded only when they changed (state_file.py).

The tables (services, serving revisions, policies, operations, service accounts) keep indexes (tables.py) so that
no call walks all of them: names in order for listings, GPUs that must run per pool, accounts by unique id and by
project, the policies naming each member.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.cloud import iam_admin_v1, run_v2
from google.iam.v1 import policy_pb2
from google.longrunning import operations_pb2
from google.protobuf import json_format
from google.protobuf.message import Message

from tgi_operator.emulator.gpu_quota import RunningGpus
from tgi_operator.emulator.state_file import EncodedEntries, json_object, plain
from tgi_operator.emulator.tables import Grouped, Referrers, SecondaryKey, SortedKeys, Table

DEFAULT_GPU_QUOTA = 10  # GPUs per project and region, for each zonal-redundancy setting
DEFAULT_IAM_PROPAGATION_SECONDS = 2.0  # how long a new service account stays invisible (see access.py)
SAVE_DELAY_S = 0.5  # how long a mutation may wait to be written while the emulator runs (a crash loses at most this)


def _policy_members(policy: policy_pb2.Policy) -> set[str]:
    return {m for b in policy.bindings for m in b.members}


def _service_wire(service: run_v2.Service) -> bytes:
    return run_v2.Service.pb(service).SerializeToString()


def _service_json(service: run_v2.Service) -> str:
    return plain(json.loads(run_v2.Service.to_json(service, indent=None)))


def _account_wire(account: iam_admin_v1.ServiceAccount) -> bytes:
    return iam_admin_v1.ServiceAccount.pb(account).SerializeToString()


def _account_json(account: iam_admin_v1.ServiceAccount) -> str:
    return plain(json.loads(iam_admin_v1.ServiceAccount.to_json(account, indent=None)))


def _message_wire(message: Message) -> bytes:
    return message.SerializeToString()


def _message_json(message: Message) -> str:
    return plain(json_format.MessageToDict(message))


def _table_encoders() -> dict[str, EncodedEntries]:
    """How each table's entries become JSON (the same documents as ever), with the wire bytes that tell a change."""
    return {
        "services": EncodedEntries(_service_wire, _service_json),
        "serving": EncodedEntries(_service_wire, _service_json),
        "policies": EncodedEntries(_message_wire, _message_json),
        "operations": EncodedEntries(_message_wire, _message_json),
        "serviceAccounts": EncodedEntries(_account_wire, _account_json),
    }


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
    # services, policies, operations, service_accounts and serving become Tables (tables.py) on construction:
    # mappings that keep the indexes declared further down.
    services: MutableMapping[str, run_v2.Service] = field(default_factory=dict)
    policies: MutableMapping[str, policy_pb2.Policy] = field(default_factory=dict)
    operations: MutableMapping[str, operations_pb2.Operation] = field(default_factory=dict)
    service_accounts: MutableMapping[str, iam_admin_v1.ServiceAccount] = field(default_factory=dict)  # by email
    ports: dict[str, int] = field(default_factory=dict)  # service name -> data-plane port (stable URL)
    serving: MutableMapping[str, run_v2.Service] = field(default_factory=dict)  # the service as its ready revision was made
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
    secret_accessors: dict[str, set[str]] = field(default_factory=dict)  # projects/P/secrets/S -> emails (secrets.py)
    issuer_key_pem: str | None = None
    path: Path | None = None
    # Indexes of the tables above, kept by the tables themselves (tables.py).
    service_names: SortedKeys = field(default_factory=SortedKeys, init=False, repr=False, compare=False)
    running_gpus: RunningGpus = field(default_factory=RunningGpus, init=False, repr=False, compare=False)
    policies_naming: Referrers = field(default_factory=lambda: Referrers(_policy_members), init=False, repr=False, compare=False)
    operation_names: SortedKeys = field(default_factory=SortedKeys, init=False, repr=False, compare=False)
    account_by_unique_id: SecondaryKey = field(
        default_factory=lambda: SecondaryKey(lambda a: a.unique_id), init=False, repr=False, compare=False
    )
    accounts_by_project: Grouped = field(default_factory=lambda: Grouped(lambda a: a.project_id), init=False, repr=False, compare=False)
    _loop: asyncio.AbstractEventLoop | None = field(default=None, init=False, repr=False, compare=False)
    _save_due: asyncio.TimerHandle | None = field(default=None, init=False, repr=False, compare=False)
    _encoded: dict[str, EncodedEntries] = field(default_factory=_table_encoders, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.services = Table(self.services, self.service_names)
        self.serving = Table(self.serving, self.running_gpus)
        self.policies = Table(self.policies, self.policies_naming)
        self.operations = Table(self.operations, self.operation_names)
        self.service_accounts = Table(self.service_accounts, self.account_by_unique_id, self.accounts_by_project)

    def batch_saves(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """From now on `save()` writes within SAVE_DELAY_S on `loop` (None: at once, and the next save writes what
        waits)."""
        self._loop = loop

    def save(self) -> None:
        """Persist the state (see the module docstring for when)."""
        if self.path is None:
            return
        if self._loop is None:
            self.flush()
        elif self._save_due is None:
            self._save_due = self._loop.call_later(SAVE_DELAY_S, self.flush)

    def flush(self) -> None:
        """Write the state file now."""
        if self._save_due is not None:
            self._save_due.cancel()
            self._save_due = None
        if self.path is None:
            return
        tables = {
            "services": self.services, "serving": self.serving, "policies": self.policies,
            "operations": self.operations, "serviceAccounts": self.service_accounts,
        }  # fmt: skip
        others = {
            "version": 1,
            "ports": self.ports,
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
            "secretAccessors": {k: sorted(m) for k, m in self.secret_accessors.items()},
            "issuerKeyPem": self.issuer_key_pem,
        }
        members = {key: self._encoded[key].json_object(table) for key, table in tables.items()}
        members.update({key: plain(value) for key, value in others.items()})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".emulator-state-")
        with os.fdopen(fd, "w") as out:
            out.write(json_object(members) + "\n")
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
            secret_accessors={k: set(m) for k, m in d.get("secretAccessors", {}).items()},
            groups={g: set(m) for g, m in d.get("groups", {}).items()},
            issuer_key_pem=d["issuerKeyPem"],
            path=path,
        )
