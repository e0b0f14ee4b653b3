"""The bundled demo: a corpus of Python standard-library documentation and questions to ask it."""

from pathlib import Path

CORPUS = Path(__file__).parent / "corpus.jsonl"

QUERIES = [
    "how do I read a file line by line",
    "parse a JSON string into a dictionary",
    "sort a list in place with a custom key",
    "match a regular expression at the start of a string",
    "combine several iterables into tuples",
    "run a shell command and capture its output",
    "what does the with statement do",
    "count how many times each element occurs",
]
