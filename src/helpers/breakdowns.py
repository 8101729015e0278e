"""Where a system goes wrong, from prediction records (step 6): every item's fate (correct, partial,
missed, extra), error-type counts, scores per gold drug and the worst reports."""
from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .metrics import gold_of, match_items, normalize, predicted, prf
from .schemas import FIELDS

ERROR_TYPES = ("missed", "extra", "partial")


def report_errors(rec: dict[str, Any]) -> list[dict[str, Any]]:
    """Every gold and predicted item of one report with its fate: correct, partial (relaxed but not
    exact match), missed (gold never matched) or extra (prediction never matched)."""
    g, p = gold_of(rec), predicted(rec)
    rows = []
    for f in FIELDS:
        pairs = match_items(g[f], p[f], "relaxed")
        for i, j in pairs:
            kind = "correct" if g[f][i] == p[f][j] else "partial"
            rows.append({"id": rec.get("id"), "field": f, "type": kind,
                         "gold": g[f][i], "predicted": p[f][j]})
        matched_g, matched_p = {i for i, _ in pairs}, {j for _, j in pairs}
        rows += [{"id": rec.get("id"), "field": f, "type": "missed", "gold": x, "predicted": None}
                 for i, x in enumerate(g[f]) if i not in matched_g]
        rows += [{"id": rec.get("id"), "field": f, "type": "extra", "gold": None, "predicted": x}
                 for j, x in enumerate(p[f]) if j not in matched_p]
    return rows


def error_items(preds: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """`report_errors` of every report, as one table."""
    rows = [row for rec in preds for row in report_errors(rec)]
    return pd.DataFrame(rows, columns=["id", "field", "type", "gold", "predicted"])


def error_type_counts(preds: Sequence[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Missed / extra / partial / correct counts per field."""
    items = error_items(preds)
    out = {}
    for f in FIELDS:
        sub = items[items["field"] == f]
        out[f] = {t: int((sub["type"] == t).sum()) for t in ("correct",) + ERROR_TYPES}
    return out


def per_drug(preds: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Scores grouped by gold drug (normalized matching): how often the drug itself was found and
    P/R/F1 of adverse events and of both fields together; reports without a drug form '(none)'."""
    groups: dict[str, dict[str, Any]] = {}
    for rec in preds:
        g, p = gold_of(rec), predicted(rec)
        counts = {}
        for f in FIELDS:
            tp = len(match_items(g[f], p[f], "normalized"))
            counts[f] = (tp, len(p[f]) - tp, len(g[f]) - tp)
        pred_drugs = {normalize(d) for d in p["drugs"]}
        keys = {}
        for d in g["drugs"] or ["(none)"]:
            keys.setdefault(normalize(d) if d != "(none)" else d, d)
        for key, name in keys.items():
            grp = groups.setdefault(key, {"drug": name, "n": 0, "found": 0,
                                          "ae": np.zeros(3), "all": np.zeros(3)})
            grp["n"] += 1
            grp["found"] += key in pred_drugs
            grp["ae"] += counts["adverse_events"]
            grp["all"] += np.add(counts["drugs"], counts["adverse_events"])
    rows = []
    for grp in groups.values():
        ae_p, ae_r, ae_f = prf(*grp["ae"])
        _, _, f1 = prf(*grp["all"])
        rows.append({"drug": grp["drug"], "n": grp["n"],
                     "drug_recall": grp["found"] / grp["n"] if grp["drug"] != "(none)" else float("nan"),
                     "ae_p": ae_p, "ae_r": ae_r, "ae_f1": ae_f, "f1": f1})
    cols = ["drug", "n", "drug_recall", "ae_p", "ae_r", "ae_f1", "f1"]
    return pd.DataFrame(rows, columns=cols).sort_values("drug", key=lambda s: s.str.lower(),
                                                        ignore_index=True)


def _clip(text: Any, width: int) -> str:
    text = "" if text is None else " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def worst_reports(preds: Sequence[dict[str, Any]], k: int = 10, width: int = 160) -> pd.DataFrame:
    """The k reports with the lowest F1 (both fields, normalized), most errors first on ties,
    with what was missed, added or only partly right."""
    rows = []
    for rec in preds:
        g, p = gold_of(rec), predicted(rec)
        tp = fp = fn = 0
        for f in FIELDS:
            t = len(match_items(g[f], p[f], "normalized"))
            tp, fp, fn = tp + t, fp + len(p[f]) - t, fn + len(g[f]) - t
        _, _, f1 = prf(tp, fp, fn)
        if tp + fp + fn == 0:
            f1 = 1.0  # nothing to find and nothing predicted: a perfect report
        errs = report_errors(rec)
        by_type = {t: [e for e in errs if e["type"] == t] for t in ERROR_TYPES}
        rows.append({
            "id": rec.get("id"), "f1": f1,
            "errors": sum(len(v) for v in by_type.values()),
            "parse_ok": bool(rec.get("parse_ok")),
            "missed": "; ".join(e["gold"] for e in by_type["missed"]),
            "extra": "; ".join(e["predicted"] for e in by_type["extra"]),
            "partial": "; ".join(f"{e['gold']} ~ {e['predicted']}" for e in by_type["partial"]),
            "gold": json.dumps(g, ensure_ascii=False), "predicted": json.dumps(p, ensure_ascii=False),
            "text": _clip(rec.get("text"), width),
            "raw": _clip(rec.get("raw"), width) if not rec.get("parse_ok") else "",
        })
    df = pd.DataFrame(rows)
    df = df.sort_values(["f1", "errors", "id"], ascending=[True, False, True], kind="stable")
    return df.head(k).reset_index(drop=True)
