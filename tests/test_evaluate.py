"""WER sliced by speaking rate: the thirds are cut on the references and scored alone."""
import pytest

from asr.evaluate import UtteranceScore, rate_thirds


def test_rate_thirds_sort_by_rate_and_score_each_third_alone():
    # Given out of order: rates 1..7, the fastest utterances carry the errors.
    scores = [UtteranceScore(rate=r, words=10, errors=e)
              for r, e in [(7.0, 5), (1.0, 0), (4.0, 1), (2.0, 0), (6.0, 4), (3.0, 1), (5.0, 2)]]
    thirds = rate_thirds(scores)
    assert thirds is not None
    # 7 utterances: 2 slow (1, 2), 2 middle (3, 4), and the last third takes the remainder (5, 6, 7).
    assert thirds.edges == (3.0, 5.0)
    assert thirds.wer == pytest.approx((0.0, 10.0, 100.0 * 11 / 30))
    assert str(thirds) == "0.00 / 10.00 / 36.67"


def test_rate_thirds_weigh_utterances_by_their_words():
    scores = [UtteranceScore(1.0, 1, 1), UtteranceScore(1.5, 99, 0), UtteranceScore(2.0, 4, 0),
              UtteranceScore(2.5, 4, 0), UtteranceScore(3.0, 2, 2), UtteranceScore(3.5, 2, 0)]
    assert rate_thirds(scores).wer == pytest.approx((1.0, 0.0, 50.0))  # a pooled WER, not a mean of WERs


def test_too_few_utterances_have_no_thirds():
    assert rate_thirds([UtteranceScore(1.0, 3, 0), UtteranceScore(2.0, 3, 1)]) is None
    assert rate_thirds([]) is None
