"""Defaults shared by the pipeline's config and the offline evaluation, so both train alike."""

ALPHA = 0.1
"""Additive smoothing: the count every vocabulary word gets in both classes."""

TEST_SIZE = 0.3
"""Share of messages held out for scoring."""

SPLIT_SEED = 0
"""Seed of the hash that assigns each message to the training or the testing split."""

MAX_TEST_MESSAGES = 1_000_000
"""About how many of the product's held-out messages are scored: rates on a million messages are
as precise as on more (a standard error under 0.05 point)."""

MAX_VOCABULARY = 150_000
"""Words the model keeps, the most frequent in training: the vocabulary of real text keeps growing
with its size (every name, link and typo), while the words seen once or twice say little. A bound
keeps the model, the weights file and a retrain's memory flat as traffic grows; SpamAssassin's
Bayes store keeps 150,000 tokens by default (`bayes_expiry_max_db_size`)."""

FALSE_POSITIVE_COST = 8.0
"""Missed spams that one hidden legitimate message is worth; raises the bar for calling spam."""

MAX_FALSE_POSITIVE_RATE = 0.01
"""A model flagging more legitimate test messages than this is never promoted."""

MIN_GOLD_TRUE_POSITIVE_RATE = 0.5
"""A model catching less of the gold spam than this is never promoted, not even the first: it
would let most spam through (the SMS collection's model catches about 0.93)."""

MAX_REPORTER_SHARE = 0.2
"""The largest share of the user messages that one reporter alone may stand behind."""

REPORT_WEIGHT = 1.0
"""How many training messages one message from users' reports counts as."""

COLLECTION_FALSE_POSITIVE_BUDGET = 0.002
"""Share of the SMS collection's legitimate training messages the threshold may flag, out of fold:
about what the cost-set threshold flags on it."""

USER_FALSE_POSITIVE_BUDGET = 0.0075
"""Share of the users' legitimate training messages the threshold may flag, out of fold: under the
1% a product can bear, with a margin for the budget's own noise."""

MAX_DISAGREEMENT = 0.5
"""Share of a reporter's checkable votes that may contradict the SMS collection or the other
reporters' majority before a run leaves it out: honest reporters disagree now and then, an
attacker on most of what can be checked."""

MIN_CHECKED_VOTES = 10
"""Checkable votes a reporter needs before its disagreement counts."""

IMPACT_MARGIN = 16.0
"""Gold error cost (missed spams, plus the false-positive cost per flagged legitimate message,
each counted smoothly) a reporter's messages may add before a run leaves them out: about two
flagged messages at the default cost. Honest reporters measured here stayed under 4; hostile
keys with thousands of reports went past 100."""
