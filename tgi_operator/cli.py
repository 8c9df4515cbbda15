"""The `tgi-operator` command. Each area contributes its own sub-command (module `*_cli.py` or `*/cli.py`)."""

from __future__ import annotations

import typer

from tgi_operator.crd import crd_command
from tgi_operator.demo_cli import demo
from tgi_operator.devenv.cli import dev_cluster_app
from tgi_operator.emulator.cli import emulator_app
from tgi_operator.proxy_cli import proxy
from tgi_operator.render_cli import render
from tgi_operator.run_cli import run

app = typer.Typer(
    name="tgi-operator",
    help="Serve Hugging Face TGI models on Cloud Run GPUs from Kubernetes TGIService resources.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals may hold tokens
)
app.command("run")(run)
app.command("demo")(demo)
app.command("render")(render)
app.command("proxy")(proxy)
app.command("crd")(crd_command)
app.add_typer(emulator_app, name="emulator")
app.add_typer(dev_cluster_app, name="dev-cluster")

if __name__ == "__main__":  # pragma: no cover
    app()
