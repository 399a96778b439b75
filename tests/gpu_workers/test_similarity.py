import numpy as np
import pytest


def test_identical_texts_score_one(similarity):
    scores = similarity.pairwise(["A cat sleeps on a sofa."], ["A cat sleeps on a sofa."])

    assert scores[0] == pytest.approx(1.0, abs=1e-4)


def test_related_above_unrelated(similarity):
    related, unrelated = similarity.pairwise(
        ["A cat sleeps on a sofa.", "A cat sleeps on a sofa."],
        ["A kitten naps on a couch.", "Quarterly tax rates rose in March."],
    )

    assert related > unrelated + 0.3


def test_embeddings_normalized(similarity):
    embeddings = similarity.embed(["a horse", "a red rocket", ""])

    assert embeddings.shape == (3, similarity.dimension)
    assert np.linalg.norm(embeddings[:2], axis=1) == pytest.approx([1.0, 1.0], abs=1e-5)
    assert not embeddings[2].any()


def test_best_reference_is_max(similarity):
    candidate = "A dog runs along the beach."
    references = ["A plate of pasta.", "A dog running on sand by the sea.", "A city at night."]

    best = similarity.best_reference([candidate], [references])[0]
    per_reference = similarity.pairwise([candidate] * 3, references)

    assert best == pytest.approx(max(per_reference), abs=1e-6)
    assert best == pytest.approx(per_reference[1], abs=1e-6)


def test_best_reference_empty_cases(similarity):
    scores = similarity.best_reference(["", "   ", "a cat"], [["a cat"], ["a cat"], []])

    assert scores == [0.0, 0.0, 0.0]


def test_best_reference_length_mismatch(similarity):
    with pytest.raises(ValueError, match="2 candidates but 1 reference lists"):
        similarity.best_reference(["a", "b"], [["a"]])


def test_matrix_matches_pairwise(similarity):
    a = ["a smiling astronaut", "a tabby cat"]
    b = ["an astronaut", "a cat", "a spoon"]

    matrix = similarity.matrix(a, b)

    assert matrix.shape == (2, 3)
    assert matrix[1, 1] == pytest.approx(similarity.pairwise(["a tabby cat"], ["a cat"])[0], abs=1e-5)
    assert matrix[0].argmax() == 0
    assert matrix[1].argmax() == 1


def test_matrix_empty_sides(similarity):
    assert similarity.matrix([], ["a"]).shape == (0, 1)
    assert similarity.matrix(["a"], []).shape == (1, 0)


def test_pairwise_length_mismatch(similarity):
    with pytest.raises(ValueError, match="equal length, got 1 and 2"):
        similarity.pairwise(["a"], ["a", "b"])


def test_cached_embedding_equals_fresh(similarity, monkeypatch):
    text = "A lighthouse on a rocky coast at dawn, seen from a boat."
    first = similarity.embed([text])[0]

    def fail(*args, **kwargs):
        raise AssertionError("the model ran for a cached text")

    monkeypatch.setattr(similarity.model, "encode", fail)
    second = similarity.embed(["", text])

    assert np.array_equal(second[1], first)
    assert not second[0].any()


def test_embedding_independent_of_batch(similarity):
    text = "Two horses grazing in a foggy field."
    similarity._cache.clear()
    alone = similarity.embed([text])[0]
    similarity._cache.clear()

    together = similarity.embed(["A much longer sentence about a train crossing a bridge in the snow.", text])[1]

    assert np.array_equal(alone, together)
