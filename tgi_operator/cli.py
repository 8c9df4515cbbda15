"""The `tgi-operator` command. Each area contributes its own sub-command (module `*_cli.py` or `*/cli.py`)."""

from __future__ import annotations

import functools
import importlib.util
import sys
from collections.abc import Callable
from typing import Any

import click
import typer
from typer.core import TyperGroup

from tgi_operator.crd import crd_command
from tgi_operator.demo_cli import demo
from tgi_operator.proxy_cli import proxy
from tgi_operator.render_cli import render
from tgi_operator.run_cli import run

class _LazyGroups(TyperGroup):
    """Sub-command groups imported only when they are invoked (or listed by --help): `tgi-operator run`, the operator
    process, never imports the emulator or the dev cluster (about 3 MiB of RSS, and start-up time)."""

    lazy: dict[str, Callable[[], click.Command]] = {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*super().list_commands(ctx), *self.lazy]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if load := self.lazy.get(cmd_name):
            return load()
        return super().get_command(ctx, cmd_name)


app = typer.Typer(
    cls=_LazyGroups,
    name="tgi-operator",
    help="Serve Hugging Face TGI models on Cloud Run GPUs from Kubernetes TGIService resources.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals may hold tokens
)

# What each optional command needs beyond the operator's own dependencies: `pip install tgi-operator` (and the
# image, which also leaves the dev-only code out: .dockerignore) is the operator alone.
DEV_MODULES = ("tgi_operator.emulator", "tgi_operator.devenv", "tgi_operator.demo", "kubernetes", "cryptography",
               "rich", "openai")
PROXY_MODULES = ("kubernetes",)


def missing(modules: tuple[str, ...]) -> list[str]:
    return [name for name in modules if importlib.util.find_spec(name) is None]


def _exit_missing(command: str, extra: str, absent: list[str]) -> None:
    print(f"error: `tgi-operator {command}` needs the {extra!r} extra (missing: {', '.join(absent)}): "
          f"pip install 'tgi-operator[{extra}]'", file=sys.stderr)
    raise typer.Exit(1)


def _needs(command: str, extra: str, modules: tuple[str, ...]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Checked when the command runs (its own imports are lazy), so --help lists it in any installation."""
    def wrap(function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)  # typer reads the options from the wrapped signature
        def checked(*args: Any, **kwargs: Any) -> Any:
            if absent := missing(modules):
                _exit_missing(command, extra, absent)
            return function(*args, **kwargs)
        return checked
    return wrap


def _add_group(name: str, help_text: str, load: Callable[[], typer.Typer], extra: str, modules: tuple[str, ...]) -> None:
    """A sub-command group whose module imports its extra's packages at once: without them, a stand-in that says
    what to install, whatever arguments it is given."""
    if not (absent := missing(modules)):
        @functools.cache
        def group() -> click.Command:
            command = typer.main.get_group(load())
            command.name, command.help = name, command.help or help_text
            return command
        _LazyGroups.lazy[name] = group
        return

    @app.command(name, help=f"{help_text} Needs: pip install 'tgi-operator[{extra}]'.", add_help_option=False,
                 context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def unavailable() -> None:
        _exit_missing(name, extra, absent)


def _emulator_app() -> typer.Typer:
    from tgi_operator.emulator.cli import emulator_app

    return emulator_app


def _dev_cluster_app() -> typer.Typer:
    from tgi_operator.devenv.cli import dev_cluster_app

    return dev_cluster_app


app.command("run")(run)
app.command("demo")(_needs("demo", "dev", DEV_MODULES)(demo))
app.command("render")(render)
app.command("proxy")(_needs("proxy", "proxy", PROXY_MODULES)(proxy))
app.command("crd")(crd_command)
_add_group("emulator", "The local Cloud Run + IAM emulator (development).", _emulator_app, "dev",
           ("tgi_operator.emulator", "cryptography"))
_add_group("dev-cluster", "A local control plane, kube-apiserver + etcd (development).", _dev_cluster_app, "dev",
           ("tgi_operator.devenv", "kubernetes", "cryptography", "rich"))

if __name__ == "__main__":  # pragma: no cover
    app()
