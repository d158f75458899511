"""Word frequencies, not written yet: runs, returns nothing. Expected: 0.0."""


def top_words(text, n):
    # TODO
    pass
