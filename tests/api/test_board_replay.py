"""Issue #13, case 7: a replayed board form says what is stored, not what the replay asked."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.api.test_board import (  # noqa: F401  (fixtures)
    client,
    form_fields,
    post_outcome,
    score_row,
    scorelog,
    seed,
    settings,
    sign_in,
)


def test_a_replayed_form_with_another_choice_reports_the_stored_outcome(
    client: TestClient,  # noqa: F811
) -> None:
    seed(client, [score_row("L-7", 70)])
    sign_in(client)
    fields = form_fields(client.get("/board/leads/L-7").text)
    assert post_outcome(client, "L-7", fields, outcome="won")[1] == (
        "/board/leads/L-7?result=recorded&outcome=won"
    )
    # The same form sent again (back button, double click) with "lost" ticked this time.
    status, location = post_outcome(client, "L-7", fields, outcome="lost")
    assert (status, location) == (303, "/board/leads/L-7?result=duplicate&outcome=won")
    page = client.get(location).text
    assert "Already recorded: won (this form had been sent before)." in page
    assert "Already recorded: lost" not in page
    assert [o.outcome for o in scorelog(client).outcomes("L-7")] == ["won"]
