from __future__ import annotations

import datasets
import pytest

from tests.feedback.factories import ItemFactory, UserFactory

pytestmark = pytest.mark.django_db


def _review_all(api_for, campaign, experts, pick):
    for expert in experts:
        client = api_for(expert)
        while True:
            res = client.post(f"/api/v1/campaigns/{campaign.pk}/next/")
            if res.status_code == 204:
                break
            payload = res.json()
            responses = payload["item"]["responses"]
            body = {
                "preference": {"chosen": pick(responses), "strength": 2},
                "rationale": "clearer",
            }
            assert (
                client.post(
                    f"/api/v1/assignments/{payload['assignment']['id']}/submit/",
                    body,
                    format="json",
                ).status_code
                == 201
            )


def test_the_dpo_jsonl_download_loads_with_datasets(
    api_for, engineer, pairwise_campaign, tmp_path, django_capture_on_commit_callbacks
):
    pairwise_campaign.overlap = 3
    pairwise_campaign.save()
    ItemFactory.create_batch(6, campaign=pairwise_campaign)
    experts = [UserFactory(role="expert") for _ in range(3)]
    # Every expert prefers the response whose text starts with "Answer 1": a clear majority.
    _review_all(
        api_for,
        pairwise_campaign,
        experts,
        lambda rs: next(r["id"] for r in rs if r["text"].startswith("Answer 1")),
    )

    client = api_for(engineer)
    ds = client.post(
        "/api/v1/datasets/",
        {
            "name": "PR prefs",
            "campaigns": [pairwise_campaign.pk],
            "format": "dpo",
            "test_fraction": 0.3,
        },
        format="json",
    )
    assert ds.status_code == 201, ds.json()
    with django_capture_on_commit_callbacks(execute=True):
        built = client.post(f"/api/v1/datasets/{ds.json()['id']}/versions/")
    assert built.status_code == 202
    version = client.get(f"/api/v1/datasets/{ds.json()['id']}/versions/1/").json()
    assert version["status"] == "ready", version
    assert version["counts"]["train"] + version["counts"]["test"] == 6

    paths = {}
    for f in version["files"]:
        if f["path"].endswith(".jsonl"):
            res = client.get(f["url"])
            assert res.status_code == 200
            assert "attachment" in res["Content-Disposition"]
            target = tmp_path / f["path"].rsplit("/", 1)[-1]
            target.write_bytes(b"".join(res.streaming_content))
            paths[target.stem] = str(target)
    loaded = datasets.load_dataset("json", data_files=paths)
    rows = [*loaded["train"], *loaded.get("test", [])]
    assert len(rows) == 6
    for row in rows:
        assert row["prompt"][0]["role"] == "user"
        assert row["chosen"] == [{"role": "assistant", "content": row["chosen"][0]["content"]}]
        assert row["chosen"][0]["content"].startswith("Answer 1")
        assert row["rejected"][0]["content"].startswith("Answer 0")
        assert row["votes"] == 3
        assert row["agreement"] == 1.0


def test_an_expert_cannot_see_or_build_datasets(api_for, expert):
    client = api_for(expert)
    assert client.get("/api/v1/datasets/").json() == []
    assert client.post("/api/v1/datasets/1/versions/").status_code == 404
