"""Example jobs (word count, inverted index) and a real text corpus for them.

The corpus is text that ships with Python itself: the documentation topics
of `pydoc_data.topics` (the reference manual's sections that `help()` shows,
about 0.5 MB of English prose and code), and for larger runs the standard
library's own .py sources.
"""

import os
import sysconfig

WORD_COUNT = '''
def map(key, line):
    for word in line.split():
        yield word, 1


def combine(word, counts):
    return [sum(counts)]


def reduce(word, counts):
    return sum(counts)
'''

INVERTED_INDEX = '''
import re

WORD = re.compile(r"[a-z][a-z0-9_]+")


def map(key, line):
    for word in set(WORD.findall(line.lower())):
        yield word, key


def combine(word, documents):
    return set(documents)


def reduce(word, documents):
    return sorted(set(documents))
'''


def topics() -> dict:
    """The pydoc topics, one document per topic: {"topics/NAME": bytes}."""
    from pydoc_data.topics import topics as text

    return {f"topics/{name}": body.encode() for name, body in sorted(text.items())}


def stdlib_sources(min_bytes: int, chunk_bytes: int = 4 << 20) -> dict:
    """The standard library's .py files, concatenated in path order into
    chunks of about chunk_bytes, the whole repeated until min_bytes."""
    root = sysconfig.get_paths()["stdlib"]
    paths = sorted(os.path.join(d, f) for d, dirs, files in os.walk(root)
                   if "site-packages" not in d for f in files if f.endswith(".py"))
    chunks, current, total, size = {}, [], 0, 0
    while total < min_bytes:
        for path in paths:
            with open(path, "rb") as f:
                data = f.read()
            current.append(data if data.endswith(b"\n") else data + b"\n")
            size += len(current[-1])
            if size >= chunk_bytes:
                chunks[f"stdlib/{len(chunks):05d}"] = b"".join(current)
                total += size
                current, size = [], 0
                if total >= min_bytes:
                    break
    return chunks
