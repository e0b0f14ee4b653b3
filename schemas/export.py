"""Generate the published JSON Schemas of every topic record: `python -m schemas.export`."""

from __future__ import annotations

import json
from pathlib import Path

from schemas.records import TOPIC_RECORDS

PUBLISHED_DIR = Path(__file__).parent / "jsonschema"


def render_json_schemas() -> dict[str, str]:
    """File name -> JSON Schema text, one per topic."""
    rendered = {}
    for topic, model in TOPIC_RECORDS.items():
        schema = model.model_json_schema(mode="validation")
        schema["$id"] = f"https://gristmill.dev/schemas/{topic}.json"
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        rendered[f"{topic}.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return rendered


def write_json_schemas(target: Path = PUBLISHED_DIR) -> list[Path]:
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_json_schemas().items():
        path = target / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write_json_schemas():
        print(path)
