"""The campaign state table (domain.campaigns): every move it allows, every one it refuses, the
pause reason's rules, and the guardrail verdicts (marketing.guardrails). Pure: no store."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from mailprime.domain.campaigns import (
    Campaign,
    CampaignCounters,
    CampaignDraft,
    CampaignError,
    CampaignStatus,
    IllegalTransition,
    PauseReason,
    transition,
)
from mailprime.domain.ids import CampaignId, ListId, TemplateId
from mailprime.marketing.guardrails import GuardrailPolicy, evaluate

S = CampaignStatus
T0 = datetime(2030, 1, 1, tzinfo=UTC)
LEGAL = {
    (S.DRAFT, S.SCHEDULED), (S.DRAFT, S.SENDING), (S.DRAFT, S.CANCELLED),
    (S.SCHEDULED, S.DRAFT), (S.SCHEDULED, S.SENDING), (S.SCHEDULED, S.CANCELLED),
    (S.SENDING, S.PAUSED), (S.SENDING, S.SENT), (S.SENDING, S.CANCELLED),
    (S.PAUSED, S.SENDING), (S.PAUSED, S.CANCELLED),
}


def campaign(status: CampaignStatus, **kw: object) -> Campaign:
    values: dict[str, object] = {
        "id": CampaignId(1), "name": "c", "template_id": TemplateId(1), "list_ids": (ListId(1),),
        "segment_id": None, "from_address": "news@a.test", "from_name": "", "reply_to": None,
        "subject": None, "status": status, "rate_per_minute": 0, "scheduled_at": None, "track_opens": True,
        "track_clicks": True, "postal_address": "x", "created_at": T0, "updated_at": T0}
    values.update(kw)
    return Campaign(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(("src", "dst"), sorted(itertools.product(S, S)))
def test_every_pair_of_states(src: CampaignStatus, dst: CampaignStatus) -> None:
    at = T0 + timedelta(hours=1)
    reason = PauseReason.OPERATOR if dst is S.PAUSED else None
    if (src, dst) not in LEGAL:
        with pytest.raises(IllegalTransition) as info:
            transition(campaign(src), dst, at=at, reason=reason)
        assert f"is {src}" in info.value.message and f"become {dst}" in info.value.message
        assert info.value.http_status == 409
        return
    moved = transition(campaign(src), dst, at=at, reason=reason, detail="why")
    assert moved.status is dst and moved.updated_at == at
    assert moved.pause_reason is reason
    assert moved.pause_detail == ("why" if dst is S.PAUSED else "")
    assert moved.finished_at == (at if dst in (S.SENT, S.CANCELLED) else None)
    if dst is S.SENDING:
        assert moved.started_at == at


def test_final_states_say_so_and_started_at_is_kept() -> None:
    with pytest.raises(IllegalTransition, match="none: it is final"):
        transition(campaign(S.SENT), S.SENDING, at=T0)
    first = T0 - timedelta(days=1)
    resumed = transition(campaign(S.PAUSED, started_at=first, pause_reason=PauseReason.OPERATOR,
                                  pause_detail="x"), S.SENDING, at=T0)
    assert resumed.started_at == first and resumed.pause_reason is None and not resumed.pause_detail
    unscheduled = transition(campaign(S.SCHEDULED, scheduled_at=T0), S.DRAFT, at=T0)
    assert unscheduled.scheduled_at is None


def test_a_pause_needs_a_reason_and_nothing_else_takes_one() -> None:
    with pytest.raises(CampaignError, match="needs its reason"):
        transition(campaign(S.SENDING), S.PAUSED, at=T0)
    with pytest.raises(CampaignError, match="only a pause"):
        transition(campaign(S.PAUSED, pause_reason=PauseReason.OPERATOR), S.SENDING, at=T0,
                   reason=PauseReason.OPERATOR)
    paused = transition(campaign(S.SENDING), S.PAUSED, at=T0, reason=PauseReason.COMPLAINTS,
                        detail="x" * 5000)
    assert len(paused.pause_detail) == 1000


@pytest.mark.parametrize(("kw", "message"), [
    ({"name": ""}, "name is 1 to"),
    ({"list_ids": ()}, "1 to 50 lists"),
    ({"list_ids": (ListId(1), ListId(1))}, "named twice"),
    ({"rate_per_minute": -1}, "the rate"),
    ({"from_address": "no-at-sign"}, "not an address"),
    ({"from_address": "a@b.test\r\nBcc: x@y"}, "not an address"),
    ({"subject": "two\nlines"}, "one line"),
    ({"from_name": "a\rb"}, "one line"),
])
def test_draft_check_refuses(kw: dict[str, object], message: str) -> None:
    values: dict[str, object] = {"name": "n", "template_id": TemplateId(1), "list_ids": (ListId(1),),
                                     "from_address": "news@a.test"}
    values.update(kw)
    with pytest.raises(CampaignError, match=message):
        CampaignDraft(**values).check()  # type: ignore[arg-type]


def test_guardrails_wait_for_the_sample_then_pause_on_either_rate() -> None:
    policy = GuardrailPolicy(min_sample=200, max_hard_bounce_rate=0.05, max_complaint_rate=0.003)
    assert evaluate(policy, CampaignCounters(queued=199, hard_bounces=100)) is None
    assert evaluate(policy, CampaignCounters(queued=200, hard_bounces=10)) is None  # 5 %: at
    over = evaluate(policy, CampaignCounters(queued=200, hard_bounces=11))
    assert over is not None and over.reason is PauseReason.HARD_BOUNCES
    assert "5.50%" in over.detail
    assert "11 of 200" in over.detail and "max_hard_bounce_rate" in over.detail
    assert evaluate(policy, CampaignCounters(queued=1000, complaints=3)) is None  # 0.3 %: at
    complaints = evaluate(policy, CampaignCounters(queued=1000, complaints=4, hard_bounces=99))
    assert complaints is not None and complaints.reason is PauseReason.COMPLAINTS
