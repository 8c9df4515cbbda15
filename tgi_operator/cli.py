"""The `tgi-operator` command. Each area contributes its own sub-command group."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="tgi-operator",
    help="Serve Hugging Face TGI models on Cloud Run GPUs from Kubernetes TGIService resources.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals may hold tokens
)


def _register() -> None:
    from tgi_operator.devenv.cli import dev_cluster_app

    app.add_typer(dev_cluster_app, name="dev-cluster")
    app.command("run")(__import__("tgi_operator.run_cli", fromlist=["run"]).run)
    app.command("demo")(__import__("tgi_operator.demo_cli", fromlist=["demo"]).demo)
    app.command("crd")(__import__("tgi_operator.crd", fromlist=["crd_command"]).crd_command)
    app.add_typer(__import__("tgi_operator.emulator.cli", fromlist=["emulator_app"]).emulator_app, name="emulator")
    app.command("render")(__import__("tgi_operator.render_cli", fromlist=["render"]).render)
    app.command("proxy")(__import__("tgi_operator.proxy_cli", fromlist=["proxy"]).proxy)


_register()

if __name__ == "__main__":  # pragma: no cover
    app()
