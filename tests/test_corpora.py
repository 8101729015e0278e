"""CADEC and ADE Corpus v2 loaders on small files written here (made-up sentences)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import corpora
from helpers.io import DataError, read_jsonl
from helpers.schemas import load_reports, validate_report

FIXTURES = Path(__file__).parent / "fixtures" / "corpora"


def write_cadec(folder: Path, docs: dict[str, tuple[str, str]]) -> Path:
    """A CADEC-style folder: text/NAME.txt and original/NAME.ann per document."""
    (folder / "text").mkdir(parents=True)
    (folder / "original").mkdir(parents=True)
    for name, (text, ann) in docs.items():
        (folder / "text" / f"{name}.txt").write_bytes(text.encode("utf-8"))
        (folder / "original" / f"{name}.ann").write_text(ann, encoding="utf-8")
    return folder


# ---- CADEC -------------------------------------------------------------------------------------------
def test_cadec_discontinuous_comments_and_ignored_types(tmp_path):
    text = "Voltaren eased my knee arthritis but my stomach was upset and sore for days."
    #       0         1         2         3         4         5         6         7
    #       0123456789012345678901234567890123456789012345678901234567890123456789012345
    ann = ("T1\tDrug 0 8\tVoltaren\n"
           "T2\tDisease 23 32\tarthritis\n"
           "#1\tAnnotatorNotes T2\tthe treated illness\n"
           "T3\tADR 40 47;52 57\tstomach upset\n"
           "T4\tADR 40 47;62 66\tstomach sore\n"
           "T5\tSymptom 52 57\tupset\n"
           "R1\tCAUSED_BY Arg1:T3 Arg2:T1\n")
    reports = corpora.load_cadec(write_cadec(tmp_path / "c", {"VOLTAREN.7": (text, ann)}))
    assert len(reports) == 1
    r = reports[0]
    assert r["id"] == "VOLTAREN.7"
    assert r["drugs"] == ["Voltaren"]
    assert r["adverse_events"] == ["stomach upset", "stomach sore"]
    assert [(s["label"], s["start"], s["end"], s["text"]) for s in r["spans"]] == [
        ("drug", 0, 8, "Voltaren"), ("adverse_event", 40, 47, "stomach"),
        ("adverse_event", 52, 57, "upset"), ("adverse_event", 62, 66, "sore")]
    validate_report(r)


def test_cadec_offsets_survive_crlf_and_repeats(tmp_path):
    text = "Took Ambien.\r\nGroggy all day, groggy again today.\r\n"
    ann = "T1\tDrug 5 11\tAmbien\nT2\tADR 14 20\tGroggy\nT3\tADR 30 36\tgroggy\n"
    r = corpora.load_cadec(write_cadec(tmp_path / "c", {"A.1": (text, ann)}))[0]
    assert r["text"] == text
    assert r["adverse_events"] == ["Groggy"]  # repeats removed, first spelling kept
    assert [s["text"] for s in r["spans"]] == ["Ambien", "Groggy", "groggy"]


def test_cadec_post_without_drug(tmp_path):
    r = corpora.load_cadec(write_cadec(tmp_path / "c", {
        "P.1": ("This pill gave me hives.", "T1\tADR 18 23\thives\n")}))[0]
    assert r["drugs"] == [] and r["adverse_events"] == ["hives"]


@pytest.mark.parametrize("line,message", [
    ("T1\tADR 9 x\tbit", r"A.1.ann:2: bad offsets '9 x'"),
    ("T1\tADR 9 99\tbit", r"A.1.ann:2: offsets 9 99 outside the text"),
    ("T1\tADR 0 4", r"A.1.ann:2: expected 'ID<TAB>TYPE"),
    ("T1\tADR\tSome", r"A.1.ann:2: no offsets after the type"),
])
def test_cadec_malformed_line_names_file_and_line(tmp_path, line, message):
    folder = write_cadec(tmp_path / "c", {"A.1": ("Some text here", "# note\n" + line + "\n")})
    with pytest.raises(DataError, match=message):
        corpora.load_cadec(folder)


def test_cadec_mismatch_relocates_skips_or_raises(tmp_path):
    text = "Took Ambien then felt groggy and dizzy."
    #       0123456789012345678901234567890123456789
    ann = ("T1\tDrug 5 11\tAmbien\n"
           "T2\tADR 24 30\tgroggy\n"          # two characters too far: moved back to 22..28
           "T3\tADR 19 23;24 30\tfelt groggy\n"  # discontinuous, both fragments shifted by -2
           "T4\tADR 33 38\tnausea\n")         # not in the post at all
    folder = write_cadec(tmp_path / "c", {"A.1": (text, ann)})
    with pytest.warns(corpora.CorpusWarning, match=r"A.1.ann:4: annotation text 'nausea'.*skipped"):
        r = corpora.load_cadec(folder)[0]
    assert r["adverse_events"] == ["felt groggy", "groggy"]
    assert [(s["start"], s["end"]) for s in r["spans"]] == [(5, 11), (17, 21), (22, 28)]
    with pytest.raises(corpora.AnnotationMismatch, match=r"A.1.ann:4: annotation text 'nausea'"):
        corpora.load_cadec(folder, strict=True)


def test_cadec_missing_parts(tmp_path):
    with pytest.raises(DataError, match="needs 'text/' and 'original/'"):
        corpora.load_cadec(tmp_path)
    folder = write_cadec(tmp_path / "c", {"A.1": ("Some text", "")})
    (folder / "text" / "B.2.txt").write_text("other")
    with pytest.raises(DataError, match="B.2.txt: no annotation file"):
        corpora.load_cadec(folder)


def test_cadec_fixture_sample():
    reports = corpora.load_cadec(FIXTURES / "cadec_sample")
    by_id = {r["id"]: r for r in reports}
    assert sorted(by_id) == ["AMBIEN.4", "CYMBALTA.2", "FORUM.3", "LIPITOR.1"]
    assert by_id["CYMBALTA.2"]["drugs"] == ["Cymbalta", "Zoloft"]
    assert by_id["CYMBALTA.2"]["adverse_events"] == ["legs stiff", "dizzy", "dry mouth"]
    assert by_id["FORUM.3"]["drugs"] == []
    assert by_id["LIPITOR.1"]["adverse_events"] == ["muscle pain", "felt very tired"]
    assert by_id["AMBIEN.4"]["adverse_events"] == ["groggy", "forgetful"]


# ---- ADE Corpus v2 ----------------------------------------------------------------------------------
def ade_line(pmid, sentence, effect, drug, shift=500, e_at=None, d_at=None):
    """A DRUG-AE.rel line whose offsets count from an abstract start `shift` characters earlier."""
    e = sentence.find(effect) if e_at is None else e_at
    d = sentence.find(drug) if d_at is None else d_at
    return (f"{pmid}|{sentence}|{effect}|{shift + e}|{shift + e + len(effect)}|{drug}|"
            f"{shift + d}|{shift + d + len(drug)}")


def test_ade_groups_rows_into_reports(tmp_path):
    s1 = "Rash and fever followed amoxicillin and ibuprofen."
    s2 = "Ototoxicity was seen with gentamicin."
    path = tmp_path / "DRUG-AE.rel"
    path.write_text("\n".join([
        ade_line("111", s1, "Rash", "amoxicillin"), ade_line("111", s1, "fever", "amoxicillin"),
        ade_line("111", s1, "Rash", "ibuprofen"), "",
        ade_line("111", s2, "Ototoxicity", "gentamicin", shift=900),
        ade_line("222", s2, "Ototoxicity", "gentamicin", shift=3)]) + "\n")
    reports = corpora.load_ade(path)
    assert [r["id"] for r in reports] == ["ade-111-1", "ade-111-2", "ade-222-1"]
    r = reports[0]
    assert r["text"] == s1
    assert r["drugs"] == ["amoxicillin", "ibuprofen"]
    assert r["adverse_events"] == ["Rash", "fever"]
    assert [(s["label"], s["start"], s["text"]) for s in r["spans"]] == [
        ("adverse_event", 0, "Rash"), ("adverse_event", 9, "fever"),
        ("drug", 24, "amoxicillin"), ("drug", 40, "ibuprofen")]
    for rec in reports:
        validate_report(rec)


def test_ade_repeated_string_uses_offset_distance(tmp_path):
    s = "After insulin was stopped, hypoglycemia recurred when insulin was restarted."
    second = s.rfind("insulin")
    path = tmp_path / "DRUG-AE.rel"
    path.write_text(ade_line("7", s, "hypoglycemia", "insulin", d_at=second) + "\n")
    r = corpora.load_ade(path)[0]
    drug_span = [sp for sp in r["spans"] if sp["label"] == "drug"][0]
    assert drug_span["start"] == second


def test_ade_pipe_inside_sentence_and_case_fallback(tmp_path):
    s = "Dose A|B of Methotrexate caused Pneumonitis."
    line = ade_line("9", s, "Pneumonitis", "Methotrexate").replace("|Pneumonitis|", "|pneumonitis|")
    path = tmp_path / "DRUG-AE.rel"
    path.write_text(line + "\n")
    r = corpora.load_ade(path)[0]
    assert r["text"] == s
    assert r["adverse_events"] == ["Pneumonitis"]  # the sentence's own spelling


@pytest.mark.parametrize("line,message", [
    ("1|too|few|fields", r"DRUG-AE.rel:2: expected 8 '\|'-separated fields"),
    ("1|A cough on enalapril.|cough|x|7|enalapril|12|21", r"DRUG-AE.rel:2: offsets must be integers"),
    ("1|A cough on enalapril.||2|7|enalapril|12|21", r"DRUG-AE.rel:2: empty PMID, sentence, effect or drug"),
])
def test_ade_malformed_line_names_file_and_line(tmp_path, line, message):
    path = tmp_path / "DRUG-AE.rel"
    path.write_text(ade_line("5", "Headache after nitroglycerin.", "Headache", "nitroglycerin") + "\n"
                    + line + "\n")
    with pytest.raises(DataError, match=message):
        corpora.load_ade(path)


def test_ade_unlocatable_pair_warns_or_raises(tmp_path):
    good = ade_line("5", "Headache after nitroglycerin.", "Headache", "nitroglycerin")
    path = tmp_path / "DRUG-AE.rel"
    path.write_text(good + "\n" + "6|A cough on enalapril.|wheeze|2|8|enalapril|12|21\n"
                    + "7|Edema on   amlodipine.|edema|0|5|lisinopril|9|19\n")
    with pytest.warns(corpora.CorpusWarning) as caught:
        reports = corpora.load_ade(path)
    messages = [str(w.message) for w in caught]
    assert any("DRUG-AE.rel:2: effect 'wheeze' does not occur" in m for m in messages)
    assert any("DRUG-AE.rel:3: drug 'lisinopril' does not occur" in m for m in messages)
    assert [r["id"] for r in reports] == ["ade-5-1"]  # sentences left without a pair are dropped
    with pytest.raises(corpora.AnnotationMismatch, match=r"DRUG-AE.rel:2: effect 'wheeze'"):
        corpora.load_ade(path, strict=True)


def test_ade_whitespace_insensitive_location(tmp_path):
    s = "Acute  renal failure after tenofovir."
    path = tmp_path / "DRUG-AE.rel"
    path.write_text(f"8|{s}|acute renal failure|0|20|tenofovir|27|36\n")
    r = corpora.load_ade(path, strict=True)[0]
    assert r["adverse_events"] == ["Acute  renal failure"]  # the sentence's own text


def test_ade_fixture_sample():
    reports = corpora.load_ade(FIXTURES / "ade_sample" / "DRUG-AE.rel")
    assert len(reports) == 4
    lith = [r for r in reports if r["id"] == "ade-10000002-1"][0]
    assert lith["drugs"] == ["hydrochlorothiazide", "lithium carbonate"]
    assert lith["adverse_events"] == ["lithium toxicity"]


# ---- conversion -------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind,src,jsonl", [
    ("cadec", "cadec_sample", "cadec_sample.jsonl"),
    ("ade", "ade_sample/DRUG-AE.rel", "ade_sample.jsonl"),
])
def test_committed_jsonl_samples_match_their_sources(kind, src, jsonl):
    """The committed JSONL (what --test-file points at) is exactly the conversion of the sample."""
    assert read_jsonl(FIXTURES / jsonl) == json.loads(json.dumps(corpora.load_corpus(kind, FIXTURES / src)))
    assert len(load_reports(FIXTURES / jsonl)) == 4


def test_convert_corpus_and_cli(tmp_path):
    out = tmp_path / "cadec.jsonl"
    assert corpora.convert_corpus("cadec", FIXTURES / "cadec_sample", out) == 4
    assert read_jsonl(out) == corpora.load_cadec(FIXTURES / "cadec_sample")
    cli_out = tmp_path / "ade.jsonl"
    done = subprocess.run([sys.executable, "-m", "helpers.corpora", "ade",
                           str(FIXTURES / "ade_sample" / "DRUG-AE.rel"), str(cli_out)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "4 reports (6 drugs, 5 adverse events)" in done.stdout
    assert len(read_jsonl(cli_out)) == 4
    bad = subprocess.run([sys.executable, "-m", "helpers.corpora", "cadec", str(tmp_path), str(out)],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "needs 'text/' and 'original/'" in bad.stderr
    with pytest.raises(ValueError, match="unknown corpus kind"):
        corpora.load_corpus("n2c2", tmp_path)
