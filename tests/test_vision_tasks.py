"""The image tasks (mnist, imagenet) on their real bundled data: splits, bad input, exactly-once
evaluation, timm's optimizer/scheduler wiring, and the metric."""

from __future__ import annotations

import gzip
import logging
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from m2bench.data import sample_dir
from m2bench.errors import ConfigError, DataError
from m2bench.layers.heads import ImageClassifier
from m2bench.metrics import topk_accuracy
from m2bench.registry import create_model, get_task
from m2bench.specs import EvalContext
from tasks import mnist as mnist_task
from tasks import vision

MNIST, IMAGENET = get_task("mnist"), get_task("imagenet")
MNIST_DIR, IMAGENET_DIR = sample_dir("mnist"), sample_dir("imagenet_sample")


def _ctx(tmp_path, **kw):
    return EvalContext(device=torch.device("cpu"), precision="fp32", batch_size=kw.pop("bs", 7),
                       out_dir=tmp_path, progress=False, **kw)  # fmt: skip


def test_topk_accuracy_against_hand_computed_values():
    scores = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    # top-1 predictions 1, 0, 2, 0 against labels 1, 1, 0, 2: one right; top-2 sets {1,2}, {0,1},
    # {2,1}, {0,1}: the first two right
    assert topk_accuracy([1, 1, 0, 2], scores, ks=(1, 2)) == {"top1": 25.0, "top2": 50.0}
    # two classes (scikit-learn's binary case): argmax of the two logits
    two = np.array([[2.0, 1.0], [-1.0, 3.0], [0.5, 0.4]])
    assert topk_accuracy([0, 0, 1], two, ks=(1, 2)) == pytest.approx(
        {"top1": 100 / 3, "top2": 100.0}
    )
    # a class that never occurs as a label still counts as a (wrong) answer
    assert topk_accuracy([0, 0], np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]), ks=(1,)) == {
        "top1": 50.0
    }


def test_mnist_bundled_protocol_holds_half_the_test_set_apart():
    data = MNIST.load("test", sample=True)
    train, evals = data.tables["train"], data.tables["eval"]
    assert (len(train), len(evals)) == (10_000, 5_000)
    assert evals.names[:2] == ["t10k/1", "t10k/3"] and train.names[5000:5002] == [
        "t10k/0",
        "t10k/2",
    ]
    assert not set(train.names) & set(evals.names)
    labels = gzip.decompress((MNIST_DIR / "t10k-labels-idx1-ubyte.gz").read_bytes())[8:]
    assert evals.labels[:3] == [labels[1], labels[3], labels[5]]
    assert np.bincount(train.labels[:5000]).tolist() == [500] * 10
    assert data.provenance["data_source"] == "sample:mnist"
    assert data.provenance["data_split"].startswith("bundled")
    assert MNIST.load("test", sample=True, limit=40).tables["eval"].labels == evals.labels[:40]


def test_mnist_standard_layout_and_missing_files(tmp_path):
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz.*yann.lecun.com"):
        MNIST.load("test", data_dir=tmp_path)
    for prefix in ("train", "t10k"):  # the real test files stand in for the training files here
        for kind in ("images-idx3", "labels-idx1"):
            shutil.copy(MNIST_DIR / f"t10k-{kind}-ubyte.gz", tmp_path / f"{prefix}-{kind}-ubyte.gz")
    data = MNIST.load("test", data_dir=tmp_path)
    assert len(data.tables["train"]) == len(data.tables["eval"]) == 10_000
    assert data.provenance["data_split"].startswith("standard")


@pytest.mark.parametrize(
    ("mangle", "match"),
    [
        (lambda raw: raw[:5000], "truncated"),
        (lambda raw: b"\x00\x00\x08\x01" + raw[4:], "not an IDX image file"),
    ],
)
def test_malformed_idx_file_is_a_clear_error(tmp_path, mangle, match):
    raw = gzip.decompress((MNIST_DIR / "t10k-images-idx3-ubyte.gz").read_bytes())
    bad = tmp_path / "t10k-images-idx3-ubyte"
    bad.write_bytes(mangle(raw))
    with pytest.raises(DataError, match=match):
        mnist_task.read_idx(bad, 2051)


def test_imagenet_sample_is_one_real_image_per_class():
    data = IMAGENET.load("test", sample=True)
    images = data.tables["eval"]
    assert len(images) == 1000 and images.labels == list(range(1000))
    assert images.name(0) == "0000_n01440764.jpg" and images.load(0).size == (128, 128)
    assert data.tables["num_classes"] == 1000 and "train" not in data.tables
    assert data.provenance["data_revision"].startswith("sha256:")
    assert len(IMAGENET.load("test", sample=True, limit=10).tables["eval"]) == 10


def _image_folder(root: Path, wnids: list[str], per_class: int = 2) -> None:
    files = sorted((IMAGENET_DIR / "images").glob("*.jpg"))
    for split in ("train", "val"):
        for wnid in wnids:
            (root / split / wnid).mkdir(parents=True)
            for k, src in enumerate([f for f in files if wnid in f.name] * per_class):
                shutil.copy(src, root / split / wnid / f"{wnid}_{k}.JPEG")


def test_image_folder_class_mismatch_stops_with_a_clear_error(tmp_path):
    _image_folder(tmp_path, ["n01440764", "n01443537"])
    shutil.rmtree(tmp_path / "val" / "n01443537")
    (tmp_path / "val" / "n99999999").mkdir()
    with pytest.raises(DataError, match=r"only in val: \['n99999999'\], missing: \['n01443537'\]"):
        IMAGENET.load("test", data_dir=tmp_path)


def test_bad_images_are_counted_skipped_and_the_rest_scored_once(tmp_path, caplog):
    wnids = ["n01440764", "n01443537", "n01484850"]
    _image_folder(tmp_path / "data", wnids, per_class=3)
    val = tmp_path / "data" / "val"
    good = (val / wnids[0] / f"{wnids[0]}_0.JPEG").read_bytes()
    (val / wnids[0] / f"{wnids[0]}_1.JPEG").write_bytes(good[: len(good) // 2])  # truncated
    (val / wnids[1] / f"{wnids[1]}_2.JPEG").write_text("not an image")  # unreadable
    data = IMAGENET.load("test", data_dir=tmp_path / "data", **{"train": False})
    assert data.tables["num_classes"] == 3 and "train" not in data.tables
    model = ImageClassifier(create_model("m2_vit_tiny", img_size=32, patch_size=8), 3)
    recipe = vision.with_options(vision.Recipe(), {"workers": 0, "crop_pct": 1.0})
    _, eval_tf = vision.transforms(recipe, 32, 3)
    out = tmp_path / "out"
    out.mkdir()
    with caplog.at_level(logging.WARNING):
        metrics, perf = vision.evaluate(model, data.tables["eval"], eval_tf, _ctx(out), recipe, 3)
    assert metrics["n_eval"] == 7 and metrics["n_skipped"] == 2
    assert "skipped 2 image(s)" in caplog.text and f"{wnids[0]}_1.JPEG" in caplog.text
    lines = (out / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == 7 and len(set(lines)) == 7
    assert 0 <= metrics["top1"] <= 100 and metrics["top5"] == 100.0  # 3 classes: top-5 holds all
    assert perf["perf/infer_samples_per_s"] > 0


def test_unknown_task_option_lists_valid_ones():
    with pytest.raises(ConfigError, match="unknown task option 'lrate'.*task.lr"):
        MNIST.load("test", sample=True, lrate=0.1)


def test_timm_optimizer_keeps_m2_filter_groups_and_warms_up_then_decays():
    model = ImageClassifier(create_model("m2_vit_tiny", img_size=28, patch_size=4, in_chans=1), 10)
    recipe = vision.Recipe(lr=1e-3, weight_decay=0.05, warmup_epochs=2, warmup_lr=1e-6, min_lr=1e-5)
    opt, set_lr = vision.timm_optimizer(recipe, steps_per_epoch=10)(model, 100)
    groups = {id(p): g for g in opt.param_groups for p in g["params"]}
    assert len(groups) == sum(1 for _ in model.parameters())  # each parameter in one group
    z = [p for n, p in model.named_parameters() if n.endswith(".z")]
    assert z and all(groups[id(p)]["weight_decay"] == 0.0 for p in z)
    assert groups[id(model.head.weight)]["weight_decay"] == 0.05
    assert groups[id(model.head.bias)]["weight_decay"] == 0.0
    head_lr = []
    for step in (0, 10, 20, 60, 100):
        set_lr(step)
        head_lr.append(groups[id(model.head.weight)]["lr"])
    assert head_lr[0] == pytest.approx(1e-6)  # warm-up starts at warmup_lr
    # 20 warm-up steps; timm's cosine runs over all 100 steps (warm-up included, no prefix)
    cosine_at_20 = 1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + math.cos(math.pi * 20 / 100))
    assert head_lr[0] < head_lr[1] < head_lr[2] == pytest.approx(cosine_at_20)
    assert head_lr[2] > head_lr[3] > head_lr[4] == pytest.approx(1e-5, rel=0.05)  # cosine to min


def test_mnist_training_learns_on_real_digits(tmp_path):
    """2,000 real digits, 150 steps: M2-ViT-tiny beats chance clearly (10% is chance; ~70% seen)."""
    torch.manual_seed(0)
    data = MNIST.load("test", sample=True, limit=200)
    tr, every5th = data.tables["train"], np.arange(0, 10_000, 5)  # mnist_5k is sorted by class
    data.tables["train"] = vision.ArrayImages(
        tr.pixels[every5th], [tr.labels[i] for i in every5th], [tr.names[i] for i in every5th]
    )
    model = create_model("m2_vit_tiny", img_size=28, patch_size=4, in_chans=1)

    def build():
        torch.manual_seed(0)
        return create_model("m2_vit_tiny", img_size=28, patch_size=4, in_chans=1)

    ctx = _ctx(tmp_path, bs=64, build_model=build, max_steps=150,
               options={"workers": 0, "batch_size": 32, "warmup_epochs": 0.1})  # fmt: skip
    out = MNIST.evaluate(model, data, ctx)
    assert out.metrics["train/steps"] == 150 and out.metrics["n_eval"] == 200, out.metrics
    assert out.metrics["top1"] > 50.0, out.metrics
    assert out.tags["trained"] == "true" and "lr=0.001" in out.tags["recipe"]


def test_cli_mnist_sample_trains_evaluates_and_logs(store: Path):
    from click.testing import CliRunner

    from cli import main
    from m2bench import tracking

    args = ["run", "--task", "mnist", "--sample", "--model", "m2_vit_tiny", "--model", "vit_tiny",
            "--max-steps", "2", "--limit", "40", "task.batch_size=16", "task.workers=0",
            "--no-progress"]  # fmt: skip
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "top1" in res.output and "top5" in res.output and res.output.count("FINISHED") == 2
    tracking._client.cache_clear()
    runs = tracking.search_runs().set_index("tags.mlflow.runName")
    for name in ("m2_vit_tiny", "vit_tiny"):
        r = runs.loc[name]
        assert r["status"] == "FINISHED" and r["metrics.n_eval"] == 40
        assert r["metrics.train/steps"] == 2 and r["metrics.perf/train_samples_per_s"] > 0
        assert r["params.model.img_size"] == "28" and r["params.model.in_chans"] == "1"
        assert r["tags.data_source"] == "sample:mnist" and r["tags.trained"] == "true"
        assert r["tags.data_split"].startswith("bundled")
    preds = (store / "runs" / "mnist" / "m2_vit_tiny" / "predictions.jsonl").read_text()
    assert len(preds.splitlines()) == 40


def test_cli_imagenet_sample_evaluates_as_built(store: Path):
    from click.testing import CliRunner

    from cli import main
    from m2bench import tracking

    args = ["run", "--task", "imagenet", "--sample", "--model", "m2_vit_tiny", "--limit", "12",
            "--batch-size", "5", "task.workers=0", "--no-progress"]  # fmt: skip
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    tracking._client.cache_clear()
    r = tracking.search_runs().iloc[0]
    assert r["metrics.n_eval"] == 12 and r["tags.trained"] == "false"
    assert 0 <= r["metrics.top1"] <= r["metrics.top5"] <= 100
    assert r["params.model.img_size"] == "224"


@pytest.mark.parametrize(
    ("task", "match"),
    [(MNIST, "MNIST not available"), (IMAGENET, "ImageNet not available")],
)
def test_hub_offline_without_cache_is_a_clear_error(monkeypatch, tmp_path, task, match):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-home"))
    with pytest.raises(DataError, match=match + r".*--data-dir.*--sample"):
        task.load("test")


def test_undecodable_training_images_are_counted_and_training_goes_on(tmp_path):
    wnids = ["n01440764", "n01443537"]
    _image_folder(tmp_path / "data", wnids, per_class=4)
    bad = tmp_path / "data" / "train" / wnids[0] / f"{wnids[0]}_3.JPEG"
    bad.write_bytes(bad.read_bytes()[:300])  # truncated
    data = IMAGENET.load("test", data_dir=tmp_path / "data")
    assert len(data.tables["train"]) == 8 and data.tables["num_classes"] == 2

    def build():
        torch.manual_seed(0)
        return create_model("m2_vit_tiny", img_size=32, patch_size=8)

    opts = {"workers": 0, "batch_size": 2, "accum": 1, "auto_augment": "rand-m9-mstd0.5-inc1"}
    out = IMAGENET.evaluate(build(), data, _ctx(tmp_path, build_model=build, max_steps=6,
                                                options=opts))  # fmt: skip
    assert out.metrics["train/n_skipped"] == 1 and out.metrics["train/steps"] == 6
    assert out.metrics["n_eval"] == 8 and out.tags["trained"] == "true"
    assert "mixup=0.8" in out.tags["recipe"]  # the ImageNet recipe, mixup/cutmix included


def test_data_loading_processes_are_at_most_the_usable_cpus(monkeypatch):
    """task.workers=4 on a 2-CPU machine asked for 4 processes (DataLoader warned); now 2."""
    import os

    from tasks import vision

    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1}, raising=False)
    assert vision._loader([], None, 8, 4).num_workers == 2
    assert vision._loader([], None, 8, 0).num_workers == 0
