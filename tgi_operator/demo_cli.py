"""`tgi-operator demo`."""

from __future__ import annotations

from pathlib import Path

import typer


def demo(
    keep: bool = typer.Option(False, "--keep", help="Leave everything running and print how to use and stop it."),
    stop: bool = typer.Option(False, "--down", help="Stop a demo left running with --keep."),
    state_dir: Path = typer.Option(Path(".demo"), "--state-dir", help="Where the demo keeps its processes' state and logs."),
    timeout: float = typer.Option(180.0, help="Seconds to wait for the TGIService to become Ready."),
) -> None:
    """Run the whole product locally: control plane, Cloud Run emulator, operator, the seed TGIService, a chat completion."""
    from tgi_operator import demo as demo_module

    state_dir = state_dir.resolve()
    if stop:
        found = demo_module.down(state_dir)
        print("stopped the demo" if found else f"no demo in {state_dir}")
        return
    demo_module.run(state_dir, keep=keep, timeout=timeout)
