"""Process wiring: gRPC (Cloud Run Admin v2, Operations, IAM Admin) on one port; the metadata
server, the admin API and the Hugging Face Hub stand-in (hub.py) on another; one data-plane listener per ready service.

    async with running_emulator(reconcile_seconds=0.2) as emu:
        emu.grpc_endpoint   # "127.0.0.1:P", for grpc.insecure_channel
        emu.http_url        # "http://127.0.0.1:Q", admin API + GCE_METADATA_HOST
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from aiohttp import web

from tgi_operator.emulator.access import Access
from tgi_operator.emulator.admin_http import add_admin_routes
from tgi_operator.emulator.calls import CallLog
from tgi_operator.emulator.dataplane import DataPlane
from tgi_operator.emulator.grpc_api import generic_handlers
from tgi_operator.emulator.hub import HubStandIn, add_hub_routes
from tgi_operator.emulator.iam_admin import ServiceAccounts
from tgi_operator.emulator.identity import MetadataIdentity, TokenIssuer, add_metadata_routes
from tgi_operator.emulator.operations import OperationBook
from tgi_operator.emulator.services import CloudRunServices
from tgi_operator.emulator.state import State

log = logging.getLogger(__name__)

DEFAULT_PROJECT = "emulator-project"
DEFAULT_IDENTITY = f"tgi-operator@{DEFAULT_PROJECT}.iam.gserviceaccount.com"


@dataclass
class EmulatorConfig:
    host: str = "127.0.0.1"
    grpc_port: int = 0  # 0: pick a free port
    http_port: int = 0
    reconcile_seconds: float | None = None  # None: the state file's value, else 1 s
    iam_propagation_seconds: float | None = None  # None: the state file's value, else 2 s (new accounts invisible)
    state_file: Path | None = None
    gpu_quota: int | None = None  # default limit with zonal redundancy off
    gpu_quota_zonal: int | None = None  # default limit with zonal redundancy on
    project_roles: dict[str, set[str]] = field(default_factory=dict)  # None given: the identity gets run.admin
    identity: str = DEFAULT_IDENTITY
    project_id: str | None = None  # the metadata server's project; default: from the identity's email


def _project_of(email: str) -> str:
    domain = email.partition("@")[2]
    return domain.removesuffix(".iam.gserviceaccount.com") if domain.endswith(".iam.gserviceaccount.com") else DEFAULT_PROJECT


class Emulator:
    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self.config = config or EmulatorConfig()
        c = self.config
        self.state = State.load(c.state_file) if c.state_file else State()
        if c.reconcile_seconds is not None:
            self.state.reconcile_seconds = c.reconcile_seconds
        if c.iam_propagation_seconds is not None:
            self.state.iam_propagation_seconds = c.iam_propagation_seconds
        if c.gpu_quota is not None:
            self.state.quotas.default_no_zonal = c.gpu_quota
        if c.gpu_quota_zonal is not None:
            self.state.quotas.default_zonal = c.gpu_quota_zonal
        if c.project_roles:
            for email, roles in c.project_roles.items():
                self.state.project_roles.setdefault(email, set()).update(roles)
        elif not self.state.project_roles:
            self.state.project_roles[c.identity] = {"roles/run.admin"}
        self.issuer = TokenIssuer(self.state.issuer_key_pem.encode() if self.state.issuer_key_pem else None)
        self.state.issuer_key_pem = self.issuer.key_pem().decode()
        self.identity = MetadataIdentity(email=c.identity, project_id=c.project_id or _project_of(c.identity))
        self.calls = CallLog()
        self.dataplane = DataPlane(self.issuer, host=c.host)
        self.operations = OperationBook(self.state, self.state.save)
        self.access = Access(self.state, lambda: self.identity.project_id)
        self.services = CloudRunServices(self.state, self.operations, self.dataplane, lambda: self.identity.email, self.access)
        self.accounts = ServiceAccounts(self.state, self.access)
        self.hub = HubStandIn()  # the Hugging Face Hub, for the operator's model preflight
        self._grpc: grpc.aio.Server | None = None
        self._http: web.AppRunner | None = None
        self.grpc_port = 0
        self.http_port = 0

    @property
    def grpc_endpoint(self) -> str:
        return f"{self.config.host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.config.host}:{self.http_port}"

    @property
    def metadata_host(self) -> str:
        return f"{self.config.host}:{self.http_port}"

    def env(self) -> dict[str, str]:
        """What a client process needs to reach this emulator (the operator, google-auth)."""
        return {
            "TGI_OPERATOR_CLOUD_RUN_ENDPOINT": self.grpc_endpoint,
            "GCE_METADATA_HOST": self.metadata_host,
            "GCE_METADATA_IP": self.metadata_host,
            "TGI_OPERATOR_HF_ENDPOINT": self.http_url,  # the Hub stand-in (hub.py)
        }

    def ready_document(self) -> dict[str, Any]:
        """The machine-readable ready line the CLI prints (see README.md)."""
        return {
            "ready": True,
            "grpc": self.grpc_endpoint,
            "http": self.http_url,
            "identity": self.identity.email,
            "project": self.identity.project_id,
            "env": self.env(),
        }

    async def start(self) -> None:
        self.state.save()
        server = grpc.aio.server()
        server.add_generic_rpc_handlers(generic_handlers(self.calls, self.services, self.operations, self.accounts, self.access.api_gate))
        self.grpc_port = server.add_insecure_port(f"{self.config.host}:{self.config.grpc_port}")
        if self.grpc_port == 0:
            raise OSError(f"cannot listen on {self.config.host}:{self.config.grpc_port} for gRPC")
        await server.start()
        self._grpc = server
        app = web.Application()
        add_metadata_routes(app, self.issuer, self.identity)
        add_admin_routes(app, self)
        add_hub_routes(app, self.hub)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.config.host, self.config.http_port)
        await site.start()
        self._http = runner
        self.http_port = runner.addresses[0][1]
        await self.services.resume()  # saved at once: the file is current when the ready line is printed
        self.state.batch_saves(asyncio.get_running_loop())
        log.info("emulator serving gRPC on %s and HTTP on %s", self.grpc_endpoint, self.http_url)

    async def stop(self) -> None:
        await self.services.close()
        if self._grpc is not None:
            await self._grpc.stop(grace=1.0)
            self._grpc = None
        await self.dataplane.close()
        if self._http is not None:
            await self._http.cleanup()
            self._http = None
        self.state.batch_saves(None)
        self.state.save()  # everything, including what was waiting for its batch


@asynccontextmanager
async def running_emulator(config: EmulatorConfig | None = None, **options: Any) -> AsyncIterator[Emulator]:
    """An emulator serving for the duration of the block; `options` are EmulatorConfig fields."""
    emulator = Emulator(config or EmulatorConfig(**options))
    await emulator.start()
    try:
        yield emulator
    finally:
        await emulator.stop()
