"""The DGN-AM generator prior: training, resuming, its files, and ``sample --method generator``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from actstats import load
from actstats.cli import app
from actstats.demo.digits import load_digit_folder_tensors
from actstats.errors import ActstatsError
from actstats.io.generator import read_generator
from actstats.io.store import open_store
from actstats.net.names import parse_neuron
from actstats.net.network import Network
from actstats.pipeline.sample import load_decoder, sample_units
from actstats.pipeline.session import Session
from actstats.pipeline.train_generator import run_train_generator
from actstats.synth.generator_train import GeneratorTrainer, GeneratorTrainingConfig
from actstats.synth.jobs import Job
from actstats.synth.methods import default_config, synthesize

LAYERS = ["conv3_2", "fc6", "fc8"]
REDUCE = {"conv3_2": "grid:2"}
CLASSES = ["two", "five", "seven"]


def _config(**kw) -> GeneratorTrainingConfig:
    return GeneratorTrainingConfig(
        **{"layer": "fc6", "epochs": 8, "batch_size": 32, "width": 8, "hidden": 128} | kw
    )


@pytest.fixture(scope="module")
def models_dir(fit_digits_models) -> Path:
    return fit_digits_models(LAYERS, REDUCE, CLASSES)


@pytest.fixture(scope="module")
def trained(models_dir: Path, digits_net: Network, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("gen") / "gen"
    result = run_train_generator(
        models_dir.parent / "store.zarr", "fc6", out, config=_config(), network=digits_net
    )
    return result


def test_training_loss_falls_and_reconstructions_beat_the_mean_image(
    trained, digits_net: Network, digits_root: Path, digits_holdout_root: Path
) -> None:
    losses = [h["total"] for h in trained.history]
    assert len(losses) == 8 and losses[-1] < 0.6 * losses[0]
    G, manifest = read_generator(trained.path)
    assert manifest["layer"] == "fc6" and manifest["n_images"] == trained.n_images

    inputs, labels = load_digit_folder_tensors(digits_holdout_root)
    train_inputs, train_labels = load_digit_folder_tensors(digits_root)
    keep = np.isin(labels.numpy(), [2, 5, 7])
    held = inputs[keep][::3]
    pre = digits_net.preprocessing
    with torch.inference_mode():
        codes = digits_net.activations(held, ["fc6"])["fc6"]
        recon = pre.normalize(G(codes))
    mean_image = train_inputs[np.isin(train_labels.numpy(), [2, 5, 7])].mean(0, keepdim=True)
    # in E's feature space: a deep layer G was trained on and a middle one it was not
    for layer in ("conv3_2", "fc6", "fc7"):
        with torch.inference_mode():
            acts = digits_net.activations(torch.cat([held, recon, mean_image]), [layer])[layer]
        real, rec, avg = acts[: len(held)], acts[len(held) : -1], acts[-1:]
        err_recon = float((rec - real).pow(2).mean())
        err_mean = float((avg - real).pow(2).mean())
        assert err_recon < err_mean, (layer, err_recon, err_mean)


def test_resumed_training_equals_an_uninterrupted_run(
    models_dir: Path, digits_net: Network, tmp_path: Path
) -> None:
    store = models_dir.parent / "store.zarr"
    small = {"adversarial_weight": 0.1, "width": 4, "hidden": 16, "batch_size": 64}
    config = _config(epochs=2, **small)
    whole = run_train_generator(store, "fc6", tmp_path / "whole", config=config, network=digits_net)
    half = _config(epochs=1, **small)
    run_train_generator(store, "fc6", tmp_path / "split", config=half, network=digits_net)
    # a finished generator is kept unless --overwrite; an unfinished one resumes
    with pytest.raises(ActstatsError, match="pass --overwrite"):
        run_train_generator(store, "fc6", tmp_path / "split", config=config, network=digits_net)
    shutil.rmtree(tmp_path / "split")
    _interrupt_after_epoch(store, tmp_path / "split", half, digits_net)
    other = _config(epochs=2, **small, lr=5e-4)
    with pytest.raises(ActstatsError, match="checkpoint trained with other options"):
        run_train_generator(store, "fc6", tmp_path / "split", config=other, network=digits_net)
    resumed = run_train_generator(
        store, "fc6", tmp_path / "split", config=config, network=digits_net
    )
    assert resumed.resumed_from == 1 and resumed.epochs == 2
    a, _ = read_generator(whole.path)
    b, _ = read_generator(resumed.path)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name
    assert not (resumed.path / "checkpoint").exists()
    assert "adversarial" in whole.history[-1] and "discriminator" in whole.history[-1]


#: A decoder small enough that the adversarial tests train in seconds.
_TINY = {"width": 4, "hidden": 16, "batch_size": 32}


def _digit_pairs(net: Network, root: Path, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` digits spread over the classes: their fc6 codes and the network's inputs."""
    inputs, _ = load_digit_folder_tensors(root)
    inputs = inputs[:: len(inputs) // n][:n]
    with torch.inference_mode():
        return net.activations(inputs, ["fc6"])["fc6"], inputs


def _trainer(net: Network, codes: torch.Tensor, inputs: torch.Tensor, **kw) -> GeneratorTrainer:
    h = codes.double()
    return GeneratorTrainer(
        net,
        lambda rows: (codes[rows], inputs[rows]),
        len(codes),
        h.mean(0).numpy(),
        h.std(0).numpy(),
        _config(**_TINY | kw),
    )


def test_adversarial_term_is_the_non_saturating_gan_loss_and_reaches_the_generator(
    digits_net: Network, digits_root: Path
) -> None:
    codes, inputs = _digit_pairs(digits_net, digits_root, 16)
    on = _trainer(digits_net, codes, inputs, adversarial_weight=0.5)
    off = _trainer(digits_net, codes, inputs, adversarial_weight=0.0)
    assert off.discriminator is None and on.discriminator is not None
    params = list(on.generator.parameters())
    for a, b in zip(params, off.generator.parameters(), strict=True):
        assert torch.equal(a, b)  # one seed, one G: only the switch differs
    terms = on.losses(codes, inputs)
    # reference: -log sigmoid(D(G(h))), written out (the loss uses BCE with logits)
    reference = -torch.log(torch.sigmoid(on.discriminator(on.generator(codes)))).mean()
    torch.testing.assert_close(terms["adversarial"], reference)
    torch.testing.assert_close(
        terms["total"], 10.0 * terms["pixel"] + terms["feature"] + 0.5 * reference
    )
    # G's gradient with the switch on = without it + 0.5 x the GAN term's own gradient
    grad_on = torch.autograd.grad(terms["total"], params)
    grad_off = torch.autograd.grad(
        off.losses(codes, inputs)["total"], list(off.generator.parameters())
    )
    grad_gan = torch.autograd.grad(reference, params)
    assert any(float(g.abs().max()) > 0 for g in grad_gan)
    for g_on, g_off, g_gan in zip(grad_on, grad_off, grad_gan, strict=True):
        # float32: g_on - g_off cancels, so the rounding scales with |g_off|, not |g_gan|
        atol = 1e-5 * float(g_off.abs().max()) + 1e-7
        torch.testing.assert_close(g_on - g_off, 0.5 * g_gan, atol=atol, rtol=1e-4)


def test_adversarial_training_runs_and_both_networks_learn(
    digits_net: Network, digits_root: Path
) -> None:
    codes, inputs = _digit_pairs(digits_net, digits_root, 96)
    trainer = _trainer(digits_net, codes, inputs, adversarial_weight=0.1, epochs=8, batch_size=16)
    assert trainer.discriminator is not None
    before = [p.detach().clone() for p in trainer.discriminator.parameters()]
    history = trainer.train()
    assert len(history) == 8 and {"adversarial", "discriminator"} <= set(history[0])
    # the decoder's loss falls; the discriminator, at chance (2 ln 2) when it starts,
    # learns to tell decoded from real digits (GAN losses oscillate: its best epoch)
    assert history[-1]["total"] < 0.9 * history[0]["total"], history
    assert history[0]["discriminator"] > 1.2, history
    assert min(h["discriminator"] for h in history) < 0.7 * history[0]["discriminator"], history
    after = list(trainer.discriminator.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))


def _interrupt_after_epoch(
    store: Path, out: Path, config: GeneratorTrainingConfig, net: Network
) -> None:
    """Train one epoch and stop before the generator is written (as a killed run would)."""

    class KilledError(Exception):
        pass

    import actstats.pipeline.train_generator as tg

    original = tg.write_generator

    def killed(*args, **kwargs):
        raise KilledError

    tg.write_generator = killed
    try:
        with pytest.raises(KilledError):
            run_train_generator(store, "fc6", out, config=config, network=net)
    finally:
        tg.write_generator = original
    assert (out / "checkpoint" / "checkpoint.json").is_file()
    assert not (out / "manifest.json").exists()


def _flip_byte(folder: Path) -> None:
    path = folder / "generator.safetensors"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(folder: Path) -> None:
    path = folder / "generator.safetensors"
    path.write_bytes(path.read_bytes()[:-100])


def _edit_manifest(change) -> callable:
    def edit(folder: Path) -> None:
        manifest = json.loads((folder / "manifest.json").read_text())
        change(manifest)
        (folder / "manifest.json").write_text(json.dumps(manifest))

    return edit


def _pickle_with_matching_hash(folder: Path) -> None:
    import hashlib

    path = folder / "generator.safetensors"
    torch.save({"w": torch.zeros(3)}, path)  # a pickle, its hash recorded as if genuine
    data = path.read_bytes()
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["tensors"].update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    (folder / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_flip_byte, "size/sha256"),
        (_truncate, "size/sha256"),
        (_pickle_with_matching_hash, "not a safetensors file"),
        (_edit_manifest(lambda m: m.update(architecture="os:system")), "field architecture"),
        (_edit_manifest(lambda m: m.update(factory="evil.module:build")), "factory"),
        (_edit_manifest(lambda m: m["arch"].update(width=2 * m["arch"]["width"])), "do not fit"),
        (_edit_manifest(lambda m: m.pop("tensors")), "tensors"),
        (lambda f: (f / "manifest.json").write_text("{not json"), "not valid JSON"),
        (lambda f: (f / "manifest.json").unlink(), "no manifest.json"),
    ],
)
def test_damaged_or_code_naming_generator_files_are_refused(
    trained, tmp_path: Path, damage, message: str
) -> None:
    folder = tmp_path / "gen"
    shutil.copytree(trained.path, folder)
    damage(folder)
    with pytest.raises(ActstatsError, match=message):
        read_generator(folder)


def test_sample_generator_keeps_the_clip_box_and_is_deterministic(
    trained, models_dir: Path, digits_net: Network
) -> None:
    decoder = load_decoder(trained.path)
    # the box is DGN-AM's [0, mean + 3 std] of the store's fc6, computed here with numpy
    store = open_store(models_dir.parent / "store.zarr")
    acts = np.asarray(store.acts("fc6")[:], dtype=np.float64)
    # (units constant over the store, e.g. dead ReLUs, get G's std floor of 1e-6)
    upper = np.maximum(acts.mean(0) + 3.0 * np.maximum(acts.std(0), 1e-6), 0.0)
    lo, hi = decoder.generator.code_bounds()
    np.testing.assert_allclose(hi.numpy(), upper, rtol=1e-6, atol=1e-9)
    assert torch.all(lo == 0)

    models = load(models_dir)
    stats = Session(models, digits_net).class_stats("five")
    neuron = digits_net.resolve_neuron(parse_neuron("fc8:5"))
    for prior_weight in (0.0, 1.0):
        config = default_config("generator", steps=25, prior_weight=prior_weight, decoder=decoder)
        syn = synthesize(digits_net, [Job(neuron, stats, 3)], "generator", config=config)
        violation = syn.result.tracked["code_violation"]
        assert violation.shape == (25, 3)
        assert violation.max() <= 1e-5 * float(upper.max())  # every step's code is in the box
        assert np.all(syn.target_history[-1] > syn.target_history[0])

    def run(seed: int) -> list[np.ndarray]:
        results = sample_units(
            models,
            digits_net,
            ["fc8:2", "fc8:7"],
            "generator",
            2,
            seed,
            config=default_config("generator", steps=10, decoder=decoder),
        )
        return [r.image for per in results for r in per]

    first, again, other = run(0), run(0), run(1)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_cli_train_generator_then_sample(models_dir: Path, trained, tmp_path: Path) -> None:
    runner = CliRunner()
    store = models_dir.parent / "store.zarr"
    out = tmp_path / "gen"
    args = [
        "train-generator",
        str(store),
        "--layer",
        "fc6",
        "-o",
        str(out),
        "--epochs",
        "1",
        "--width",
        "8",
        "--hidden",
        "32",
        "--device",
        "cpu",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output
    assert len(json.loads((out / "manifest.json").read_text())["history"]) == 1
    again = runner.invoke(app, args)
    assert again.exit_code == 1 and "pass --overwrite" in again.output
    bad = runner.invoke(app, [*args[:3], "nope", *args[4:], "--overwrite"])
    assert bad.exit_code == 1 and "--layer nope" in bad.output

    sample = [
        "sample",
        str(models_dir),
        "--neuron",
        "fc8:7",
        "--method",
        "generator",
        "-n",
        "2",
        "--steps",
        "5",
        "-o",
        str(tmp_path / "s"),
        "--device",
        "cpu",
        "--network",
        "actstats.demo.digits:digits_vgg",
    ]
    missing = runner.invoke(app, sample)
    assert missing.exit_code == 1 and "needs --generator" in missing.output
    done = runner.invoke(app, [*sample, "--generator", str(trained.path)])
    assert done.exit_code == 0, done.output
    record = json.loads((tmp_path / "s" / "fc8_7" / "samples.json").read_text())
    assert record["method"] == "generator" and len(record["samples"]) == 2


def test_cli_train_generator_passes_its_options_to_one_library_call(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import actstats.cli.train_generator as cli_module
    from actstats.pipeline.train_generator import TrainedGenerator

    calls: dict = {}

    def fake(*args, **kwargs):
        calls.update(kwargs, args=args)
        return TrainedGenerator(tmp_path / "g", 3, [{"total": 0.5}], 1.0, 10, 2)

    monkeypatch.setattr(cli_module, "run_train_generator", fake)
    result = CliRunner().invoke(
        app,
        ["train-generator", "s.zarr", "--layer", "fc6", "-o", str(tmp_path / "g"),
         "--epochs", "3", "--feature-layers", "conv3_2,fc6", "--adversarial-weight", "0.5",
         "--seed", "4", "--overwrite"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert calls["args"] == (Path("s.zarr"), "fc6", tmp_path / "g") and calls["overwrite"]
    config = calls["config"]
    assert config.layer == "fc6" and config.epochs == 3 and config.seed == 4
    assert config.feature_layers == ("conv3_2", "fc6") and config.adversarial_weight == 0.5
    assert "resumed after epoch 2" in result.output
    bad = CliRunner().invoke(app, ["train-generator", "s.zarr", "--layer", "fc6", "-o", "g",
                                   "--pixel-weight", "0", "--feature-weight", "0"])  # fmt: skip
    assert bad.exit_code == 1 and "pixel or feature weight > 0" in bad.output
