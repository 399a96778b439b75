"""Read APIs over evaluation evidence: rank history, the match graph and the metric registry."""

import pytest
from rest_framework.test import APIClient

from backend.catalog.models import ModelEntry
from backend.evaluation import metrics as metric_lib
from backend.evaluation.models import ItemKind, Match, ModelScore, RankSnapshot, Suite, SuiteItem
from backend.evaluation.services import store_job_matches
from backend.jobs.models import Job, JobState


@pytest.fixture
def anonymous():
    return APIClient()


def make_entry(slug, task="captioning"):
    architecture = "kosmos-2" if task == "captioning" else "sd3"
    return ModelEntry.objects.create(slug=slug, name=slug.upper(), task=task, architecture=architecture)


def make_items(count, kind=ItemKind.IMAGE):
    suite = Suite.objects.create(slug=f"graph-{kind}", name="Graph suite")
    return [SuiteItem.objects.create(suite=suite, kind=kind, position=n, key=str(n)) for n in range(count)]


def play(entries_scores, items, state=JobState.SUCCEEDED):
    """Store one job's matches from ``{entry: [per-item primary score]}`` through the service."""
    job = Job.objects.create(state=state, suite=items[0].suite)
    per_model_rows = {}
    for entry, scores in entries_scores.items():
        primary = metric_lib.PRIMARY_METRIC[entry.task]
        per_model_rows[entry] = [{"item_id": item.id, primary: score} for item, score in zip(items, scores)]
    store_job_matches(job, per_model_rows)
    return job


# Match graph ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_graph_counts_and_wins(anonymous):
    alpha, beta, gamma = make_entry("alpha"), make_entry("beta"), make_entry("gamma")
    make_entry("idle")
    make_entry("painter", task="text-to-image")
    items = make_items(3)
    play({alpha: [0.9, 0.2, 0.5], beta: [0.1, 0.8, 0.5]}, items)
    play({alpha: [0.9, 0.9, 0.9], gamma: [0.1, 0.1, 0.1]}, items)
    play({alpha: [0.0, 0.0, 0.0], beta: [0.9, 0.9, 0.9]}, items, state=JobState.FAILED)
    ModelScore.objects.create(model=alpha, rating=1100.0)

    response = anonymous.get("/api/v1/matches/graph/", {"task": "captioning"})

    assert response.status_code == 200
    body = response.json()
    assert body["task"] == "captioning"
    assert body["matches"] == 6
    assert body["edges"] == [
        {"a": "alpha", "b": "beta", "count": 3, "wins_a": 1, "wins_b": 1, "ties": 1},
        {"a": "alpha", "b": "gamma", "count": 3, "wins_a": 3, "wins_b": 0, "ties": 0},
    ]
    nodes = {node["slug"]: node for node in body["nodes"]}
    assert list(nodes) == ["alpha", "beta", "gamma", "idle"]
    assert nodes["alpha"] == {"slug": "alpha", "name": "ALPHA", "task": "captioning", "rating": 1100.0,
                              "matches": 6}
    assert nodes["beta"]["matches"] == 3
    assert nodes["beta"]["rating"] is None
    assert nodes["idle"]["matches"] == 0


@pytest.mark.django_db
def test_graph_without_task(anonymous):
    alpha, beta = make_entry("alpha"), make_entry("beta")
    painter, sketcher = make_entry("painter", "text-to-image"), make_entry("sketcher", "text-to-image")
    play({alpha: [0.9], beta: [0.1]}, make_items(1))
    play({painter: [0.2, 0.3], sketcher: [0.3, 0.2]}, make_items(2, kind=ItemKind.PROMPT))

    body = anonymous.get("/api/v1/matches/graph/").json()
    only_t2i = anonymous.get("/api/v1/matches/graph/?task=text-to-image").json()

    assert body["task"] is None
    assert body["matches"] == 3
    assert [(edge["a"], edge["b"]) for edge in body["edges"]] == [("alpha", "beta"), ("painter", "sketcher")]
    assert [node["slug"] for node in only_t2i["nodes"]] == ["painter", "sketcher"]
    assert only_t2i["edges"] == [{"a": "painter", "b": "sketcher", "count": 2, "wins_a": 1, "wins_b": 1,
                                  "ties": 0}]
    assert Match.objects.count() == 3


@pytest.mark.django_db
def test_graph_unknown_task(anonymous):
    response = anonymous.get("/api/v1/matches/graph/", {"task": "music"})

    assert response.status_code == 400
    error = response.json()["error"]
    assert "unknown task 'music'" in error["message"]
    assert list(error["fields"]) == ["task"]


# Rank history -----------------------------------------------------------------------------


def snapshot(reason, ranks):
    entries = [{"slug": slug, "rank": rank, "composite": 50.0 - rank, "subscores": {}, "rating": None,
                "matches": 0} for slug, rank in ranks.items()]
    return RankSnapshot.objects.create(reason=reason, entries=entries, content_sha256=reason.ljust(64, "0"))


@pytest.mark.django_db
def test_history_newest_first(anonymous):
    snapshot("job 1", {"alpha": 1, "beta": 2})
    snapshot("job 2", {"alpha": 2, "beta": 1})

    response = anonymous.get("/api/v1/rankings/history/")

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 2
    assert [row["reason"] for row in body["results"]] == ["job 2", "job 1"]
    assert [(entry["slug"], entry["rank"]) for entry in body["results"][0]["entries"]] == [("alpha", 2), ("beta", 1)]
    assert set(body["results"][0]) == {"id", "created_at", "reason", "entries"}


@pytest.mark.django_db
def test_history_one_model(anonymous):
    snapshot("job 1", {"alpha": 1, "beta": 2})
    snapshot("job 2", {"alpha": 2, "beta": 1})

    body = anonymous.get("/api/v1/rankings/history/", {"model": "beta"}).json()

    assert [[(e["slug"], e["rank"]) for e in row["entries"]] for row in body["results"]] == [
        [("beta", 1)], [("beta", 2)],
    ]


@pytest.mark.django_db
def test_history_paginated(anonymous):
    for n in range(3):
        snapshot(f"job {n}", {"alpha": 1})

    first = anonymous.get("/api/v1/rankings/history/").json()
    beyond = anonymous.get("/api/v1/rankings/history/", {"page": 2})

    assert set(first) == {"count", "next", "previous", "results"}
    assert first["count"] == 3
    assert first["next"] is None
    assert beyond.status_code == 404
    assert beyond.json()["error"]["code"] == "not_found"


# Metric registry --------------------------------------------------------------------------


@pytest.mark.django_db
def test_metrics_registry(anonymous):
    response = anonymous.get("/api/v1/metrics/")

    assert response.status_code == 200
    results = response.json()["results"]
    assert [row["name"] for row in results] == list(metric_lib.METRICS)
    similarity = next(row for row in results if row["name"] == "caption_similarity")
    assert similarity == {
        "name": "caption_similarity", "task": "captioning",
        "formula": metric_lib.METRICS["caption_similarity"].formula, "range": [-1.0, 1.0],
        "direction": "higher_is_better", "unit": "", "primary": True,
    }
    latency = next(row for row in results if row["name"] == "latency_p95")
    assert latency["range"] == [0.0, None]
    assert latency["direction"] == "lower_is_better"
    assert {row["name"] for row in results if row["primary"]} == {"caption_similarity", "adherence"}


@pytest.mark.django_db
def test_metrics_by_task(anonymous):
    body = anonymous.get("/api/v1/metrics/", {"task": "runtime"}).json()
    bad = anonymous.get("/api/v1/metrics/", {"task": "speed"})

    assert [row["name"] for row in body["results"]] == ["items_per_second", "latency_p50", "latency_p95"]
    assert bad.status_code == 400
    assert "unknown task 'speed'" in bad.json()["error"]["message"]


@pytest.mark.django_db
def test_schema_documents_endpoints():
    from drf_spectacular.generators import SchemaGenerator
    from drf_spectacular.settings import patched_settings

    # Only the paths are checked here, so the outgoing webhook definitions are left out.
    with patched_settings({"WEBHOOKS": []}):
        schema = SchemaGenerator().get_schema(request=None, public=True)

    for path in ("/api/v1/suites/", "/api/v1/suites/{slug}/", "/api/v1/rankings/history/",
                 "/api/v1/matches/graph/", "/api/v1/metrics/"):
        assert path in schema["paths"], path
    graph = schema["paths"]["/api/v1/matches/graph/"]["get"]
    assert [param["name"] for param in graph["parameters"]] == ["task"]
    upload = schema["paths"]["/api/v1/suites/"]["post"]
    assert "multipart/form-data" in upload["requestBody"]["content"]
