"""Bayesian spam filter shared by antispam (messages) and OCR (text of images).

`tokenizer` turns a message or a text into tokens, `store` / `redis_store` keep the counts, `classifier`
combines them (Robinson/Fisher chi-square) into a probability and a BAYES_xx symbol; `filter.BayesFilter`
puts the three together.
"""

from .cache import CachedStore
from .classifier import BANDS, ClassifierConfig, Outcome, Totals, chi2q, combine, is_trained, symbol, token_probability
from .filter import BayesFilter
from .redis_store import RedisStore, database_name
from .store import Label, LearnOutcome, MemoryStore, StoreStats, TokenStore, message_key, token_id
from .tokenizer import DecodedPart, TokenizerConfig, tokenize, tokenize_decoded, tokenize_raw, tokenize_text

__all__ = [
                         "BANDS",
                         "BayesFilter",
                         "CachedStore",
                         "ClassifierConfig",
                         "DecodedPart",
                         "Label",
                         "LearnOutcome",
                         "MemoryStore",
                         "Outcome",
                         "RedisStore",
                         "StoreStats",
                         "TokenStore",
                         "TokenizerConfig",
                         "Totals",
                         "chi2q",
                         "combine",
                         "database_name",
                         "is_trained",
                         "message_key",
                         "symbol",
                         "token_id",
                         "token_probability",
                         "tokenize",
                         "tokenize_decoded",
                         "tokenize_raw",
                         "tokenize_text",
]
