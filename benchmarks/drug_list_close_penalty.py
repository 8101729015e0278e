"""Quality of the drug-list close penalty (infer.drug_list_close_penalty): a run's fine-tuned adapter
decodes one split at several penalties; drug precision, recall and F1 (normalised), relaxed AE F1 and the
invented-drug rate, each penalty beside penalty 0 with the F1 ratio.

Why: the fine-tuned SmolLM2 ends its drug list early (a note's third drug, a treatment drug named
after the event). The penalty makes ending the list after a drug cost nats; this measures whether the
drugs it adds are real ones. Needs step 4's adapter of the run (./run_all.sh first).

    python benchmarks/drug_list_close_penalty.py --run cpu --split handwritten --penalties 0 1 2 3
"""
from __future__ import annotations

import argparse
import os
import time

from helpers import config, eval_sets, infer, infer_step, metrics, models


def scores(records: list[dict]) -> dict[str, float]:
    """The figures of one decoding of the split."""
    drugs = metrics.field_scores(records, "drugs", "normalized")
    events = metrics.field_scores(records, "adverse_events", "relaxed")
    return {"drug_P": drugs["precision"], "drug_R": drugs["recall"], "drug_F1": drugs["f1"],
            "AE_F1": events["f1"], "invented": metrics.invented_drug_rate(records)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="cpu", help="profile whose step-4 adapter and infer settings to use")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--split", default="handwritten")
    ap.add_argument("--penalties", type=float, nargs="+", default=[0.0, 1.0, 2.0, 3.0])
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    settings = config.step_settings(args.run, "05_infer", args.model)
    reports = eval_sets.load_test_sets(args.run, [args.split])[args.split][1]
    loaded = infer_step.load(args.run, args.model, ["lora"], "hf", settings["seed"])
    net = infer.apply_adapter(loaded.base, loaded.adapter, merge=True)
    spec = models.get_spec(args.model)
    rows = []
    for penalty in args.penalties:
        started = time.perf_counter()
        records = infer.predict(net, loaded.tokenizer, spec, reports, batch_size=settings["batch_size"],
                                max_new_tokens=settings["max_new_tokens"], constrained=settings["constrained"],
                                progress=False, adapter="benchmark", drug_list_close_penalty=penalty)
        rows.append({"penalty": penalty, **scores(records), "s": time.perf_counter() - started})
        print(f"  penalty {penalty}: done in {rows[-1]['s']:.0f} s", flush=True)
    first = rows[0]
    print(f"\n{args.model} + LoRA ({args.run}) on {args.split} ({len(reports)} reports), "
          f"constrained={settings['constrained']}; ratio = drug F1 / drug F1 at penalty {first['penalty']}")
    print(f"{'penalty':>8} {'drug P':>7} {'drug R':>7} {'drug F1':>8} {'AE F1':>6} {'invented':>9} {'ratio':>6} {'s':>5}")
    for r in rows:
        print(f"{r['penalty']:>8.1f} {r['drug_P']:>7.3f} {r['drug_R']:>7.3f} {r['drug_F1']:>8.3f} "
              f"{r['AE_F1']:>6.3f} {r['invented']:>9.3f} {r['drug_F1'] / first['drug_F1']:>6.3f} {r['s']:>5.0f}")


if __name__ == "__main__":
    main()
