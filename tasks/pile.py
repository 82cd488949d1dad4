"""Causal language modelling on The Pile: train a causal LM on packed GPT-2 BPE sequences, then
report loss, perplexity and bits per byte on the validation and test splits, overall and per
``pile_set_name``.

Papers: Gao et al., "The Pile: An 800GB Dataset of Diverse Text for Language Modeling" (2020,
arXiv 2101.00027); the M2 claim checked: Fu et al., "Monarch Mixer" (arXiv 2310.12109): a causal
M2 matches GPT-style Transformers at 360M parameters in PILE perplexity (recipe and sizes in
``shared/specs/m2_recipes.md`` §4).

Data: jsonl or jsonl.zst files of ``{"text": ..., "meta": {"pile_set_name": ...}}`` rows:
- the hub: ``monology/pile-uncopyrighted`` (``train`` streamed up to ``task.train_tokens``;
  ``validation``, ``test``);
- ``--data-dir DIR`` in the Pile's own layout: ``DIR/train/*.jsonl[.zst]``, ``DIR/val.jsonl[.zst]``,
  ``DIR/test.jsonl[.zst]`` (``train`` may be absent with ``task.train=false``);
- ``--sample``: **not the Pile** (no Pile sample is available offline): tinyshakespeare (train:
  first 90% of its lines; validation: the rest, in documents of 40 lines) and the WikiText-2
  raw test split (test, one document per article), bundled in ``tasks/data/lm_text``; their
  sets are named ``tinyshakespeare`` and ``wikitext2``.

Protocol: documents are tokenised with GPT-2's BPE (``m2bench.tokenization.gpt2_tokenizer``) and
each ends with ``<|endoftext|>``; documents shorter than the context are packed with the next
ones (as GPT-2-style pre-training does). Training windows are non-overlapping ``L + 1`` token
slices of the packed stream, reshuffled each epoch. Evaluation packs each set's documents into one
stream that starts with ``<|endoftext|>`` and scores every token exactly once in non-overlapping
windows of ``L`` (the last partial window included), so a token sees on average L/2 tokens of
context. Metrics: mean loss (nats per token, ``<|endoftext|>`` targets included), perplexity =
exp(loss), bits per byte = total nats / ln 2 / UTF-8 bytes of the documents' text.

Bad input: an empty document is skipped and counted (``<split>/n_empty_docs``); a line that is not
UTF-8 or not JSON, a row without ``text``, or a corrupt ``.zst`` stops with the file and line.

Deviations from the Hyena/M2 PILE recipe: one data pass holds the training tokens in memory
(``task.train_tokens`` bounds them; a multi-billion-token run needs a streaming loader); the
recipe's global batch (256 x 2048) is ``task.batch_size`` x ``task.accum``.
"""

from __future__ import annotations

import io
import json
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from m2bench import data as mdata
from m2bench import distributed, loop, timing
from m2bench.config import apply_options, check_ranges
from m2bench.encoding import autocast
from m2bench.errors import ConfigError, DataError
from m2bench.registry import register_task
from m2bench.runtime import seed_everything
from m2bench.specs import DataSource, EvalContext, EvalOutput, LoadedData, TaskSpec
from m2bench.tokenization import GPT2_EOS, GPT2_VOCAB, gpt2_tokenizer

log = logging.getLogger(__name__)
HUB = "monology/pile-uncopyrighted"
SAMPLE = "lm_text"
SAMPLE_SHA256 = (
    ("tinyshakespeare.txt", "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"),
    ("wiki.test.raw", "4f3e427e4aff23acff917a8a51aeae21bf12832256e26914c8fc250dcef4103c"),
)
EVAL_SPLITS = ("validation", "test")
FILES = {"validation": "val", "test": "test"}


@dataclass(frozen=True)
class Recipe:
    """Training settings (``task.<field>=``); defaults: the Hyena/safari PILE recipe, scaled."""

    train: bool = True
    train_tokens: int = 50_000_000  # training tokens read (the hub stream stops there)
    epochs: float = 1.0
    seq_len: int = 0  # context L; 0: the model's max_len
    batch_size: int = 16  # sequences per micro-batch
    accum: int = 1
    lr: float = 6e-4
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_frac: float = 0.01
    min_lr_frac: float = 0.1  # cosine floor: 0.1 x lr
    clip_grad: float = 1.0
    checkpoint_every: int = 500  # optimizer steps between checkpoints (OUT/.../checkpoints)
    eval_batch_size: int = 0  # 0: --batch-size
    revision: str = "main"


def _recipe(options: dict[str, Any]) -> Recipe:
    recipe = apply_options(Recipe(), options, what="pile")
    check_ranges(
        recipe,
        positive=("train_tokens", "epochs", "batch_size", "accum", "lr", "checkpoint_every"),
        non_negative=("seq_len", "eval_batch_size", "weight_decay", "warmup_frac", "min_lr_frac",
                      "clip_grad"),
    )  # fmt: skip
    if recipe.seq_len == 1:
        raise ConfigError("task.seq_len must be >= 2 (a context and a next token), or 0")
    return recipe


SPEC = TaskSpec(
    name="pile",
    version=1,
    kind="lm",
    metric="ppl",
    higher_is_better=False,
    source=DataSource(
        hf=HUB,
        revision="main",
        license="The Pile's component licenses (pile-uncopyrighted: copyrighted sets removed); "
        "sample: CC BY-SA 3.0 (WikiText-2), public domain (Shakespeare)",
        sample=SAMPLE,
        sample_sha256=SAMPLE_SHA256,
        citation="Gao et al. 2020 (arXiv 2101.00027); M2-GPT claim: Fu et al. 2023",
    ),
    default_models=("m2_gpt_145m", "gpt_125m"),
    model_kinds=("causal_lm",),
    sample_size=64,
    trains=True,
    metrics=("ppl", "loss", "bits_per_byte", "test/ppl"),
    description="PILE causal LM: trains, then validation/test perplexity and bits per byte",
)


# --- reading ---------------------------------------------------------------------------------


def read_jsonl(path: Path, limit: int | None = None) -> Iterator[dict[str, str]]:
    """``{"text", "set"}`` rows of a Pile jsonl or jsonl.zst file, in order.

    Raises:
        DataError: a corrupt ``.zst``, a non-UTF-8 or non-JSON line, or a row without ``text``.
    """
    with path.open("rb") as raw:
        if path.suffix != ".zst":
            yield from _rows(raw, path, limit)
            return
        try:
            import zstandard
        except ImportError:
            raise DataError(f"{path} is zstd-compressed; `pip install zstandard`") from None
        try:
            reader = io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw))
            yield from _rows(reader, path, limit)
        except zstandard.ZstdError as exc:
            raise DataError(f"{path} is not a valid zstd file ({exc}); download it again") from None


def _rows(stream: Any, path: Path, limit: int | None) -> Iterator[dict[str, str]]:
    for n, line in enumerate(stream, start=1):
        if limit is not None and n > limit:
            return
        yield _row(line, path, n)


def _row(line: bytes, path: Path, n: int) -> dict[str, str]:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path} line {n} is not UTF-8 ({exc.reason} at byte {exc.start})"
        ) from None
    if not text.strip():
        return {"text": "", "set": "?"}
    try:
        row = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} line {n} is not JSON ({exc.msg})") from None
    if not isinstance(row, dict) or not isinstance(row.get("text"), str):
        raise DataError(f'{path} line {n} has no "text" string; rows are {{"text", "meta"}}')
    meta = row.get("meta") if isinstance(row.get("meta"), dict) else {}
    return {"text": row["text"], "set": str(meta.get("pile_set_name", "unknown"))}


def _split_files(root: Path, split: str) -> list[Path]:
    if split == "train":
        folder = root / "train"
        files = sorted(p for p in folder.glob("*.jsonl*") if p.suffix in (".jsonl", ".zst"))
        return files
    stem = FILES[split]
    return [p for p in (root / f"{stem}.jsonl.zst", root / f"{stem}.jsonl") if p.is_file()][:1]


def _wikitext_articles(text: str) -> list[str]:
    articles, current = [], []
    for line in text.replace("\r\n", "\n").split("\n"):
        if line.startswith(" = ") and line.endswith(" = ") and not line.startswith(" = = "):
            if "".join(current).strip():
                articles.append("\n".join(current).strip("\n"))
            current = []
        current.append(line)
    if "".join(current).strip():
        articles.append("\n".join(current).strip("\n"))
    return articles


def _sample(limit: int | None) -> tuple[dict[str, list[dict]], dict[str, str]]:
    folder = mdata.sample_dir(SAMPLE)
    digest = mdata.verify_files(folder, SAMPLE_SHA256)
    lines = (folder / "tinyshakespeare.txt").read_text(encoding="utf-8").split("\n")
    cut = int(0.9 * len(lines))
    shakes = [{"text": "\n".join(lines[:cut]), "set": "tinyshakespeare"}]
    # validation documents: blocks of 40 lines (so that --limit can bound them too)
    val = [{"text": "\n".join(lines[i : i + 40]), "set": "tinyshakespeare"}
           for i in range(cut, len(lines), 40)][:limit]  # fmt: skip
    wiki = _wikitext_articles((folder / "wiki.test.raw").read_text(encoding="utf-8"))
    test = [{"text": t, "set": "wikitext2"} for t in wiki][:limit]
    prov = {"data_source": "sample:lm_text (stand-in text: tinyshakespeare train/validation, "
                           "wikitext2 test)",
            "data_revision": "sha256:" + digest}  # fmt: skip
    return {"train": shakes, "validation": val, "test": test}, prov


def _folder(root: Path, limit: int | None, train: bool) -> tuple[dict, dict[str, str]]:
    tables: dict[str, list[dict]] = {}
    for split in (("train",) if train else ()) + EVAL_SPLITS:
        files = _split_files(root, split)
        if not files:
            want = "train/*.jsonl.zst" if split == "train" else f"{FILES[split]}.jsonl.zst"
            raise DataError(f"{root} has no {want} (or .jsonl); the Pile layout is DIR/train/"
                            "00.jsonl.zst ..., DIR/val.jsonl.zst, DIR/test.jsonl.zst")  # fmt: skip
        n = None if split == "train" else limit
        tables[split] = [row for f in files for row in read_jsonl(f, n)][:n]
    digest = mdata.files_digest([f for s in tables for f in _split_files(root, s)])
    return tables, {"data_source": mdata.dir_source(root), "data_revision": "sha256:" + digest}


def _hub(limit: int | None, recipe: Recipe) -> tuple[dict, dict[str, str]]:
    import datasets

    tables: dict[str, list[dict]] = {}
    for split in (("train",) if recipe.train else ()) + EVAL_SPLITS:
        try:
            ds = datasets.load_dataset(HUB, split=split, revision=recipe.revision, streaming=True)
        except Exception as exc:
            reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else repr(exc)
            raise DataError(
                f"the Pile is not available from the hub ({reason}); pass --data-dir "
                "DIR with the Pile's jsonl.zst files, or --sample"
            ) from None
        rows, budget = [], recipe.train_tokens * 4  # ~4 bytes of text per GPT-2 token
        for i, r in enumerate(ds):
            if (split != "train" and limit is not None and i >= limit) or budget <= 0:
                break
            rows.append({"text": r["text"], "set": r.get("meta", {}).get("pile_set_name", "?")})
            budget -= len(r["text"]) if split == "train" else 0
        tables[split] = rows
    commit = mdata.hub_commit(HUB, recipe.revision) or recipe.revision
    return tables, {"data_source": f"hub:{HUB}", "data_revision": commit}


# --- tokens ----------------------------------------------------------------------------------


def tokenize(rows: list[dict]) -> tuple[dict[str, np.ndarray], dict[str, int], int]:
    """Per set: the packed token stream (each document + EOS); bytes per set; empty docs."""
    tok = gpt2_tokenizer()
    kept = [r for r in rows if r["text"].strip()]
    streams: dict[str, list[int]] = {}
    n_bytes: dict[str, int] = {}
    for row, enc in zip(kept, tok.encode_batch([r["text"] for r in kept]), strict=True):
        streams.setdefault(row["set"], []).extend([*enc.ids, GPT2_EOS])
        n_bytes[row["set"]] = n_bytes.get(row["set"], 0) + len(row["text"].encode("utf-8"))
    arrays = {s: np.asarray(ids, dtype=np.int64) for s, ids in streams.items()}
    return arrays, n_bytes, len(rows) - len(kept)


def _logits(model: Any, ids: torch.Tensor) -> torch.Tensor:
    out = model(ids)
    return getattr(out, "logits", out)[..., :GPT2_VOCAB].float()


@torch.no_grad()
def evaluate_stream(model, stream: np.ndarray, seq_len: int, batch_size: int, ctx) -> tuple:
    """(sum of nats, scored tokens, model seconds) over ``[EOS] + stream``, each token once."""
    full = torch.from_numpy(np.concatenate([[GPT2_EOS], stream]))
    starts = distributed.shard(list(range(0, len(full) - 1, seq_len)))  # this rank's windows
    nats, count, seconds = 0.0, 0, 0.0
    for b in range(0, len(starts), batch_size):
        chunk = starts[b : b + batch_size]
        for size in sorted({min(seq_len, len(full) - 1 - s) for s in chunk}, reverse=True):
            group = [s for s in chunk if min(seq_len, len(full) - 1 - s) == size]
            x = torch.stack([full[s : s + size] for s in group]).to(ctx.device)
            y = torch.stack([full[s + 1 : s + 1 + size] for s in group]).to(ctx.device)
            with timing.Stopwatch(ctx.device) as sw, autocast(ctx.device, ctx.precision):
                logits = _logits(model, x)
            seconds += sw.seconds
            nats += F.cross_entropy(
                logits.reshape(-1, GPT2_VOCAB), y.reshape(-1), reduction="sum"
            ).item()
            count += y.numel()
    parts = distributed.gather((nats, count, seconds))  # under torchrun: every rank's windows
    return sum(p[0] for p in parts), sum(p[1] for p in parts), max(p[2] for p in parts)


# --- the task --------------------------------------------------------------------------------


@register_task(SPEC)
class Pile:
    """The Pile task plugin."""

    def load(self, split: str = "test", *, limit: int | None = None,
             data_dir: str | Path | None = None, sample: bool = False,
             subtask: str | None = None, **options: Any) -> LoadedData:  # fmt: skip
        """Training documents and the first ``limit`` documents of each evaluation split."""
        if subtask:
            raise DataError(f"pile has no subtasks (got {subtask!r}); sets are reported per name")
        recipe = _recipe(options)
        if sample:
            tables, prov = _sample(limit)
        elif data_dir:
            tables, prov = _folder(Path(data_dir), limit, recipe.train)
        else:
            tables, prov = _hub(limit, recipe)
        counts = {f"n_{s}_docs": str(len(rows)) for s, rows in tables.items()}
        return LoadedData(tables, {**prov, **counts})

    def evaluate(self, model: Any, data: LoadedData, ctx: EvalContext) -> EvalOutput:
        """Train (``task.train``), then loss, perplexity and bits per byte per split and set."""
        if ctx.build_model is None:
            raise ConfigError("pile trains its model: run it through `m2bench run`")
        recipe = _recipe(ctx.options)
        seed_everything(ctx.seeds[0])
        lm = ctx.build_model()
        seq_len = recipe.seq_len or lm.config.max_len
        if seq_len > lm.config.max_len:
            raise ConfigError(f"task.seq_len={seq_len} exceeds the model's max_len "
                              f"{lm.config.max_len}")  # fmt: skip
        metrics: dict[str, float] = {}
        perf: dict[str, float] = {}
        tags = {"seq_len": str(seq_len), "trained": "false"}
        if recipe.train and "train" in data.tables:
            stats = _train(lm, data.tables["train"], seq_len, recipe, ctx)
            metrics.update(stats["metrics"])
            perf.update(stats["perf"])
            tags.update(trained="true", recipe=stats["recipe"])
            torch.save(lm.state_dict(), Path(ctx.out_dir) / "model.pt")
        lm.eval()
        batch = recipe.eval_batch_size or ctx.batch_size
        infer_tokens, infer_s = 0, 0.0
        for split in EVAL_SPLITS:
            streams, n_bytes, empty = tokenize(data.tables.get(split, []))
            if not streams:
                continue
            total_nats, total_tokens = 0.0, 0
            for name, stream in sorted(streams.items()):
                nats, count, seconds = evaluate_stream(lm, stream, seq_len, batch, ctx)
                total_nats, total_tokens = total_nats + nats, total_tokens + count
                infer_tokens, infer_s = infer_tokens + count, infer_s + seconds
                metrics.update(_scores(f"{split}/{name}/", nats, count, n_bytes[name]))
            metrics.update(_scores(f"{split}/", total_nats, total_tokens, sum(n_bytes.values())))
            metrics[f"{split}/n_empty_docs"] = float(empty)
        main = "validation" if "validation/ppl" in metrics else "test"
        for key in ("ppl", "loss", "bits_per_byte"):
            metrics[key] = metrics[f"{main}/{key}"]
        tags["main_split"] = main
        perf["perf/infer_tokens_per_s"] = infer_tokens / max(infer_s, 1e-9)
        perf["perf/peak_mem_gb"] = timing.peak_memory_gb(ctx.device)
        return EvalOutput(metrics, perf, {}, tags)


def _scores(prefix: str, nats: float, tokens: int, n_bytes: int) -> dict[str, float]:
    loss = nats / max(tokens, 1)
    return {prefix + "loss": loss, prefix + "ppl": math.exp(min(loss, 700.0)),
            prefix + "bits_per_byte": nats / math.log(2) / max(n_bytes, 1),
            prefix + "n_tokens": float(tokens)}  # fmt: skip


def _train(lm, rows: list[dict], seq_len: int, recipe: Recipe, ctx: EvalContext) -> dict:
    streams, _, empty = tokenize(rows)
    stream = np.concatenate([streams[s] for s in sorted(streams)])[: recipe.train_tokens + 1]
    n_windows = (len(stream) - 1) // seq_len
    if n_windows < recipe.batch_size:
        raise DataError(f"{len(stream)} training tokens make {n_windows} windows of {seq_len}, "
                        f"fewer than one batch (task.batch_size={recipe.batch_size})")  # fmt: skip
    windows = torch.from_numpy(stream[: n_windows * seq_len + 1])
    per_epoch = n_windows // recipe.batch_size
    seed = ctx.seeds[0]

    def batches(epoch: int):
        order = torch.randperm(n_windows, generator=torch.Generator().manual_seed(seed + epoch))
        for b in range(per_epoch):
            idx = order[b * recipe.batch_size : (b + 1) * recipe.batch_size]
            rows_ = torch.stack([windows[i * seq_len : i * seq_len + seq_len + 1] for i in idx])
            yield rows_.to(ctx.device, non_blocking=True)

    def loss_fn(model, batch):
        logits = _logits(model, batch[:, :-1])
        return F.cross_entropy(logits.reshape(-1, GPT2_VOCAB), batch[:, 1:].reshape(-1))

    flops = lm.flops_per_token(seq_len) if hasattr(lm, "flops_per_token") else None
    peak = timing.peak_flops(ctx.device, ctx.precision)

    def on_step(step: int, value: float, lr: float) -> None:
        if ctx.log_metrics is not None:
            ctx.log_metrics({"train/loss": value, "train/lr": lr}, step)

    def on_throughput(step: int, samples_s: float, tokens_s: float) -> None:
        if ctx.log_metrics is not None:
            extra = {"train/mfu": tokens_s * flops / peak} if flops and peak else {}
            ctx.log_metrics({"train/tokens_per_s": tokens_s, **extra}, step)

    cfg = loop.TrainConfig(
        lr=recipe.lr, weight_decay=recipe.weight_decay, betas=recipe.betas,
        warmup_frac=recipe.warmup_frac, max_grad_norm=recipe.clip_grad, grad_accum=recipe.accum,
        epochs=ctx.epochs if ctx.epochs is not None else recipe.epochs, max_steps=ctx.max_steps,
        schedule="cosine", min_lr_frac=recipe.min_lr_frac,
    )  # fmt: skip
    # what a resumed run must share with its checkpoint (data position, schedule, model)
    same = {"seq_len": seq_len, "batch_size": recipe.batch_size, "accum": recipe.accum,
            "lr": recipe.lr, "weight_decay": recipe.weight_decay,
            "train_tokens": recipe.train_tokens, "seed": ctx.seeds[0]}  # fmt: skip
    ckpt = loop.Checkpointing(
        Path(ctx.out_dir) / "checkpoints", recipe.checkpoint_every, ctx.resume, same
    )
    result = loop.train(
        lm, batches, loss_fn, per_epoch, cfg, device=ctx.device, precision=ctx.precision,
        on_step=on_step, batch_size=lambda b: b.shape[0], progress=ctx.progress,
        tokens=lambda b: b.shape[0] * (b.shape[1] - 1), on_throughput=on_throughput,
        checkpointing=ckpt,
    )  # fmt: skip
    # this process's tokens only: a resumed run's checkpoint carries the earlier ones
    step_tokens = recipe.batch_size * recipe.accum * seq_len
    tokens_s = (result.steps - result.resumed_from) * step_tokens / max(result.seconds, 1e-9)
    samples = (result.steps - result.resumed_from) * recipe.batch_size * recipe.accum
    perf = {"perf/train_tokens_per_s": tokens_s,
            "perf/train_samples_per_s": samples / max(result.seconds, 1e-9)}  # fmt: skip
    if flops and peak:
        perf["perf/mfu"] = tokens_s * flops / peak
    metrics = {"train/steps": float(result.steps), "train_final_loss": result.losses[-1],
               "train/tokens": float(result.tokens), "train/n_empty_docs": float(empty),
               "train/resumed_from_step": float(result.resumed_from)}  # fmt: skip
    recipe_tag = (
        f"lr={recipe.lr:g} wd={recipe.weight_decay:g} bs={recipe.batch_size}x{seq_len} "
        f"accum={recipe.accum} warmup={recipe.warmup_frac:g} cosine floor="
        f"{recipe.min_lr_frac:g} clip={recipe.clip_grad:g} steps={result.steps}"
    )
    return {"metrics": metrics, "perf": perf, "recipe": recipe_tag}
