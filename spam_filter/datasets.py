"""Reading labelled message files into (spam, body) rows."""

import pandas as pd


def read_sms_spam_collection(path: str) -> pd.DataFrame:
    """Read spam.csv into (spam, body) rows.

    The file is Latin-1, and 50 messages that contain commas were split over the three unnamed
    trailing columns; joining those back restores the whole message.
    """
    raw = pd.read_csv(path, encoding="latin-1", dtype=str, keep_default_na=False)
    body = raw.iloc[:, 1:].apply(lambda parts: ",".join(p for p in parts if p), axis=1)
    return pd.DataFrame({"spam": raw["v1"].str.strip().eq("spam"), "body": body})
