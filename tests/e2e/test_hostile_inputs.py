"""The hostile-input corpus over real HTTP: never a server error, and each case answered as a user should be."""

from __future__ import annotations

from harness.hostile_corpus import build_corpus, post_corpus, summarize


def test_hostile_corpus_gets_no_server_errors(service: str) -> None:
    cases = build_corpus()
    assert len(cases) >= 40
    summary = summarize(post_corpus(service, cases))
    assert summary["server_errors"] == 0, summary
    assert summary["unexpected"] == [], summary
