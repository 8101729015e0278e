"""Step 1 (helpers.scrape): list cleaning, both parsers on shipped fixtures, the shipped records,
and whole runs against a real HTTP server on 127.0.0.1 (no mocking)."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from helpers import paths
from helpers.io import DataError, read_json, write_json
from helpers.schemas import DRUG_KEYS, SIDE_EFFECT_GROUPS, all_side_effects, load_drug_records
from helpers.scrape import (CURATED_GENERATOR, STUDY_DRUGS, ScrapeError, classify_intro, tidy_term_list,
                            curated_page, drugs_com_url, name_index, openfda_url, parse_drugs_com,
                            parse_openfda, resolve_drugs, scrape, side_effect_counts, slugify,
                            split_terms)

FIX = Path(__file__).parent / "fixtures" / "scrape"
GENERICS = ("Infliximab", "Rituximab", "Etanercept", "Doxycycline", "Metoprolol", "Lisinopril",
            "Amlodipine", "Atorvastatin")


def _load_local_server():
    """The shared test server module (tests/fixtures/scrape/local_server.py), loaded once."""
    name = "scrape_local_server"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, FIX / "local_server.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


local_server = _load_local_server()
Answer, LocalServer = local_server.Answer, local_server.LocalServer


def fixture(name: str) -> str:
    return (FIX / name).read_text(encoding="utf-8")


# ---- list cleaning ----------------------------------------------------------------------------
@pytest.mark.parametrize("text,expected", [
    ("hives; difficult breathing; swelling of your face, lips, tongue, or throat.",
     ["hives", "difficult breathing", "swelling of your face, lips, tongue, or throat"]),
    ("headache, nausea, diarrhea; or", ["headache", "nausea", "diarrhea"]),
    ("liver problems - loss of appetite, upper stomach pain, dark urine, or",
     ["liver problems", "loss of appetite", "upper stomach pain", "dark urine"]),
    ("low blood sugar--headache, hunger", ["low blood sugar", "headache", "hunger"]),
    ("signs of an infection such as fever", ["infection such as fever"]),
    ("you may have joint\u00a0pain;", ["joint pain"]),
    ("a light-headed feeling, like you might pass out;", ["a light-headed feeling, like you might pass out"]),
    ("flushing (warmth, redness, or tingling)", ["flushing (warmth, redness, or tingling)"]),
    ("Headache; headache;  HEADACHE", ["Headache"]),
    ("symptoms of depression; and", ["depression"]),
])
def test_split_terms(text, expected):
    assert split_terms(text) == expected


def test_tidy_term_list_merges_duplicates_keeping_first_wording_and_drops_fillers():
    assert tidy_term_list(["Dry mouth", "dry  mouth;", "or", " and ", "", "blurred vision."]) == \
        ["Dry mouth", "blurred vision"]


@pytest.mark.parametrize("intro,group", [
    ("Get emergency medical help if you have signs of an allergic reaction:", "allergic"),
    ("Call your doctor at once if you have:", "serious"),
    ("Common side effects of Examplor may include:", "common"),
    ("Less common side effects may include:", "other"),
    ("This is not a complete list of side effects.", None),
])
def test_classify_intro(intro, group):
    assert classify_intro(intro) == group


def test_names_slugs_and_urls():
    assert slugify("AndroGel") == "androgel" and slugify("Toprol-XL 25 mg") == "toprol-xl-25-mg"
    with pytest.raises(ValueError):
        slugify(" -- ")
    assert resolve_drugs("all") == list(STUDY_DRUGS) and len(STUDY_DRUGS) == 50
    assert resolve_drugs("Lipitor, lipitor ,Zocor") == ["Lipitor", "Zocor"]
    with pytest.raises(ValueError):
        resolve_drugs(" , ")
    assert drugs_com_url("Lipitor") == "https://www.drugs.com/lipitor.html"
    assert openfda_url("Advair Diskus", limit=3) == (
        "https://api.fda.gov/drug/label.json?search=openfda.brand_name:%22Advair%20Diskus%22&limit=3")


# ---- drugs.com layout -------------------------------------------------------------------------
def test_parse_drugs_com_full_page():
    rec = parse_drugs_com(fixture("drugscom_full.html"), "Examplor", "https://x/examplor.html", "2025-01-01T00:00:00Z")
    assert set(rec) == set(DRUG_KEYS)
    assert rec["generic_names"] == ["exampletin"]                 # pronunciation stripped
    assert rec["brand_names"] == ["Examplor", "Examplor XR"]     # "... show all 3 brands" stripped
    assert rec["drug_class"] == "Example inhibitors"
    assert rec["uses"] == ["high example levels in adults",
                           "lower the risk of heart attack in people with diabetes"]
    se = rec["side_effects"]
    assert se["allergic"] == ["hives", "difficult breathing", "swelling of your face, lips, tongue, or throat"]
    assert se["serious"][:3] == ["muscle pain, tenderness, or weakness", "liver problems", "loss of appetite"]
    for term in ("kidney problem", "little or no urinating", "swelling in your feet or ankles",
                 "low blood sugar", "irritability", "a light-headed feeling, like you might pass out"):
        assert term in se["serious"]
    assert se["common"] == ["headache", "nausea", "diarrhea", "joint pain", "stuffy nose", "sneezing",
                            "sore throat", "upset stomach"]        # "Headache" merged, "or" gone
    flat = " | ".join(all_side_effects(rec))
    assert "warning item" not in flat and "10 mg" not in flat and "Pill identifier" not in flat
    assert rec["missing_sections"] == [] and rec["fetched_at"] == "2025-01-01T00:00:00Z"


def test_page_missing_a_section_says_which():
    rec = parse_drugs_com(fixture("drugscom_missing_section.html"), "Missingol", "u", "t")
    assert rec["missing_sections"] == ["side_effects"]
    assert rec["uses"] == ["chronic example disease"]
    assert all(rec["side_effects"][g] == [] for g in SIDE_EFFECT_GROUPS)
    assert rec["brand_names"] == ["Nomore"] and rec["generic_names"] == ["missingol"]


def test_odd_markup():
    rec = parse_drugs_com(fixture("drugscom_odd_markup.html"), "Oddity", "u", "t")
    assert rec["uses"] == ["odd fever", "strange cough"]            # unclosed <LI>s
    se = rec["side_effects"]
    assert se["serious"][:2] == ["seizures", "fainting"]             # bare text after a nested h2
    assert se["common"] == ["dry mouth", "blurred vision"]            # <br> list, duplicate merged
    assert se["allergic"] == ["hives", "difficult breathing", "swelling in your face or throat"]
    assert "severe skin reaction" in se["serious"] and "burning eyes" in se["serious"]
    assert se["other"] == ["hair loss", "ringing in ears"]            # nested "Less common:" list
    flat = all_side_effects(rec)
    assert not any("parse me" in t or t in ("a", "b", "c") for t in flat)
    assert rec["drug_class"] == "odd agents" and rec["generic_names"] == ["odditrine"]


def test_nested_list_inside_a_wrapper_keeps_its_group_and_lead():
    html = ("<h1>W</h1><h2 id='uses'>u</h2><ul><li>wrapped use</li></ul><h2 id='side-effects'>s</h2>"
            "<p>Call your doctor at once if you have:</p><ul><li><div>signs of nerve damage:<ul>"
            "<li>numbness</li><li>tingling<ul><li>burning feet</li></ul></li></ul></div></li></ul>"
            "<p>Common side effects may include:</p><ul><li>nausea</li></ul>")
    se = parse_drugs_com(html, "W", "u", "t")["side_effects"]
    assert se["serious"] == ["nerve damage", "numbness", "tingling", "burning feet"]
    assert se["common"] == ["nausea"]


def test_garbled_page_is_an_error_not_a_record():
    with pytest.raises(DataError, match="no 'uses' and no 'side-effects'"):
        parse_drugs_com(fixture("drugscom_garbled.html"), "Garbled", "https://x/garbled.html", "t")
    with pytest.raises(DataError, match="empty page"):
        parse_drugs_com("  ", "Garbled", "u", "t")


# ---- openFDA layout ---------------------------------------------------------------------------
def test_parse_openfda_picks_the_matching_newest_label():
    rec = parse_openfda(fixture("openfda_labels.json"), "Examplor", "https://api/x", "2025-01-01T00:00:00Z")
    assert set(rec) == set(DRUG_KEYS) and rec["source"] == "openfda"
    assert rec["generic_names"] == ["exampletin"] and rec["brand_names"] == ["Examplor", "Examplor XR"]
    assert rec["drug_class"] == "Example Inhibitor"
    assert rec["uses"] == ["As an adjunct to diet to reduce elevated example levels in adults",
                           "To reduce the risk of myocardial infarction in adults with diabetes"]
    se = rec["side_effects"]
    assert se["common"] == ["nasopharyngitis", "arthralgia", "diarrhea", "pain in extremity",
                            "urinary tract infection"]
    assert se["serious"] == ["Myopathy and rhabdomyolysis", "Hepatic enzyme abnormalities"]
    assert set(se["allergic"]) == {"angioedema", "urticaria", "Hypersensitivity reactions"}
    assert se["other"] == ["pancreatitis", "abdominal pain", "dizziness", "memory impairment"]
    other = parse_openfda(fixture("openfda_labels.json"), "Othertin", "u", "t")
    assert other["generic_names"] == ["othertin"] and other["side_effects"]["common"] == ["rash"]
    assert other["brand_names"] == ["Otherdrug"]


def test_parse_openfda_empty_fields_and_errors():
    with pytest.raises(DataError, match="neither indications nor adverse reactions"):
        parse_openfda(fixture("openfda_empty_fields.json"), "Emptyol", "u", "t")
    with pytest.raises(DataError, match="NOT_FOUND"):
        parse_openfda(fixture("openfda_not_found.json"), "Nothing", "u", "t")
    with pytest.raises(DataError, match="not JSON"):
        parse_openfda("<html>", "Nothing", "u", "t")
    with pytest.raises(DataError, match="no labels"):
        parse_openfda({"results": []}, "Nothing", "u", "t")
    missing = {"results": [{"openfda": {"brand_name": ["HALF"]}, "indications_and_usage": [
        "HALF is indicated for the treatment of half disease."], "adverse_reactions": []}]}
    assert parse_openfda(missing, "Half", "u", "t")["missing_sections"] == ["side_effects"]


# ---- the shipped records ----------------------------------------------------------------------
def test_cache_source_rebuilds_the_50_shipped_records_byte_identically(tmp_path):
    result = scrape("all", "cache", out_dir=tmp_path / "drugs", cache_dir=tmp_path / "empty-cache",
                    progress=False)
    assert result.failures == [] and len(result.records) == 50
    assert result.inputs == [curated_page(n) for n in STUDY_DRUGS]
    shipped = paths.drugs_dir()
    for rec in result.records:
        name = f"{slugify(rec['name'])}.json"
        assert (tmp_path / "drugs" / name).read_bytes() == (shipped / name).read_bytes(), name


def test_every_shipped_record_is_complete_and_curated():
    records = load_drug_records(paths.drugs_dir())
    assert sorted(r["name"] for r in records) == sorted(STUDY_DRUGS)
    for rec in records:
        assert rec["uses"], rec["name"]
        assert len(all_side_effects(rec)) >= 8, rec["name"]
        assert rec["generic_names"] and rec["brand_names"] and rec["drug_class"], rec["name"]
        assert rec["missing_sections"] == [] and rec["source"] == "curated"
        page = curated_page(rec["name"])
        assert rec["source_url"] == paths.rel(page)
        assert f'<meta name="generator" content="{CURATED_GENERATOR}">' in page.read_text(encoding="utf-8")
    index = name_index(records)
    assert index["lipitor"] == "Lipitor" and index["toprol-xl"] == "Metoprolol"
    by_name = {r["name"]: r for r in records}
    assert by_name["Lipitor"]["generic_names"] == ["atorvastatin"]
    assert "Lipitor" in by_name["Atorvastatin"]["brand_names"]
    for generic in GENERICS:                         # generics map to their brands too
        rec = by_name[generic]
        assert rec["generic_names"] == [generic.lower()] and rec["brand_names"], generic
        assert all(index[b.lower()] for b in rec["brand_names"])


def test_side_effect_counts_rows():
    rec = parse_drugs_com(fixture("drugscom_full.html"), "Examplor", "u", "t")
    (row,) = side_effect_counts([rec])
    assert row["drug"] == "Examplor" and row["uses"] == 2 and row["allergic"] == 3
    assert row["total"] == sum(row[g] for g in SIDE_EFFECT_GROUPS) == len(all_side_effects(rec))


# ---- bad input and failures -------------------------------------------------------------------
def test_unknown_drug_in_cache_mode_fails_alone(tmp_path):
    result = scrape(["Lipitor", "Nosuchdrugium"], "cache", out_dir=tmp_path, cache_dir=tmp_path / "c",
                    progress=False)
    assert [r["name"] for r in result.records] == ["Lipitor"]
    (failure,) = result.failures
    assert failure["drug"] == "Nosuchdrugium" and "no cached page" in failure["reason"]
    assert result.summary()["failed"] == 1
    with pytest.raises(ScrapeError, match="no drug at all"):
        scrape(["Nosuchdrugium"], "cache", out_dir=tmp_path, cache_dir=tmp_path / "c", progress=False)
    with pytest.raises(ValueError, match="source must be"):
        scrape(["Lipitor"], "web", out_dir=tmp_path)


def test_garbled_page_never_replaces_a_good_record(tmp_path):
    pages = tmp_path / "pages"
    (pages / "curated").mkdir(parents=True)
    good = {"name": "Garbled", "kept": True}
    write_json(tmp_path / "out" / "garbled.json", good)
    (pages / "curated" / "garbled.html").write_text(
        f'<meta name="generator" content="{CURATED_GENERATOR}"><meta name="written" content="t">'
        + fixture("drugscom_garbled.html"), encoding="utf-8")
    (pages / "curated" / "examplor.html").write_text(fixture("drugscom_full.html"), encoding="utf-8")
    (pages / "curated" / "lipitor.html").write_bytes(curated_page("Lipitor").read_bytes())
    result = scrape(["Garbled", "Examplor", "Lipitor"], "cache", out_dir=tmp_path / "out", pages=pages,
                    cache_dir=tmp_path / "c", progress=False)
    reasons = {f["drug"]: f["reason"] for f in result.failures}
    assert "no 'uses' and no 'side-effects'" in reasons["Garbled"]
    assert "not a curated page" in reasons["Examplor"]            # unmarked pages are refused
    assert read_json(tmp_path / "out" / "garbled.json") == good
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["garbled.json", "lipitor.json"]


# ---- live sources against a local server ------------------------------------------------------
def _drugs_com_routes() -> dict:
    return {"/robots.txt": Answer(200, "User-agent: *\nDisallow: /account/\n"),
            "/examplor.html": Answer(200, fixture("drugscom_full.html"), {"Content-Type": "text/html"}),
            "/missingol.html": Answer(200, fixture("drugscom_missing_section.html")),
            "/garbled.html": Answer(200, fixture("drugscom_garbled.html")),
            "/flaky.html": [Answer(503, "busy"), Answer(200, fixture("drugscom_odd_markup.html"))]}


def test_drugs_com_source_against_a_local_server(tmp_path):
    opts = dict(out_dir=tmp_path / "out", cache_dir=tmp_path / "cache", rate_limit_s=0.0,
                timeout_s=2.0, retries=1, progress=False)
    names = ["Examplor", "Missingol", "Garbled", "Nosuchdrug", "Flaky"]
    with LocalServer(_drugs_com_routes()) as srv:
        result = scrape(names, "drugs.com", base_url=srv.url, **opts)
        assert sorted(r["name"] for r in result.records) == ["Examplor", "Flaky", "Missingol"]
        reasons = {f["drug"]: f["reason"] for f in result.failures}
        assert "HTTP 404" in reasons["Nosuchdrug"]
        assert "no 'uses' and no 'side-effects'" in reasons["Garbled"]
        files = sorted(p.name for p in (tmp_path / "out").iterdir())
        assert files == ["examplor.json", "flaky.json", "missingol.json"]
        for rec in result.records:
            assert set(rec) == set(DRUG_KEYS) and rec["source"] == "drugs.com"
            assert rec["source_url"] == f"{srv.url}/{slugify(rec['name'])}.html"
        assert read_json(tmp_path / "out" / "missingol.json")["missing_sections"] == ["side_effects"]
        assert srv.count("/flaky.html") == 2 and srv.count("/robots.txt") == 1
        assert len(result.inputs) == 3 and all(p.is_relative_to(tmp_path / "cache") for p in result.inputs)
        first = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
        hits = len(srv.hits)
        again = scrape(["Examplor", "Missingol", "Flaky"], "drugs.com", base_url=srv.url, **opts)
        assert len(srv.hits) == hits                          # a rerun fetches nothing it has
        assert {r["name"] for r in again.records} == {"Examplor", "Missingol", "Flaky"}
    # offline afterwards: source=cache parses the HTTP cache into the same bytes
    offline = scrape(["Examplor", "Missingol", "Flaky"], "cache", base_url=srv.url,
                     out_dir=tmp_path / "offline", cache_dir=tmp_path / "cache", progress=False)
    assert {r["source"] for r in offline.records} == {"drugs.com"}
    assert {p.name: p.read_bytes() for p in (tmp_path / "offline").iterdir()} == first


def test_openfda_source_against_a_local_server(tmp_path):
    labels = fixture("openfda_labels.json")
    q = "/drug/label.json?search=openfda.{}:\"{}\"&limit=5"
    routes = {q.format("brand_name", "Examplor"): Answer(200, labels, {"Content-Type": "application/json"}),
              q.format("brand_name", "exampletin"): Answer(404, fixture("openfda_not_found.json")),
              q.format("generic_name", "exampletin"): Answer(200, labels),
              q.format("brand_name", "Emptyol"): Answer(200, fixture("openfda_empty_fields.json"))}
    with LocalServer(routes) as srv:
        result = scrape(["Examplor", "exampletin", "Emptyol", "Nosuch"], "openfda", base_url=srv.url,
                        out_dir=tmp_path / "out", cache_dir=tmp_path / "cache", rate_limit_s=0.0,
                        timeout_s=2.0, retries=0, progress=False)
        assert srv.count("/robots.txt") == 1                  # 404 robots.txt: allowed
    by_name = {r["name"]: r for r in result.records}
    assert set(by_name) == {"Examplor", "exampletin"}
    assert by_name["exampletin"]["source_url"].endswith("generic_name:%22exampletin%22&limit=5")
    assert by_name["exampletin"]["brand_names"] == ["Examplor", "Examplor XR"]
    assert by_name["Examplor"]["side_effects"] == by_name["exampletin"]["side_effects"]
    reasons = {f["drug"]: f["reason"] for f in result.failures}
    assert "neither indications nor adverse reactions" in reasons["Emptyol"]
    assert "HTTP 404" in reasons["Nosuch"]
    for rec in result.records:
        assert set(rec) == set(DRUG_KEYS) and rec["source"] == "openfda"
        json.dumps(rec)


@pytest.mark.slow
def test_notebook_with_a_live_source_against_a_local_server(tmp_path, monkeypatch):
    """The 01_scrape notebook itself, source=drugs.com pointed at 127.0.0.1, in a scratch root."""
    papermill = pytest.importorskip("papermill")
    monkeypatch.setenv("AE_STUDY_ROOT", str(tmp_path))
    (tmp_path / "configs").symlink_to(Path(__file__).parents[1] / "configs")
    with LocalServer(_drugs_com_routes()) as srv:
        papermill.execute_notebook(
            str(Path(__file__).parents[1] / "notebooks" / "01_scrape.ipynb"),
            str(tmp_path / "01_scrape.out.ipynb"), cwd=str(tmp_path), progress_bar=False,
            parameters=dict(overrides=dict(source="drugs.com", drugs=["Examplor", "Nosuchdrug", "Missingol"],
                                           base_url=srv.url, rate_limit_s=0.0, retries=0, timeout_s=2.0)))
    records = load_drug_records(tmp_path / "data" / "raw" / "drugs")
    assert [r["name"] for r in records] == ["Examplor", "Missingol"]
    assert all(set(r) == set(DRUG_KEYS) and r["source"] == "drugs.com" for r in records)
    manifest = read_json(tmp_path / "data" / "raw" / "drugs" / "manifest.json")
    assert manifest["params"]["source"] == "drugs.com"
    assert manifest["extra"]["failed"] == 1 and "HTTP 404" in manifest["extra"]["failures"][0]["reason"]
    assert len(manifest["inputs"]) == 2 and len(manifest["outputs"]) == 2
    assert (tmp_path / "artifacts" / "figures" / "01_scrape" / "side_effects_per_drug_smoke.png").exists()
