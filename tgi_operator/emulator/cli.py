"""`tgi-operator emulator`: serve the local Cloud Run + IAM emulator; `emulator token`: mint an ID token."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Annotated

import requests
import typer

from tgi_operator.emulator.server import DEFAULT_IDENTITY, Emulator, EmulatorConfig

emulator_app = typer.Typer(
    help="The local Cloud Run Admin API v2 + IAM emulator (gRPC) with its metadata server and admin API (HTTP).",
    invoke_without_command=True,
    no_args_is_help=False,
)

DEFAULT_GRPC_PORT = 8090
DEFAULT_HTTP_PORT = 8091


def _parse_roles(values: list[str]) -> dict[str, set[str]]:
    roles: dict[str, set[str]] = {}
    for value in values:
        email, sep, role = value.partition("=")
        if not sep or not email or not role.startswith("roles/"):
            raise typer.BadParameter(f"expected EMAIL=roles/NAME, got {value!r}", param_hint="--project-role")
        roles.setdefault(email, set()).add(role)
    return roles


async def _serve(config: EmulatorConfig) -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    emulator = Emulator(config)
    await emulator.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(json.dumps(emulator.ready_document()), flush=True)
    print(f"Cloud Run Admin API v2 + IAM (gRPC, insecure): {emulator.grpc_endpoint}", flush=True)
    print(f"Admin API and metadata server (HTTP):           {emulator.http_url}/emulator/v1/...", flush=True)
    for key, value in emulator.env().items():
        print(f"export {key}={value}", flush=True)
    try:
        await stop.wait()
    finally:
        await emulator.stop()
        print("emulator stopped", file=sys.stderr, flush=True)


@emulator_app.callback()
def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to listen on (loopback by default).")] = "127.0.0.1",
    grpc_port: Annotated[int, typer.Option(help="gRPC port (Cloud Run, Operations, IAM Admin); 0 picks a free one.")] = DEFAULT_GRPC_PORT,
    http_port: Annotated[int, typer.Option(help="HTTP port (admin API, metadata server); 0 picks a free one.")] = DEFAULT_HTTP_PORT,
    reconcile_seconds: Annotated[
        float | None, typer.Option(help="Delay before a write settles (default 1 s, or the state file's).", min=0)
    ] = None,
    iam_propagation_seconds: Annotated[
        float | None,
        typer.Option(
            help="How long a new service account stays invisible to reads and policy checks (default 2 s, or the state file's).",
            min=0,
        ),
    ] = None,
    state_file: Annotated[Path | None, typer.Option(help="Keep state in this JSON file across restarts.")] = None,
    gpu_quota: Annotated[
        int | None, typer.Option(help="GPUs per project and region with zonal redundancy off (default 10).", min=0)
    ] = None,
    gpu_quota_zonal: Annotated[
        int | None, typer.Option(help="GPUs per project and region with zonal redundancy on (default 10).", min=0)
    ] = None,
    project_role: Annotated[
        list[str] | None,
        typer.Option(help="EMAIL=roles/NAME held in every project (repeatable). Default: the identity holds roles/run.admin."),
    ] = None,
    identity: Annotated[str, typer.Option(help="The email the metadata server mints ID tokens for.")] = DEFAULT_IDENTITY,
    project: Annotated[str | None, typer.Option(help="The metadata server's project id (default: from --identity).")] = None,
) -> None:
    """Serve until SIGINT/SIGTERM. The first stdout line is a JSON ready document with the endpoints."""
    if ctx.invoked_subcommand is not None:
        return
    config = EmulatorConfig(
        host=host,
        grpc_port=grpc_port,
        http_port=http_port,
        reconcile_seconds=reconcile_seconds,
        iam_propagation_seconds=iam_propagation_seconds,
        state_file=state_file,
        gpu_quota=gpu_quota,
        gpu_quota_zonal=gpu_quota_zonal,
        project_roles=_parse_roles(project_role or []),
        identity=identity,
        project_id=project,
    )
    asyncio.run(_serve(config))


@emulator_app.command()
def token(
    email: Annotated[str, typer.Option(help="Whose ID token.")],
    audience: Annotated[str, typer.Option(help="The service URL the token is for.")],
    emulator: Annotated[str, typer.Option(help="The emulator's HTTP URL.")] = f"http://127.0.0.1:{DEFAULT_HTTP_PORT}",
) -> None:
    """Print an ID token minted by a running emulator (for curl -H "Authorization: Bearer ...")."""
    response = requests.post(
        f"{emulator.rstrip('/')}/emulator/v1/tokens", json={"email": email, "audience": audience}, timeout=10
    )
    if response.status_code != 200:
        typer.echo(f"error {response.status_code}: {response.text}", err=True)
        raise typer.Exit(1)
    typer.echo(response.json()["token"])
