"""The load generator's record of non-200 answers: which kind, how many, and when they were sent."""

from __future__ import annotations

from harness.http_load import LoadResult, Sample


def test_errors_are_counted_per_status_and_source_with_the_span_they_were_sent_in() -> None:
    # Samples arrive in the order answers came back: the request sent last can be answered first.
    samples = [Sample(9.0, 0.1, 503, 0, refused_by="serve_proxy"), Sample(0.2, 5.0, 200, 10),
               Sample(0.15, 9.5, 503, 0, refused_by="serve_proxy"), Sample(3.0, 0.2, 0, 0, refused_by="ReadTimeout"),
               Sample(4.0, 0.2, 503, 0, refused_by="serve_proxy")]
    errors = LoadResult(clients=2, warmup_s=0.0, measured_s=10.0, samples=samples)._errors()
    assert errors == {"503 serve_proxy": {"count": 3, "first_sent_s": 0.15, "last_sent_s": 9.0},
                      "0 ReadTimeout": {"count": 1, "first_sent_s": 3.0, "last_sent_s": 3.0}}
