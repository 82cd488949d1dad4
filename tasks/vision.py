"""Image classification shared by the ``imagenet`` and ``mnist`` tasks: image sets, timm's data
pipeline, optimizer and scheduler, training through ``m2bench.loop`` and top-k evaluation.

- Image sets (:class:`FileImages`, :class:`ArrayImages`, :class:`HubImages`) decode lazily. An image
  that cannot be decoded (unreadable or truncated file) is skipped and counted, never fatal: the
  run logs ``<split>/n_skipped`` and warns with the first names. Evaluation scores every other
  image exactly once (checked) and writes ``predictions.jsonl``.
- Training follows a :class:`Recipe`: timm's ``create_transform`` (RandAugment, random erasing,
  crop scale, interpolation), ``Mixup`` (mixup/cutmix with label smoothing),
  ``create_optimizer_v2`` (no weight decay on biases and norms; a model's own groups, e.g. M2's
  filters, kept) and ``create_scheduler_v2`` (warm-up then cosine, per step).
- Metrics: top-1 and top-5 accuracy in percent (scikit-learn); throughput as images per second,
  model time only (``perf/infer_samples_per_s``) and with data loading (``perf/infer_e2e_...``).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from m2bench import loop, timing
from m2bench.config import apply_options
from m2bench.encoding import autocast
from m2bench.errors import ConfigError, DataError
from m2bench.layers.heads import ImageClassifier
from m2bench.metrics import topk_accuracy
from m2bench.runtime import seed_everything
from m2bench.specs import EvalContext, EvalOutput

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")


# --- image sets ------------------------------------------------------------------------------


class FileImages:
    """Image files with labels (an ImageFolder split or a bundled folder)."""

    def __init__(self, paths: list[Path], labels: list[int], mode: str = "RGB") -> None:
        self.paths, self.labels, self.mode = list(paths), list(labels), mode

    def __len__(self) -> int:
        return len(self.paths)

    def name(self, i: int) -> str:
        return self.paths[i].name

    def load(self, i: int) -> Any:
        from PIL import Image

        with Image.open(self.paths[i]) as img:
            return img.convert(self.mode)

    def head(self, n: int | None) -> FileImages:
        return self if n is None else FileImages(self.paths[:n], self.labels[:n], self.mode)


class ArrayImages:
    """Images held as a uint8 array (N, H, W) or (N, H, W, 3), e.g. MNIST's IDX files."""

    def __init__(self, pixels: np.ndarray, labels: list[int], names: list[str]) -> None:
        self.pixels, self.labels, self.names = pixels, list(labels), list(names)

    def __len__(self) -> int:
        return len(self.labels)

    def name(self, i: int) -> str:
        return self.names[i]

    def load(self, i: int) -> Any:
        from PIL import Image

        return Image.fromarray(self.pixels[i])

    def head(self, n: int | None) -> ArrayImages:
        if n is None:
            return self
        return ArrayImages(self.pixels[:n], self.labels[:n], self.names[:n])


class HubImages:
    """A ``datasets`` split with an image column and a label column (decoded on access)."""

    def __init__(self, ds: Any, image_col: str, label_col: str, mode: str, prefix: str) -> None:
        self.ds, self.image_col, self.mode, self.prefix = ds, image_col, mode, prefix
        self.labels = list(ds[label_col])

    def __len__(self) -> int:
        return len(self.labels)

    def name(self, i: int) -> str:
        return f"{self.prefix}/{i}"

    def load(self, i: int) -> Any:
        return self.ds[i][self.image_col].convert(self.mode)

    def head(self, n: int | None) -> HubImages:
        if n is None or n >= len(self):
            return self
        out = HubImages.__new__(HubImages)
        out.ds, out.image_col, out.mode, out.prefix = (
            self.ds.select(range(n)),
            self.image_col,
            self.mode,
            self.prefix,
        )
        out.labels = self.labels[:n]
        return out


def image_folder(root: Path, split: str, classes: list[str] | None = None) -> FileImages:
    """``root/<split>/<class>/*.<image>``, classes in sorted order (torchvision's ImageFolder).

    Args:
        classes: the class list of another split (train); this split must have the same folders.

    Raises:
        DataError: the split folder is missing, has no class folders, or its classes differ.
    """
    folder = root / split
    if not folder.is_dir():
        raise DataError(f"{folder} does not exist; --data-dir must hold {split}/<class>/*.JPEG")
    found = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not found:
        raise DataError(f"{folder} has no class folders; expected {split}/<class>/*.JPEG")
    if classes is not None and found != classes:
        only_here = sorted(set(found) - set(classes))[:3]
        missing = sorted(set(classes) - set(found))[:3]
        raise DataError(
            f"class folders of {folder} differ from train's ({len(found)} vs {len(classes)}; "
            f"only in {split}: {only_here or '-'}, missing: {missing or '-'}); "
            "both splits need the same <class> folders"
        )
    paths, labels = [], []
    for index, cls in enumerate(found):
        files = sorted(p for p in (folder / cls).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        paths += files
        labels += [index] * len(files)
    if not paths:
        raise DataError(f"{folder} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
    return FileImages(paths, labels)


def folder_classes(images: FileImages) -> list[str]:
    """Class folder names of an :func:`image_folder` split, in label order."""
    names: dict[int, str] = {}
    for path, label in zip(images.paths, images.labels, strict=True):
        names.setdefault(label, path.parent.name)
    return [names[i] for i in sorted(names)]


def manifest_digest(images: FileImages, root: Path) -> str:
    """sha256 over relative paths and sizes: the identity of a large local image set."""
    import hashlib

    h = hashlib.sha256()
    for p in images.paths:
        h.update(f"{p.relative_to(root)}:{p.stat().st_size}\n".encode())
    return "manifest-sha256:" + h.hexdigest()


class _Decoded(torch.utils.data.Dataset):
    """(index, tensor or None, label): None marks an image that could not be decoded."""

    def __init__(self, images: Any, transform: Any) -> None:
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, int]:
        try:
            img = self.images.load(i)
        except (OSError, ValueError, SyntaxError) as exc:  # PIL's unreadable/truncated errors
            log.debug("skipping %s: %s", self.images.name(i), exc)
            return i, None, self.images.labels[i]
        return i, self.transform(img), self.images.labels[i]


def _collate(items: list[tuple[int, torch.Tensor | None, int]]) -> dict[str, Any]:
    good = [it for it in items if it[1] is not None]
    images = torch.stack([it[1] for it in good]) if good else None
    return {
        "index": torch.tensor([it[0] for it in good], dtype=torch.long),
        "images": images,
        "labels": torch.tensor([it[2] for it in good], dtype=torch.long),
        "bad": [it[0] for it in items if it[1] is None],
    }


def _loader(images, transform, batch_size, workers, *, shuffle=False, seed=0, drop_last=False):
    generator = torch.Generator().manual_seed(seed)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return torch.utils.data.DataLoader(
        _Decoded(images, transform), batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
        num_workers=min(workers, cpus or 1), collate_fn=_collate, generator=generator,
        persistent_workers=False, pin_memory=False,
    )  # fmt: skip


def _warn_skipped(images: Any, bad: list[int], split: str) -> None:
    if bad:
        names = ", ".join(images.name(i) for i in sorted(bad)[:3])
        log.warning(
            "%s: skipped %d image(s) that could not be decoded (e.g. %s)", split, len(bad), names
        )


# --- recipe ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipe:
    """Training and evaluation settings; each field is a ``task.<field>=`` override."""

    train: bool = True  # False: evaluate the model's weights as built (pretrained, checkpoint)
    epochs: float = 300.0
    batch_size: int = 128  # images per micro-batch
    accum: int = 1  # micro-batches per optimizer step
    opt: str = "adamw"  # timm optimizer name
    lr: float = 1e-3
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    sched: str = "cosine"  # timm scheduler name, stepped per optimizer step
    warmup_epochs: float = 5.0
    warmup_lr: float = 1e-6
    min_lr: float = 1e-5
    clip_grad: float | None = None
    mixup: float = 0.0
    cutmix: float = 0.0
    smoothing: float = 0.0  # label smoothing
    auto_augment: str | None = None  # e.g. rand-m9-mstd0.5-inc1 (RandAugment)
    re_prob: float = 0.0  # random erasing
    hflip: float = 0.5
    scale: tuple[float, float] = (0.08, 1.0)  # random-resized-crop area range
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    color_jitter: float | None = None
    interpolation: str = "bicubic"
    train_interpolation: str = "random"
    crop_pct: float = 0.9  # evaluation: resize to size / crop_pct, center-crop size
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    workers: int = 4  # data-loading processes (0: in the main process)

    def describe(self) -> str:
        """One line for the ``recipe`` run tag."""
        keys = (
            *("epochs", "batch_size", "accum", "opt", "lr", "weight_decay", "sched"),
            *("warmup_epochs", "mixup", "cutmix", "smoothing", "auto_augment", "re_prob"),
        )
        return " ".join(f"{k}={getattr(self, k)}" for k in keys)


def with_options(recipe: Recipe, options: dict[str, Any], extra: tuple[str, ...] = ()) -> Recipe:
    """``recipe`` with the ``task.<field>=`` options applied (unknown options raise)."""
    return apply_options(recipe, options, what="task", extra=extra)


def transforms(recipe: Recipe, img_size: int, in_chans: int) -> tuple[Any, Any]:
    """timm's training and evaluation transforms for ``recipe``."""
    from timm.data import create_transform

    from m2bench import register_timm_models

    register_timm_models()  # timm now loaded: let its tools see M2-ViT too
    common = dict(input_size=(in_chans, img_size, img_size), mean=recipe.mean, std=recipe.std)
    train = create_transform(
        **common, is_training=True, scale=recipe.scale, ratio=recipe.ratio, hflip=recipe.hflip,
        color_jitter=recipe.color_jitter or 0.0, auto_augment=recipe.auto_augment,
        interpolation=recipe.train_interpolation, re_prob=recipe.re_prob, re_mode="pixel",
    )  # fmt: skip
    evaluate = create_transform(
        **common, is_training=False, interpolation=recipe.interpolation, crop_pct=recipe.crop_pct
    )
    return train, evaluate


def timm_optimizer(recipe: Recipe, steps_per_epoch: int) -> loop.OptimizerFactory:
    """timm's ``create_optimizer_v2`` and ``create_scheduler_v2`` for :func:`m2bench.loop.train`."""

    def make(model: torch.nn.Module, n_steps: int):
        from timm.optim import create_optimizer_v2, param_groups_weight_decay
        from timm.scheduler import create_scheduler_v2

        special = getattr(model, "optimizer_groups", lambda lr, wd: [])(
            recipe.lr, recipe.weight_decay
        )
        taken = {id(p) for g in special for p in g["params"]}
        nwd = getattr(model, "no_weight_decay", set)()
        groups = param_groups_weight_decay(
            model, weight_decay=recipe.weight_decay, no_weight_decay_list=nwd
        )
        groups = [{**g, "params": [p for p in g["params"] if id(p) not in taken]} for g in groups]
        opt = create_optimizer_v2(
            [*special, *groups], opt=recipe.opt, lr=recipe.lr, weight_decay=recipe.weight_decay,
            betas=recipe.betas,
        )  # fmt: skip
        warmup = min(round(recipe.warmup_epochs * steps_per_epoch), n_steps - 1)
        sched, _ = create_scheduler_v2(
            opt, sched=recipe.sched, num_epochs=n_steps, warmup_epochs=warmup,
            warmup_lr=recipe.warmup_lr, min_lr=recipe.min_lr, cooldown_epochs=0,
            step_on_epochs=False, updates_per_epoch=1,
        )  # fmt: skip
        return opt, lambda step: sched.step_update(num_updates=step)

    return make


# --- train and evaluate ----------------------------------------------------------------------


def run_classification(
    model: Any, images: dict[str, Any], ctx: EvalContext, recipe: Recipe, num_classes: int
) -> EvalOutput:
    """Train (when ``recipe.train`` and a ``train`` set is given) and evaluate on ``eval``.

    Args:
        model: the runner's instance (its spec and config tell the image geometry).
        images: ``{"eval": ..., "train": ...}`` image sets (``train`` optional).
        ctx: the runner's context; ``build_model`` gives fresh weights.
        recipe: training and evaluation settings.
        num_classes: classes of the head.
    """
    if ctx.build_model is None:
        raise ConfigError("image tasks build their model: run them through `m2bench run`")
    seed = ctx.seeds[0]
    seed_everything(seed)
    backbone = ctx.build_model()
    cfg = backbone.config
    train_tf, eval_tf = transforms(recipe, cfg.img_size, cfg.in_chans)
    classifier = ImageClassifier(backbone, num_classes).to(ctx.device)
    metrics: dict[str, float] = {}
    perf: dict[str, float] = {}
    trains = recipe.train and "train" in images
    if trains:
        result, skipped = _train(classifier, images["train"], train_tf, ctx, recipe, num_classes)
        metrics.update({"train/n_images": float(len(images["train"])),
                        "train/n_skipped": float(skipped), "train/steps": float(result.steps),
                        "train_final_loss": result.losses[-1]})  # fmt: skip
        perf["perf/train_samples_per_s"] = result.samples / max(result.seconds, 1e-9)
    scores, eval_perf = evaluate(classifier, images["eval"], eval_tf, ctx, recipe, num_classes)
    metrics.update(scores)
    perf.update(eval_perf)
    perf["perf/peak_mem_gb"] = timing.peak_memory_gb(ctx.device)
    tags = {"recipe": recipe.describe() if trains else "none (evaluated as built)",
            "trained": str(trains).lower(), "img_size": str(cfg.img_size)}  # fmt: skip
    return EvalOutput(metrics, perf, {}, tags)


def _train(model, images, transform, ctx: EvalContext, recipe: Recipe, num_classes: int):
    from timm.data import Mixup
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    seed = ctx.seeds[0]
    if len(images) < recipe.batch_size:
        raise DataError(
            f"the training set has {len(images)} images, fewer than one batch "
            f"(task.batch_size={recipe.batch_size}); lower task.batch_size"
        )
    mixing = recipe.mixup > 0 or recipe.cutmix > 0
    if mixing and recipe.batch_size % 2:
        raise ConfigError(f"mixup/cutmix need an even task.batch_size, got {recipe.batch_size}")
    mixup = None
    if mixing:
        mixup = Mixup(mixup_alpha=recipe.mixup, cutmix_alpha=recipe.cutmix,
                      label_smoothing=recipe.smoothing, num_classes=num_classes)  # fmt: skip
        criterion = SoftTargetCrossEntropy()
    elif recipe.smoothing > 0:
        criterion = LabelSmoothingCrossEntropy(recipe.smoothing)
    else:
        criterion = torch.nn.CrossEntropyLoss()
    skipped: set[int] = set()

    def batches(epoch: int):
        # even batches for mixup; training may drop the last partial batch (evaluation never does)
        loader = _loader(images, transform, recipe.batch_size, recipe.workers, shuffle=True,
                         seed=seed + epoch, drop_last=True)  # fmt: skip
        for b in loader:
            skipped.update(b["bad"])
            if b["images"] is None or (mixing and len(b["labels"]) % 2):
                continue
            x = b["images"].to(ctx.device, non_blocking=True)
            y = b["labels"].to(ctx.device, non_blocking=True)
            if mixup is not None:
                x, y = mixup(x, y)
            yield x, y

    def loss_fn(m, item):
        x, y = item
        return criterion(m(x).float(), y)

    def on_step(step: int, value: float, lr: float) -> None:
        if ctx.log_metrics is not None:
            ctx.log_metrics({"train/loss": value, "train/lr": lr}, step)

    steps_per_epoch = max(1, len(images) // recipe.batch_size // recipe.accum)
    cfg = loop.TrainConfig(
        lr=recipe.lr, weight_decay=recipe.weight_decay, max_grad_norm=recipe.clip_grad,
        grad_accum=recipe.accum, epochs=ctx.epochs if ctx.epochs is not None else recipe.epochs,
        max_steps=ctx.max_steps,
    )  # fmt: skip
    result = loop.train(
        model, batches, loss_fn, len(images) // recipe.batch_size, cfg, device=ctx.device,
        precision=ctx.precision, on_step=on_step, batch_size=lambda item: item[0].shape[0],
        progress=ctx.progress, optimizer=timm_optimizer(recipe, steps_per_epoch),
    )  # fmt: skip
    _warn_skipped(images, list(skipped), "train")
    return result, len(skipped)


@torch.no_grad()
def evaluate(model, images, transform, ctx: EvalContext, recipe: Recipe, num_classes: int):
    """Top-1/top-5 over every decodable image of ``images`` exactly once; predictions.jsonl."""
    from tqdm.auto import tqdm

    model.eval()
    loader = _loader(images, transform, ctx.batch_size, recipe.workers)
    logits, labels, index, bad = [], [], [], []
    model_s = 0.0
    warm = False
    with timing.Stopwatch(ctx.device) as wall:
        for b in tqdm(loader, desc="eval", unit="batch", disable=not ctx.progress, leave=False):
            bad += b["bad"]
            if b["images"] is None:
                continue
            x = b["images"].to(ctx.device)
            if not warm:  # one untimed pass: lazy CUDA/cuDNN set-up is not model time
                with autocast(ctx.device, ctx.precision):
                    model(x)
                warm = True
            with timing.Stopwatch(ctx.device) as sw, autocast(ctx.device, ctx.precision):
                out = model(x)
            model_s += sw.seconds
            logits.append(out.float().cpu())
            labels += b["labels"].tolist()
            index += b["index"].tolist()
    if sorted(index + bad) != list(range(len(images))):
        raise RuntimeError("evaluation did not see every image exactly once")
    _warn_skipped(images, bad, "eval")
    if not index:
        raise DataError("no evaluation image could be decoded; check the image files")
    scores = torch.cat(logits).numpy()
    metrics = topk_accuracy(labels, scores, ks=(1, min(5, num_classes)), num_classes=num_classes)
    if "top5" not in metrics:
        metrics["top5"] = metrics.pop(f"top{min(5, num_classes)}")
    metrics.update({"n_eval": float(len(index)), "n_skipped": float(len(bad))})
    preds = scores.argmax(1)
    lines = [json.dumps({"image": images.name(i), "label": y, "prediction": int(p)}) + "\n"
             for i, y, p in zip(index, labels, preds, strict=True)]  # fmt: skip
    Path(ctx.out_dir, "predictions.jsonl").write_text("".join(lines))
    perf = {
        "perf/infer_samples_per_s": len(index) / max(model_s, 1e-9),
        "perf/infer_e2e_samples_per_s": len(index) / max(wall.seconds, 1e-9),
    }
    return metrics, perf
