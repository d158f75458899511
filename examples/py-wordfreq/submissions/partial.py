"""Word frequencies that forget case: "Hello" and "hello" are counted apart.

Expected: 0.6 (fails "Ignores case" and "Punctuation separates words").
"""

import re
from collections import Counter


def top_words(text, n):
    counts = Counter(re.findall(r"[A-Za-z]+", text))  # no .lower()
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:n]
