"""The model card MHub.ai expects (``meta.json``), as a JSON Schema the project owns.

Written from the rules of MHub's published model-card schema (JSON Schema draft 7), so that
the check runs wherever the repository is cloned: nothing outside the repository is read.
When MHub changes its rules, change them here.

What MHub asks of a card:

- top level: ``id`` (a UUID version 4), ``name`` (lower-case letters, digits and ``_``),
  ``title``, and the objects ``summary``, ``details`` and ``info``;
- ``summary``: ``description``; ``inputs``, each with ``label``, ``description`` (at most
  200 characters), ``format``, ``modality``, ``bodypartexamined``, ``slicethickness`` and the
  booleans ``non-contrast`` and ``contrast``; ``outputs``, each a segmentation or a
  classification (``classes``: strings) or a prediction (``valueType``, ``label``,
  ``description``); ``model`` with ``architecture``, ``training`` (supervised,
  semi-supervised, unsupervised, other or algorithmic) and ``cmpapproach`` (2D, 3D or
  ensemble); ``data`` with ``training`` and ``evaluation`` (an integer ``vol_samples``
  each, optional) and the booleans ``public`` and ``external``;
- ``details``: ``name``, ``version`` (dot-separated numbers, no ``v``), ``devteam``,
  ``type``, ``date`` (``weights``, ``code``, ``pub``: ISO dates, each optional, the weights'
  date may be empty), ``cite``, ``license`` (``code`` and ``weights`` strings, optional),
  ``publications`` (``title`` and ``uri`` each) and ``github`` (a URI); optionally
  ``zenodo`` and ``colab`` (URIs) and ``slicer`` (a boolean);
- ``info``: the sections ``use``, ``analyses``, ``evaluation`` and ``training``, optionally
  ``ethics`` and ``limitations``; each has a ``title`` and a ``text`` and may have
  ``references`` (``label`` and ``uri``) and ``tables`` (``label`` and ``entries``, an
  object of strings).

Where MHub's schema names the ``uuid`` format (which a draft-7 checker does not know), this
one states the UUID-4 pattern, so the id is really checked.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

DRAFT = "http://json-schema.org/draft-07/schema#"
UUID4 = r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"

TEXT: Schema = {"type": "string"}
FLAG: Schema = {"type": "boolean"}
COUNT: Schema = {"type": "integer"}
URI: Schema = {"type": "string", "format": "uri"}
DATE: Schema = {"type": "string", "format": "date"}


def record(required: dict[str, Schema], optional: dict[str, Schema] | None = None) -> Schema:
    """An object whose keys in ``required`` must be present (extra keys are allowed, as in
    MHub's schema)."""
    return {
        "type": "object",
        "required": list(required),
        "properties": {**required, **(optional or {})},
    }


def list_of(item: Schema) -> Schema:
    return {"type": "array", "items": item}


def one_of_words(*words: str) -> Schema:
    return {"type": "string", "enum": list(words)}


def tagged(tag: str, fields: dict[str, Schema]) -> Schema:
    """An output entry: ``type`` is the constant ``tag``."""
    return record({"type": {"const": tag}, **fields})


INPUT = record(
    {
        "label": TEXT,
        "description": {"type": "string", "maxLength": 200},
        "format": TEXT,
        "modality": TEXT,
        "bodypartexamined": TEXT,
        "slicethickness": TEXT,
        "non-contrast": FLAG,
        "contrast": FLAG,
    }
)

OUTPUT: Schema = {
    "anyOf": [
        tagged("Segmentation", {"classes": list_of(TEXT)}),
        tagged("Prediction", {"valueType": TEXT, "label": TEXT, "description": TEXT}),
        tagged("Classification", {"classes": list_of(TEXT)}),
    ]
}

SECTION = record(
    {"title": TEXT, "text": TEXT},
    {
        "references": list_of(record({"label": TEXT, "uri": URI})),
        "tables": list_of(record({"label": TEXT, "entries": {"type": "object", "additionalProperties": TEXT}})),
    },
)

SAMPLES = record({}, {"vol_samples": COUNT})

SUMMARY = record(
    {
        "description": TEXT,
        "inputs": list_of(INPUT),
        "outputs": list_of(OUTPUT),
        "model": record(
            {
                "architecture": TEXT,
                "training": one_of_words("supervised", "semi-supervised", "unsupervised", "other", "algorithmic"),
                "cmpapproach": one_of_words("2D", "3D", "ensemble"),
            }
        ),
        "data": record({"training": SAMPLES, "evaluation": SAMPLES, "public": FLAG, "external": FLAG}),
    }
)

DETAILS = record(
    {
        "name": TEXT,
        "version": {"type": "string", "pattern": r"^\d+(\.\d+)*$"},
        "devteam": TEXT,
        "type": TEXT,
        "date": record(
            {},
            {"weights": {"anyOf": [DATE, {"type": "string", "maxLength": 0}]}, "code": DATE, "pub": DATE},
        ),
        "cite": TEXT,
        "license": record({}, {"code": TEXT, "weights": TEXT}),
        "publications": list_of(record({"title": TEXT, "uri": URI})),
        "github": URI,
    },
    {"zenodo": URI, "colab": URI, "slicer": FLAG},
)

INFO = record(
    {"use": SECTION, "analyses": SECTION, "evaluation": SECTION, "training": SECTION},
    {"ethics": SECTION, "limitations": SECTION},
)


def model_card_schema() -> Schema:
    """The whole card (a fresh dict each call: tests may not alter a shared one)."""
    import copy

    card = record(
        {
            "id": {"type": "string", "pattern": UUID4},
            "name": {"type": "string", "pattern": "^[a-z0-9_]+$"},
            "title": TEXT,
            "summary": SUMMARY,
            "details": DETAILS,
            "info": INFO,
        }
    )
    return copy.deepcopy({"$schema": DRAFT, **card})


def required_paths(schema: Schema, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """Every key path the schema requires, through nested objects and into the first item
    of required arrays of objects: e.g. ``("details", "github")``,
    ``("summary", "inputs", 0, "modality")``."""
    paths: list[tuple[str | int, ...]] = []
    for key in schema.get("required", []):
        path = (*prefix, key)
        paths.append(path)
        sub = schema["properties"][key]
        if sub.get("type") == "object":
            paths += required_paths(sub, path)
        elif sub.get("type") == "array" and sub["items"].get("type") == "object":
            paths += required_paths(sub["items"], (*path, 0))
    return paths
