"""Template generator speed: reports per second for 10,000 reports (acceptance: under a minute).

Usage: .venv/bin/python benchmarks/synthesize_speed.py [--n 10000] [--seed 13]
Reads the drug records of step 1 (data/raw/drugs/); prints a Markdown table.
"""
from __future__ import annotations

import argparse
import time

from helpers import paths, schemas, synthesize


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=13)
    args = ap.parse_args()
    records = schemas.load_drug_records(paths.drugs_dir())
    t0 = time.perf_counter()
    drugs = synthesize.prepare_drugs(records)
    synthesize.generate_template_split(drugs[:1], 1, args.seed, "warmup")   # build Faker locales once
    t1 = time.perf_counter()
    reports = synthesize.generate_template_split(drugs, args.n, args.seed, "bench")
    t2 = time.perf_counter()
    spans = sum(len(r["spans"]) for r in reports)
    gen_s = t2 - t1
    print("| step | reports | seconds | reports/s |")
    print("|---|---|---|---|")
    print(f"| prepare {len(drugs)} drug records + Faker locales | - | {t1 - t0:.2f} | - |")
    print(f"| generate + check spans | {len(reports)} | {gen_s:.2f} | {len(reports) / gen_s:,.0f} |")
    print(f"\n{spans} spans checked (text[start:end] == label); "
          f"{'under' if t2 - t0 < 60 else 'OVER'} a minute in total ({t2 - t0:.1f} s)")


if __name__ == "__main__":
    main()
