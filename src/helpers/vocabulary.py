"""The drug and adverse-reaction vocabulary of step 2, read from data files (data/vocab/).

Three CSV files hold the facts: `adverse_reactions.csv` (a clinical term, its body system, a
literature synonym, an abbreviation and lay paraphrases), `drug_classes.csv` (per class: dosage
form, what it is taken for, its typical adverse reactions) and `drugs.csv` (generic name, brand
names, class, kind, common misspellings, the short forms writers use: *MTX*, *doxy*). This module checks them and turns each drug into a drug
record of the same shape as the scraped ones (helpers.schemas), so the generator and the
baselines use both alike.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

from . import paths, schemas
from .io import DataError

SOURCE = "vocabulary"
FILES = ("adverse_reactions.csv", "drug_classes.csv", "drugs.csv")
KINDS = ("small molecule", "biologic", "combination")
FORMS = ("tablet", "injection", "infusion", "inhaler", "gel", "cream", "patch", "spray")


@dataclass(frozen=True)
class Reaction:
    """One adverse reaction: the term, where it belongs, and other ways of writing it."""
    term: str
    system: str
    clinical: str
    abbreviation: str
    lay: tuple[str, ...]
    clauses: tuple[str, ...] = ()     # the reaction said as a clause: "ankles swell up"


@dataclass(frozen=True)
class DrugClass:
    """What a class of drugs shares: dosage form, indications, typical adverse reactions."""
    name: str
    form: str
    indications: tuple[str, ...]
    reactions: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class Vocabulary:
    """The three tables, checked against each other."""
    reactions: tuple[Reaction, ...]
    classes: dict[str, DrugClass]
    drugs: tuple[dict[str, str], ...]

    def reaction(self, term: str) -> Reaction | None:
        """The reaction row of a term (any case), or None."""
        return _reaction_index(self).get(term.lower())

    def systems(self) -> dict[str, list[str]]:
        """Terms grouped by body system, in file order."""
        out: dict[str, list[str]] = {}
        for r in self.reactions:
            out.setdefault(r.system, []).append(r.term)
        return out


@lru_cache(maxsize=8)
def _reaction_index(vocab: Vocabulary) -> dict[str, Reaction]:
    return {r.term.lower(): r for r in vocab.reactions}


def vocab_dir() -> Path:
    """Where the vocabulary files live (data/vocab)."""
    return paths.data_dir() / "vocab"


def files(folder: Path | str | None = None) -> list[Path]:
    """The vocabulary's data files (inputs of step 2's manifest)."""
    return [Path(folder or vocab_dir()) / f for f in FILES]


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(x.strip() for x in (value or "").split(";") if x.strip())


def _rows(path: Path, columns: Sequence[str]) -> list[tuple[int, dict[str, str]]]:
    """CSV rows with their line numbers; a missing file or column is one clear error."""
    if not path.exists():
        raise DataError(f"{path}: vocabulary file missing")
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path}: missing columns {missing}")
        return [(i + 2, {k: (v or "").strip() for k, v in row.items()}) for i, row in enumerate(reader)]


def _read_reactions(path: Path) -> tuple[Reaction, ...]:
    out: list[Reaction] = []
    seen: set[str] = set()
    for line, row in _rows(path, ("system", "term", "clinical", "abbreviation", "lay", "clause")):
        term = row["term"]
        if not term or not row["system"]:
            raise DataError(f"{path}:{line}: reaction needs a term and a system")
        if term.lower() in seen:
            raise DataError(f"{path}:{line}: reaction {term!r} listed twice")
        seen.add(term.lower())
        out.append(Reaction(term, row["system"], row["clinical"] or term, row["abbreviation"],
                            _split(row["lay"]), _split(row["clause"])))
    return tuple(out)


def _read_classes(path: Path, terms: set[str]) -> dict[str, DrugClass]:
    out: dict[str, DrugClass] = {}
    for line, row in _rows(path, ("class", "form", "indications", "adverse_reactions")):
        name, form = row["class"], row["form"]
        if form not in FORMS:
            raise DataError(f"{path}:{line}: class {name!r} has form {form!r}, not one of {FORMS}")
        reactions = _split(row["adverse_reactions"])
        unknown = [t for t in reactions if t.lower() not in terms]
        if unknown:
            raise DataError(f"{path}:{line}: class {name!r} names reactions not in "
                            f"adverse_reactions.csv: {unknown}")
        if not reactions or not _split(row["indications"]):
            raise DataError(f"{path}:{line}: class {name!r} needs indications and adverse reactions")
        out[name] = DrugClass(name, form, _split(row["indications"]), reactions)
    return out


def _read_drugs(path: Path, classes: dict[str, DrugClass]) -> tuple[dict[str, str], ...]:
    out: list[dict[str, str]] = []
    owner: dict[str, int] = {}
    for line, row in _rows(path, ("generic", "brands", "class", "kind", "form", "misspellings")):
        if row["class"] not in classes:
            raise DataError(f"{path}:{line}: drug {row['generic']!r} has unknown class {row['class']!r}")
        if row["kind"] not in KINDS:
            raise DataError(f"{path}:{line}: drug {row['generic']!r} has kind {row['kind']!r}, not one of {KINDS}")
        if row["form"] and row["form"] not in FORMS:
            raise DataError(f"{path}:{line}: drug {row['generic']!r} has form {row['form']!r}")
        for name in (row["generic"], *_split(row["brands"]), *_split(row.get("short_forms"))):
            if name.lower() in owner:
                raise DataError(f"{path}:{line}: name {name!r} already used on line {owner[name.lower()]}")
            owner[name.lower()] = line
        out.append(row)
    return tuple(out)


@lru_cache(maxsize=4)
def _load(folder: str) -> Vocabulary:
    base = Path(folder)
    reactions = _read_reactions(base / "adverse_reactions.csv")
    classes = _read_classes(base / "drug_classes.csv", {r.term.lower() for r in reactions})
    return Vocabulary(reactions, classes, _read_drugs(base / "drugs.csv", classes))


def load(folder: Path | str | None = None) -> Vocabulary:
    """The checked vocabulary (cached per folder); a bad row raises DataError naming file and line."""
    return _load(str(Path(folder or vocab_dir()).resolve()))


def drug_records(vocab: Vocabulary) -> list[dict[str, Any]]:
    """Every vocabulary drug as a drug record (schemas.DRUG_KEYS plus form, kind, misspellings,
    indications and the class's reactions as `side_effects.common`)."""
    out = []
    for row in vocab.drugs:
        cls = vocab.classes[row["class"]]
        brands = list(_split(row["brands"]))
        rec = {"name": brands[0] if brands else row["generic"], "generic_names": [row["generic"]],
               "brand_names": brands, "drug_class": cls.name, "uses": list(cls.indications),
               "side_effects": {"common": list(cls.reactions), "serious": [], "allergic": [], "other": []},
               "missing_sections": [], "source": SOURCE, "source_url": "", "fetched_at": "",
               "content_hash": "", "form": row["form"] or cls.form, "kind": row["kind"],
               "misspellings": list(_split(row["misspellings"])),
               "short_forms": list(_split(row.get("short_forms"))),
               "indications": list(cls.indications)}
        out.append(schemas.validate_drug_record(rec, f"vocabulary drug {row['generic']!r}"))
    return out


def _names(rec: dict[str, Any]) -> set[str]:
    return {n.strip().lower() for n in [rec["name"], *rec.get("generic_names", []),
                                        *rec.get("brand_names", [])] if n.strip()}


def merge_records(scraped: Sequence[dict[str, Any]], vocab_records: Sequence[dict[str, Any]]
                  ) -> list[dict[str, Any]]:
    """Scraped records first (each given the names, class reactions, misspellings and form of the
    vocabulary drug sharing a name with it), then every vocabulary drug no scraped record names."""
    out: list[dict[str, Any]] = []
    matched: set[int] = set()
    for rec in scraped:
        rec = dict(rec)
        for i, v in enumerate(vocab_records):
            if _names(rec) & _names(v):
                matched.add(i)
                for key in ("generic_names", "brand_names"):
                    rec[key] = schemas.dedupe([*rec.get(key, []), *v[key]])
                rec.setdefault("class_side_effects", list(v["side_effects"]["common"]))
                rec.setdefault("misspellings", list(v["misspellings"]))
                rec.setdefault("short_forms", list(v["short_forms"]))
                rec.setdefault("form", v["form"])
                rec.setdefault("kind", v["kind"])
        out.append(rec)
    out += [v for i, v in enumerate(vocab_records) if i not in matched]
    return out


def with_vocabulary(records: Sequence[dict[str, Any]], folder: Path | str | None = None
                    ) -> list[dict[str, Any]]:
    """The scraped records plus the vocabulary's drugs, as step 2 uses them (and a baseline that
    should know the same drugs can)."""
    return merge_records(records, drug_records(load(folder)))


def summary(vocab: Vocabulary) -> dict[str, Any]:
    """Counts for the dataset card: drugs by kind, brand names, reactions by body system."""
    kinds: dict[str, int] = {}
    for d in vocab.drugs:
        kinds[d["kind"]] = kinds.get(d["kind"], 0) + 1
    return {"drugs": len(vocab.drugs), "drugs_by_kind": kinds,
            "brand_names": sum(len(_split(d["brands"])) for d in vocab.drugs),
            "misspelled_names": sum(len(_split(d["misspellings"])) for d in vocab.drugs),
            "classes": len(vocab.classes), "reactions": len(vocab.reactions),
            "lay_paraphrases": sum(len(r.lay) for r in vocab.reactions),
            "reactions_by_system": {s: len(t) for s, t in vocab.systems().items()}}
