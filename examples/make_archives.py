#!/usr/bin/env python3
"""Rebuild the archive submissions (committed as binaries) byte for byte.

    python3 examples/make_archives.py

Fixed timestamps and modes make the output reproducible, so the committed
files can be checked against this script.
"""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
EPOCH = (2024, 1, 1, 0, 0, 0)
EPOCH_TS = 1704067200  # the same instant as a Unix time

TEXTUTIL = '''\
"""Helpers for wordfreq.py."""

import re

# A word is a run of letters: not a digit, not an underscore, not punctuation.
_WORD = re.compile(r"[^\\W\\d_]+")


def words(text):
    """The words of text, lower-cased."""
    return _WORD.findall(text.lower())
'''

WORDFREQ = '''\
"""Word frequencies: a correct solution split over two modules (expected: 1.0)."""

from collections import Counter

from textutil import words


def top_words(text, n):
    """The n most frequent words as (word, count): most frequent first, ties alphabetical."""
    counts = Counter(words(text))
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:n]


if __name__ == "__main__":
    print(top_words("the cat and the hat", 3))
'''


def write_zip(path: Path, members: list[tuple[str, str]]) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, body in members:
            info = zipfile.ZipInfo(name, date_time=EPOCH)
            info.external_attr = 0o644 << 16
            zf.writestr(info, body, zipfile.ZIP_DEFLATED)


def main() -> None:
    # py-wordfreq/full.zip: a two-module solution: unpacking and sibling imports.
    write_zip(
        HERE / "py-wordfreq/submissions/full.zip",
        [("wordfreq.py", WORDFREQ), ("textutil.py", TEXTUTIL)],
    )

    # py-fizzbuzz/malformed.zip: zip-slip, a member whose name climbs out of the
    # extraction directory.
    write_zip(
        HERE / "py-fizzbuzz/submissions/malformed.zip",
        [
            ("fizzbuzz.py", "def fizzbuzz(n):\n    return []\n"),
            ("../evil.py", 'print("written outside the submission directory")\n'),
        ],
    )

    # py-wordfreq/malformed.tar: wordfreq.py is a symlink to /etc/passwd; unpacked
    # naively, the grader would read (and echo back) a file of the host.
    with tarfile.open(
        HERE / "py-wordfreq/submissions/malformed.tar", "w", format=tarfile.PAX_FORMAT
    ) as tar:
        link = tarfile.TarInfo("wordfreq.py")
        link.type, link.linkname, link.mode, link.mtime = (
            tarfile.SYMTYPE,
            "/etc/passwd",
            0o777,
            EPOCH_TS,
        )
        tar.addfile(link)
        readme = b"My solution is in wordfreq.py.\n"
        info = tarfile.TarInfo("README.txt")
        info.size, info.mode, info.mtime = len(readme), 0o644, EPOCH_TS
        tar.addfile(info, io.BytesIO(readme))


if __name__ == "__main__":
    main()
