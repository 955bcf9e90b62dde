"""``actstats train-generator STORE --layer fc6 -o GEN``."""

from __future__ import annotations

from pathlib import Path

import typer

from actstats.cli.app import app, console, handle_errors
from actstats.cli.progress import loss_bar
from actstats.pipeline.train_generator import run_train_generator
from actstats.synth.generator_train import GeneratorTrainingConfig

__all__ = ["train_generator"]


@app.command("train-generator")
@handle_errors
def train_generator(
    store: Path = typer.Argument(..., help="Activation store written by `actstats collect`."),
    layer: str = typer.Option(..., "--layer", help="Stored layer whose activations G decodes."),
    output: Path = typer.Option(..., "-o", "--output", help="Generator folder to write."),
    epochs: int = typer.Option(30, help="Passes over the store's images."),
    batch_size: int = typer.Option(64, help="Images per step."),
    lr: float = typer.Option(1e-3, help="Adam learning rate."),
    pixel_weight: float = typer.Option(10.0, help="Weight of the pixel loss."),
    feature_weight: float = typer.Option(1.0, help="Weight of the feature loss in E's layers."),
    feature_layers: list[str] | None = typer.Option(
        None, "--feature-layers", help="E's layers of the feature loss (default: --layer)."
    ),
    adversarial_weight: float = typer.Option(
        0.0, help="Weight of the adversarial loss (0: no discriminator)."
    ),
    width: int = typer.Option(32, help="Channels of G's last up-convolution."),
    hidden: int = typer.Option(256, help="Width of G's fully connected layer."),
    seed: int = typer.Option(0, help="Seed; the same seed gives the same generator on the CPU."),
    root: Path | None = typer.Option(None, help="Data root (default: the store's)."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N."),
    overwrite: bool = typer.Option(False, help="Replace a finished generator (or start over)."),
) -> None:
    """Train a decoder from a layer's activations to images (DGN-AM's generator prior)."""
    config = GeneratorTrainingConfig(
        layer=layer,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        pixel_weight=pixel_weight,
        feature_weight=feature_weight,
        feature_layers=tuple(p for item in feature_layers or [] for p in item.split(",") if p)
        or None,
        adversarial_weight=adversarial_weight,
        width=width,
        hidden=hidden,
        seed=seed,
    )
    with loss_bar("train-generator") as progress:
        trained = run_train_generator(
            store,
            layer,
            output,
            config=config,
            root=root,
            device=device,
            overwrite=overwrite,
            progress=progress,
        )
    last = trained.history[-1] if trained.history else {}
    resumed = f", resumed after epoch {trained.resumed_from}" if trained.resumed_from else ""
    console.print(
        f"wrote {trained.path}: {trained.epochs} epochs on {trained.n_images} images in "
        f"{trained.seconds:.0f} s{resumed}; final loss "
        + ", ".join(f"{k} {v:.4g}" for k, v in last.items()),
        soft_wrap=True,
    )
