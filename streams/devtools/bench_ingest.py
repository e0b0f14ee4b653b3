"""`gristmill bench ingest`: encoder and pipeline throughput, each beside its baseline from the same run."""

from __future__ import annotations

import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from streams.broker import EmbeddedBroker
from streams.devtools.demo import CORPUS
from streams.devtools.ingest_rig import IngestRig, stage_shares
from streams.devtools.naive_loops import naive_loop, produce_texts
from streams.metrics import INGEST_STAGES
from streams.ml.chunking import Chunker
from streams.ml.serving import open_encoder, open_registry
from streams.settings import Settings
from streams.state.encoder import OnnxEncoder
from streams.state.registry import ModelVersion, ensure_base_model


@dataclass(frozen=True)
class Row:
    measure: str
    value: str
    baseline: str = ""
    ratio: float | None = None
    target: str = ""
    met: bool | None = None


def bench_texts(seed: int = 11) -> tuple[list[str], list[str]]:
    """Short sentences (5-20 words) and long paragraphs (120-240 words) from the bundled corpus."""
    rng = random.Random(seed)
    words = " ".join(json.loads(line)["text"] for line in CORPUS.read_text(encoding="utf-8").splitlines()).split()

    def take(low: int, high: int) -> str:
        length = rng.randint(low, high)
        start = rng.randrange(len(words) - length)
        return " ".join(words[start:start + length])

    return [take(5, 20) for _ in range(600)], [take(120, 240) for _ in range(200)]


def throughput(run: Callable[[], object], items: int, repeats: int = 3) -> float:
    """Best items/s over `repeats` runs (after one warm-up run)."""
    run()
    best = min(_timed(run) for _ in range(repeats))
    return items / best


def _timed(run: Callable[[], object]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def encoder_rows(model: ModelVersion, onnx: OnnxEncoder, short: list[str], long: list[str]) -> list[Row]:
    from sentence_transformers import SentenceTransformer  # [train] extra: the baseline only

    reference = SentenceTransformer(model.source, device="cpu")
    int8 = OnnxEncoder(model, threads=onnx.threads, batch_size=onnx.batch_size, batch_tokens=onnx.batch_tokens,
                       int8=True)
    rows = []
    for name, texts in (("short", short), ("long", long)):
        ours = throughput(lambda texts=texts: onnx.encode(texts), len(texts))
        base = throughput(lambda texts=texts: reference.encode(texts, batch_size=onnx.batch_size), len(texts))
        fast = throughput(lambda texts=texts: int8.encode(texts), len(texts))
        rows.append(Row(f"encoder, {name} texts (texts/s)", f"{ours:,.0f}", f"{base:,.0f}", ours / base,
                        ">= 2.0x", ours / base >= 2.0))
        rows.append(Row(f"  int8 opt-in, {name} (texts/s)", f"{fast:,.0f}", f"{base:,.0f}", fast / base))
    one = short[:50]
    ours = throughput(lambda: [onnx.encode([t]) for t in one], len(one))
    base = throughput(lambda: [reference.encode([t]) for t in one], len(one))
    rows.append(Row("encoder, one short text per call (ms)", f"{1000 / ours:.1f}", f"{1000 / base:.1f}", ours / base))
    return rows


def chunk_texts(settings: Settings, onnx: OnnxEncoder, texts: Sequence[str]) -> list[str]:
    chunker = Chunker(onnx.tokenizer, settings.chunk_tokens, settings.chunk_overlap, onnx.max_tokens,
                      settings.chunk_boundary_every)
    return [c.text for chunks in chunker.split_many(list(texts)) for c in chunks]


def pipeline_rows(settings: Settings, onnx: OnnxEncoder, texts: list[str], console: Console, *, sparse: bool,
                  runs: int, profile: bool) -> tuple[list[Row], float]:
    """The pipeline (produce -> searchable, through the embedded broker and a real worker) against the bare encoder
    on the same chunks, `runs` times; freshness at half the median rate, idle CPU, and per-stage time. Returns the
    rows and the median ratio."""
    chunks = chunk_texts(settings, onnx, texts)
    vectors = "dense + BM25 sparse" if sparse else "dense only"
    with IngestRig(settings.models_dir, GRISTMILL_CHUNK_TOKENS=str(settings.chunk_tokens),
                   GRISTMILL_CHUNK_OVERLAP=str(settings.chunk_overlap),
                   GRISTMILL_CHUNK_BOUNDARY_EVERY=str(settings.chunk_boundary_every),
                   GRISTMILL_SPARSE_VECTORS=str(sparse).lower(),
                   GRISTMILL_EMBEDDING_CACHE_BYTES="0") as rig:  # each run sends the same texts: all encoded
        rig.burst([(f"warm-{i}", text) for i, text in enumerate(texts[:32])])
        idle = rig.idle_cpu() if sparse else None
        ratios, rates = [], []
        spent: dict[str, float] = dict.fromkeys(INGEST_STAGES, 0.0)
        wall = 0.0
        for run in range(runs):
            console.print(f"pipeline ({vectors}) at full rate, run {run + 1} of {runs}...")
            before, started = rig.stage_seconds(), time.perf_counter()
            docs_per_s = rig.burst([(f"run{run}-{i}", text) for i, text in enumerate(texts)])
            wall += time.perf_counter() - started
            spent = {stage: spent[stage] + seconds - before[stage] for stage, seconds in rig.stage_seconds().items()}
            bare = throughput(lambda: onnx.encode(chunks), len(chunks), repeats=1)  # right after, same chunks
            rates.append(docs_per_s)
            ratios.append(docs_per_s * len(chunks) / len(texts) / bare)
        shares = stage_shares({}, spent, wall)
        half_rate = statistics.median(rates) / 2
        console.print(f"pipeline at half rate ({half_rate:.1f} docs/s)...")
        fresh = rig.freshness([(f"half-{i}", text) for i, text in enumerate(texts)], half_rate)
        hot = profile_worker(rig, texts, console) if profile else []
    p50, p99 = statistics.median(fresh), fresh[min(len(fresh) - 1, int(0.99 * len(fresh)))]
    ratio = statistics.median(ratios)
    rows = [
        Row(f"pipeline, {vectors}: produce -> searchable (docs/s, median of {runs})",
            f"{statistics.median(rates):,.1f}"),
        Row(f"pipeline, {vectors}, vs bare encoder (chunks/s ratio, median [min, max] of {runs})",
            f"{ratio:.2f}x [{min(ratios):.2f}, {max(ratios):.2f}]", target=">= 0.9x", met=ratio >= 0.9),
        Row(f"freshness p50 at {half_rate:.1f} docs/s (s)", f"{p50:.2f}"),
        Row(f"freshness p99 at {half_rate:.1f} docs/s (s)", f"{p99:.2f}", target="<= 1 s", met=p99 <= 1.0),
    ]
    if idle is not None:
        rows.append(Row("idle worker + embedded broker (% of one core, 30 s)",
                        f"{100 * sum(idle):.1f}% ({100 * idle[0]:.1f} + {100 * idle[1]:.1f})", target="<= 3%",
                        met=sum(idle) <= 0.03))
    if profile:
        rows += [Row(f"  stage {stage} (s, share of the runs' wall time)", f"{seconds:.2f}", f"{share:.1%}")
                 for stage, (seconds, share) in shares.items() if seconds > 0.005 and stage != "idle"]
        rows += [Row(f"  py-spy: {frame}", f"{share:.1%}") for frame, share in hot]
    return rows, ratio


def profile_worker(rig: IngestRig, texts: Sequence[str], console: Console, seconds: int = 20
                   ) -> list[tuple[str, float]]:
    """The worker's hottest frames (py-spy, every thread, by self time) while it ingests one more burst."""
    beside = Path(sys.executable).parent / "py-spy"  # the virtualenv's, when it is not on PATH
    py_spy = str(beside) if beside.is_file() else shutil.which("py-spy")
    if py_spy is None:
        console.print(Text("py-spy is not installed (`pip install py-spy`): no sampling profile", "yellow"))
        return []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "profile.txt"
        rig.produce([(f"profile-{i}", text) for i, text in enumerate(texts)])
        spied = subprocess.run([py_spy, "record", "--pid", str(rig.pid), "--duration", str(seconds), "--rate", "50",
                                "--format", "raw", "--output", str(out), "--threads"], capture_output=True, text=True,
                               timeout=seconds + 30)
        if spied.returncode != 0:
            reason = next(iter(spied.stderr.strip().splitlines()), f"exit status {spied.returncode}")
            console.print(Text(f"py-spy could not sample the worker: {reason}", "yellow"))
        rig.wait_indexed([f"profile-{i}" for i in range(len(texts))])
        frames: dict[str, int] = {}
        for line in out.read_text().splitlines() if out.exists() else []:
            stack, _, count = line.rpartition(" ")
            leaf = stack.split(";")[-1]
            frames[leaf] = frames.get(leaf, 0) + int(count)
    total = sum(frames.values()) or 1
    return [(frame[:80], count / total) for frame, count in sorted(frames.items(), key=lambda f: -f[1])[:8]]


def naive_rows(settings: Settings, model: ModelVersion, short: list[str], long: list[str], console: Console
               ) -> list[Row]:
    """What a user writes instead (per record and batched 64) against gristmill end to end, on the same texts; with
    the ceiling the encoder sets (the bare encoder on gristmill's chunks of the texts), the work each does per
    document, and gristmill with the opt-in int8 encoder.

    The loops' clock starts at the first record they consume, from a topic filled beforehand; gristmill's at the
    first record produced, production running alongside: the comparison leans towards the loops."""
    from sentence_transformers import SentenceTransformer  # [train] extra: the baseline only

    reference = SentenceTransformer(model.source, device="cpu")
    kinds = {"short": short, "long": long}
    loops: dict[tuple[str, int], float] = {}
    with EmbeddedBroker() as broker:
        for name, texts in kinds.items():
            for batch in (1, 64):
                topic = f"naive-{name}-{batch}"
                produce_texts(broker.bootstrap_servers, topic, texts)
                console.print(f"hand-written loop, {name} texts, {batch} at a time...")
                loops[name, batch] = naive_loop(broker.bootstrap_servers, topic, len(texts), batch, reference)
    del reference
    ours = gristmill_rates(settings, kinds, console)
    fast = gristmill_rates(settings, kinds, console, GRISTMILL_INT8="true")
    onnx = open_encoder(settings, model)
    rows: list[Row] = []
    for name, texts in kinds.items():
        chunks = chunk_texts(settings, onnx, texts)
        chunks_per_s = throughput(lambda chunks=chunks: onnx.encode(chunks), len(chunks), repeats=1)
        ceiling = chunks_per_s * len(texts) / len(chunks)
        tokens = sum(len(e.ids) for e in onnx.tokenizer.encode_batch(chunks)) / len(texts)
        truncated = sum(len(e.ids) for e in onnx.tokenizer.encode_batch(texts)) / len(texts)
        batched, single = loops[name, 64], loops[name, 1]
        rows += [Row(f"{name} texts: gristmill vs hand-written loop, batched 64 (docs/s)", f"{ours[name]:,.1f}",
                     f"{batched:,.1f}", ours[name] / batched, ">= 1.5x", ours[name] / batched >= 1.5),
                 Row(f"{name} texts: gristmill vs hand-written loop, per record (docs/s)", f"{ours[name]:,.1f}",
                     f"{single:,.1f}", ours[name] / single, ">= 3.0x", ours[name] / single >= 3.0),
                 Row("  ceiling: bare encoder on gristmill's chunks vs per record (docs/s)", f"{ceiling:,.1f}",
                     f"{single:,.1f}", ceiling / single),
                 Row(f"  model tokens per document: gristmill's chunks vs the loops' (cut at {onnx.max_tokens})",
                     f"{tokens:,.0f}", f"{truncated:,.0f}", tokens / truncated),
                 Row("  int8 encoder (opt-in, changes answers) vs batched 64 (docs/s)", f"{fast[name]:,.1f}",
                     f"{batched:,.1f}", fast[name] / batched),
                 Row("  int8 encoder (opt-in, changes answers) vs per record (docs/s)", f"{fast[name]:,.1f}",
                     f"{single:,.1f}", fast[name] / single)]
    return rows


def gristmill_rates(settings: Settings, kinds: dict[str, list[str]], console: Console, **env: str) -> dict[str, float]:
    """gristmill end to end (produce -> searchable) on each kind of texts, in documents per second."""
    rates = {}
    with IngestRig(settings.models_dir, GRISTMILL_EMBEDDING_CACHE_BYTES="0", **env) as rig:  # the warm-up's texts
        rig.burst([(f"warm-{i}", text) for i, text in enumerate(kinds["short"][:32])])  # come again: all encoded
        for name, texts in kinds.items():
            console.print(f"gristmill{' (int8)' if env else ''}, {name} texts...")
            rates[name] = rig.burst([(f"naive-{name}-{i}", text) for i, text in enumerate(texts)])
    return rates


def print_rows(title: str, rows: Sequence[Row], console: Console) -> None:
    table = Table(title=title)
    for column in ("measure", "gristmill", "baseline", "speed-up", "target", ""):
        table.add_column(column, justify="left" if column == "measure" else "right")
    for row in rows:
        mark = "" if row.met is None else (Text("met", "green") if row.met else Text("missed", "red"))
        table.add_row(row.measure, row.value, row.baseline, "" if row.ratio is None else f"{row.ratio:.2f}x",
                      row.target, mark)
    console.print(table)


def run_ingest_bench(settings: Settings, docs: int, console: Console, *, runs: int = 3, profile: bool = False,
                     naive: bool = False) -> list[Row]:
    model = ensure_base_model(open_registry(settings))
    onnx = open_encoder(settings, model)
    short, long = bench_texts()
    long = (long * (docs // len(long) + 1))[:docs]
    console.print(f"encoder: ONNX Runtime on {onnx.provider} ({settings.onnx_threads} threads) vs "
                  f"sentence-transformers (PyTorch) on {len(short)} short and {len(long)} long texts, "
                  f"batch {onnx.batch_size}")
    rows = encoder_rows(model, onnx, short, long)
    hybrid, with_sparse = pipeline_rows(settings, onnx, long, console, sparse=True, runs=runs, profile=profile)
    dense, dense_only = pipeline_rows(settings, onnx, long, console, sparse=False, runs=runs, profile=False)
    rows += [*hybrid, *dense, Row("sparse vectors on vs dense only (pipeline/bare ratio)", f"{with_sparse:.2f}x",
                                  f"{dense_only:.2f}x", with_sparse / dense_only, ">= 0.9x",
                                  with_sparse / dense_only >= 0.9)]
    if naive:
        rows += naive_rows(settings, model, naive_short_texts(), long[:200], console)
    print_rows("gristmill bench ingest", rows, console)
    return rows


def naive_short_texts(count: int = 1_000, seed: int = 21) -> list[str]:
    """Short texts of about 35 words from the bundled corpus (the issue's comparison)."""
    rng = random.Random(seed)
    words = " ".join(json.loads(line)["text"] for line in CORPUS.read_text(encoding="utf-8").splitlines()).split()
    out = []
    for _ in range(count):
        length = rng.randint(30, 40)
        start = rng.randrange(len(words) - length)
        out.append(" ".join(words[start:start + length]))
    return out
