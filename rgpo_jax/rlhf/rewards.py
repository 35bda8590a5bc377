"""Offline reward functions for the RLHF experiment, in tunix's reward-function form.

tunix calls `reward_fn(prompts=[...], completions=[...], **batch_fields) -> list[float]`, one
float per completion.
"""

from __future__ import annotations

import functools


@functools.cache
def _vader():
  from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer  # pylint: disable=g-import-not-at-top
  return SentimentIntensityAnalyzer()


def vader_positivity(prompts, completions, **kwargs) -> list[float]:
  """VADER's compound sentiment of each completion, in [−1, 1] (Hutto & Gilbert, ICWSM 2014).

  A lexicon-and-rules score (MIT-licensed lexicon shipped in `vaderSentiment`, no network): 1 is
  strongly positive, −1 strongly negative, 0 neutral or empty. The prompt is not scored.
  """
  del prompts, kwargs
  analyzer = _vader()
  return [float(analyzer.polarity_scores(text)["compound"]) for text in completions]
