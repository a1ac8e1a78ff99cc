"""Reading labelled message files into (spam, body) rows."""

import warnings

import pandas as pd


def read_sms_spam_collection(path: str) -> pd.DataFrame:
    """Read spam.csv into (spam, body) rows.

    The file is Latin-1, and 50 messages that contain commas were split over the three unnamed
    trailing columns; joining those back restores the whole message.
    """
    raw = pd.read_csv(path, encoding="latin-1", dtype=str, keep_default_na=False)
    body = raw.iloc[:, 1:].apply(lambda parts: ",".join(p for p in parts if p), axis=1)
    return pd.DataFrame({"spam": raw["v1"].str.strip().eq("spam"), "body": body})


def read_gold_messages(path: str) -> pd.DataFrame:
    """Read a curated gold.csv into (spam, body) rows.

    The file has a header and two columns, `label` (spam or ham) and `text`, in UTF-8.

    Raises:
        ValueError: A column is missing or a label is neither spam nor ham.
    """
    with warnings.catch_warnings():
        # A line with more fields than the header (a text with unquoted commas) would otherwise
        # shift its fields into the wrong columns.
        warnings.simplefilter("error", pd.errors.ParserWarning)
        try:
            raw = pd.read_csv(
                path, dtype=str, keep_default_na=False, encoding="utf-8", index_col=False
            )
        except pd.errors.ParserWarning:
            raise ValueError(
                f"{path}: a line has more fields than its header; quote texts that hold commas"
            ) from None
    if not {"label", "text"} <= set(raw.columns):
        raise ValueError(f"{path} needs the columns label and text, not {list(raw.columns)}")
    labels = raw["label"].str.strip().str.lower()
    unknown = sorted(set(labels) - {"spam", "ham"})
    if unknown:
        raise ValueError(f"{path}: labels must be spam or ham, not {unknown[:5]}")
    return pd.DataFrame({"spam": labels.eq("spam"), "body": raw["text"]})
