"""Defaults shared by the pipeline's config and the offline evaluation, so both train alike."""

ALPHA = 0.1
"""Additive smoothing: the count every vocabulary word gets in both classes."""

TEST_SIZE = 0.3
"""Share of messages held out for scoring."""

SPLIT_SEED = 0
"""Seed of the hash that assigns each message to the training or the testing split."""

FALSE_POSITIVE_COST = 8.0
"""Missed spams that one hidden legitimate message is worth; raises the bar for calling spam."""

MAX_FALSE_POSITIVE_RATE = 0.01
"""A model flagging more legitimate test messages than this is never promoted."""
