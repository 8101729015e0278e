"""The dataset card of step 2: counts, the genre mix, length and label-count distributions, per-drug
coverage and examples, as Markdown (card.md) and a figure (card.png). Every figure in it is
computed from the reports alone, so it can be recomputed from the written files."""
from __future__ import annotations

import statistics
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Sequence

from . import schemas
from .io import save_figure, write_text

Reports = Sequence[dict[str, Any]]


def _share(recs: Reports, test) -> float:
    return round(sum(bool(test(r)) for r in recs) / (len(recs) or 1), 3)


def _meta(r: dict[str, Any]) -> dict[str, Any]:
    return r.get("meta", {})


def genre_of(r: dict[str, Any]) -> str:
    """A report's genre ("message" for the template messages of earlier runs)."""
    return _meta(r).get("genre", "message")


def split_stats(recs: Reports) -> dict[str, Any]:
    """Counts and shares of one split: labels, lengths, empty / negated / multi-drug reports."""
    lengths = [len(r["text"]) for r in recs]
    return {
        "reports": len(recs),
        "drug_labels": sum(len(r["drugs"]) for r in recs),
        "ae_labels": sum(len(r["adverse_events"]) for r in recs),
        "share_no_ae": _share(recs, lambda r: not r["adverse_events"]),
        "share_no_drug": _share(recs, lambda r: not r["drugs"]),
        "share_multi_drug": _share(recs, lambda r: len(r["drugs"]) > 1),
        "share_negated": _share(recs, lambda r: _meta(r).get("negated")),
        "share_disease": _share(recs, lambda r: _meta(r).get("disease")),
        "chars_median": int(statistics.median(lengths)) if lengths else 0,
        "chars_min": min(lengths, default=0),
        "chars_max": max(lengths, default=0),
    }


def genre_stats(recs: Reports) -> dict[str, dict[str, Any]]:
    """Per genre (all splits together): share of the mix, lengths, labels per report and the shares
    of drugless, eventless, long-list, negated, hypothetical, indication, misspelled reports and of
    reports naming a drug the patient does not take (no label)."""
    by: dict[str, list[dict[str, Any]]] = {}
    for r in recs:
        by.setdefault(genre_of(r), []).append(r)
    out = {}
    for g in sorted(by):
        rs = by[g]
        chars = sorted(len(r["text"]) for r in rs)
        out[g] = {"reports": len(rs), "share": round(len(rs) / len(recs), 3),
                  "chars_median": int(statistics.median(chars)), "chars_p90": chars[int(0.9 * (len(chars) - 1))],
                  "chars_max": chars[-1],
                  "aes_mean": round(statistics.mean(len(r["adverse_events"]) for r in rs), 2),
                  "drugs_mean": round(statistics.mean(len(r["drugs"]) for r in rs), 2),
                  "share_5plus_aes": _share(rs, lambda r: len(r["adverse_events"]) >= 5),
                  "share_no_drug": _share(rs, lambda r: not r["drugs"]),
                  "share_no_ae": _share(rs, lambda r: not r["adverse_events"]),
                  "share_negated": _share(rs, lambda r: _meta(r).get("negated")),
                  "share_hypothetical": _share(rs, lambda r: _meta(r).get("hypothetical")),
                  "share_indication": _share(rs, lambda r: _meta(r).get("disease")),
                  "share_worsened": _share(rs, lambda r: _meta(r).get("worsened")),
                  "share_misspelled": _share(rs, lambda r: _meta(r).get("misspelled")),
                  "share_drug_not_taken": _share(rs, lambda r: _meta(r).get("not_taken"))}
    return out


def figure_data(splits_: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """What card.png plots, per genre: report lengths and the number of event and drug labels."""
    recs = [r for v in splits_.values() for r in v]
    genres = sorted({genre_of(r) for r in recs})
    return {"genres": genres,
            "chars": {g: [len(r["text"]) for r in recs if genre_of(r) == g] for g in genres},
            "n_aes": {g: Counter(len(r["adverse_events"]) for r in recs if genre_of(r) == g) for g in genres},
            "n_drugs": {g: Counter(len(r["drugs"]) for r in recs if genre_of(r) == g) for g in genres}}


def drug_coverage(splits_: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, int]]:
    """Reports per drug record (suspect or co-medication) per split."""
    cov: dict[str, dict[str, int]] = {}
    for split, recs in splits_.items():
        for r in recs:
            for name in sorted(set(_meta(r).get("drug_names", []))):
                cov.setdefault(name, {s: 0 for s in splits_})[split] += 1
    return dict(sorted(cov.items()))


def md_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table (pipes in cells escaped)."""
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _genre_section(splits_: dict[str, list[dict[str, Any]]], params: dict[str, Any]) -> list[str]:
    stats = genre_stats([r for v in splits_.values() for r in v])
    keys = list(next(iter(stats.values())).keys()) if stats else []
    mix = params.get("genre_mix") or {"message": 1.0}
    return ["## Genres (all splits)", "",
            "Asked-for mix (`genre_mix`): " + ", ".join(f"{k} {v}" for k, v in sorted(mix.items())) +
            (f"; reports longer than {params['max_chars']} characters are redrawn" if params.get("max_chars") else ""),
            "", md_table(["genre"] + keys, [[g] + [v[k] for k in keys] for g, v in stats.items()]), "",
            "`message` = the template web forms, e-mails, short forms, clinician notes and caregiver "
            "messages; `forum`, `social`, `case_report`, `clinical_note` follow the genre rules of "
            "`helpers.genres`. Negated and hypothetical reactions and the indication are never labels; "
            "`share_worsened` counts reports whose indication got clearly worse (labelled, e.g. *worse anxiety*).", ""]


def _vocab_section(info: dict[str, Any]) -> list[str]:
    v = info.get("vocabulary")
    if not v:
        return []
    rows = [["drugs", v["drugs"]], ["brand names", v["brand_names"]], ["misspelled names", v["misspelled_names"]],
            ["drug classes", v["classes"]], ["adverse reactions", v["reactions"]],
            ["lay paraphrases", v["lay_paraphrases"]]]
    rows += [[f"drugs: {k}", n] for k, n in sorted(v["drugs_by_kind"].items())]
    rows += [[f"reactions: {k}", n] for k, n in v["reactions_by_system"].items()]
    return ["## Vocabulary (data/vocab)", "", md_table(["what", "count"], rows), ""]


def dataset_card(splits_: dict[str, list[dict[str, Any]]], params: dict[str, Any],
                 info: dict[str, Any]) -> str:
    """The Markdown card written beside the data: counts, genres, distributions, coverage, examples."""
    stats = {s: split_stats(r) for s, r in splits_.items()}
    keys = list(next(iter(stats.values())).keys())
    parts = [f"# Synthetic adverse-event reports (run `{params.get('run')}`)", "",
             f"Generator: `{params.get('generator')}`, seed {params.get('seed')}. Every label is a "
             "span of its report's text (`text[start:end] == label`, checked before writing). "
             "Negated symptoms, the disease being treated and reporter details are not labels.", "",
             "## Splits", "", md_table(["split"] + keys, [[s] + [v[k] for k in keys] for s, v in stats.items()]), ""]
    unseen = info.get("unseen_drugs", [])
    n_drugs = len(info.get("drugs_used", [])) or 1
    parts += [f"Unseen drugs (only in `test_unseen`, {len(unseen)} of {n_drugs} usable drug records, "
              f"{len(unseen) / n_drugs:.1%}): " + (", ".join(unseen) or "none"),
              "", "Skipped drug records (no usable side effects): " +
              (", ".join(info.get("drugs_skipped", [])) or "none"), ""]
    parts += _genre_section(splits_, params) + _vocab_section(info)
    if info.get("teacher"):
        parts += ["## Teacher", "", md_table(["metric", "value"], sorted(info["teacher"].items())), ""]
    parts += _label_sections(splits_)
    parts += _examples_section(splits_.get("train", []))
    return "\n".join(parts)


def _label_sections(splits_: dict[str, list[dict[str, Any]]]) -> list[str]:
    ae_counts = Counter(a.lower() for r in splits_.get("train", []) for a in r["adverse_events"])
    parts = ["## Most frequent adverse-event labels (train)", "",
             md_table(["label", "count"], ae_counts.most_common(15)), ""]
    n_ae = Counter(len(r["adverse_events"]) for recs in splits_.values() for r in recs)
    n_dr = Counter(len(r["drugs"]) for recs in splits_.values() for r in recs)
    parts += ["## Labels per report (all splits)", "",
              md_table(["count", "reports by adverse events", "reports by drugs"],
                       [[k, n_ae.get(k, 0), n_dr.get(k, 0)] for k in sorted(set(n_ae) | set(n_dr))]), ""]
    shapes = Counter((_meta(r).get("shape", "?"), _meta(r).get("style", "?"))
                     for recs in splits_.values() for r in recs)
    parts += ["## Shapes and styles (all splits)", "",
              md_table(["shape", "style", "reports"], [[a, b, c] for (a, b), c in sorted(shapes.items())]), ""]
    cov = drug_coverage(splits_)
    parts += ["## Per-drug coverage (reports naming or implying the drug)", "",
              md_table(["drug"] + list(splits_), [[d] + [c[s] for s in splits_] for d, c in cov.items()]), ""]
    return parts


def _examples_section(train: Reports) -> list[str]:
    parts = ["## Examples", ""]
    for r in instructive_examples(train):
        parts += [f"**{r['id']}** ({genre_of(r)}, {_meta(r).get('shape')}, {_meta(r).get('style')})",
                  "", "```text", r["text"], "```", "", "```json", schemas.answer_json(r), "```", ""]
    return parts


def instructive_examples(recs: Reports) -> list[dict[str, Any]]:
    """Instructive examples: a multi-event report, one with a negation, one with no event, and one
    per non-message genre present."""
    out: list[dict[str, Any]] = []
    tests = [lambda r: len(r["adverse_events"]) >= 2 and r["drugs"],
             lambda r: _meta(r).get("negated") and r["adverse_events"],
             lambda r: not r["adverse_events"]]
    tests += [lambda r, g=g: genre_of(r) == g for g in ("forum", "social", "case_report", "clinical_note")]
    for t in tests:
        for r in recs:
            if t(r) and r not in out and len(r["text"]) < 900:
                out.append(r)
                break
    return out


def plot_dataset(splits_: dict[str, list[dict[str, Any]]], path: Path | str):
    """Per genre: length histogram, adverse-event and drug labels per report; saved as PNG; returns the figure."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    data = figure_data(splits_)
    genres = data["genres"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4))
    top = max((max(v) for v in data["chars"].values() if v), default=1)
    bins = list(range(0, top + 50, max(25, top // 30)))
    for g in genres:
        axes[0].hist(data["chars"][g], bins=bins, alpha=0.5, label=g)
    axes[0].set(title="report length by genre", xlabel="characters", ylabel="reports")
    axes[0].legend(fontsize=7)
    width = 0.8 / max(1, len(genres))
    for panel, key, title in ((1, "n_aes", "adverse-event labels per report"), (2, "n_drugs", "drug labels per report")):
        ks = sorted({k for g in genres for k in data[key][g]})
        for i, g in enumerate(genres):
            axes[panel].bar([k - 0.4 + width * (i + 0.5) for k in ks], [data[key][g].get(k, 0) for k in ks],
                            width, label=g)
        axes[panel].set(title=title, xlabel="labels", ylabel="reports")
        axes[panel].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)   # atomic: never a half-written PNG
    return fig


def write_card(splits_: dict[str, list[dict[str, Any]]], params: dict[str, Any],
               info: dict[str, Any], out_dir: Path | str) -> Path:
    """Write card.md beside the data."""
    return write_text(Path(out_dir) / "card.md", dataset_card(splits_, params, info))
