"""Reading job, pipeline and service specs on the client: a dict, YAML (or
JSON) text, or a path to a file. The daemon parses and checks the spec; the
client only finds its ``kind`` and, for a pipeline, inlines each step's
``uses: JOB_FILE`` as the CLI does (that needs PyYAML: ``pip install
'weft[yaml]'``)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union

from .errors import SpecError

Spec = Union[Mapping[str, Any], str, "os.PathLike[str]"]

_KIND = re.compile(r"""^kind\s*:\s*["']?([A-Za-z]+)""", re.MULTILINE)
_FLOW_KIND = re.compile(r"""[{,\s]kind\s*:\s*["']?([A-Za-z]+)""")
_USES = re.compile(r"^\s+uses\s*:", re.MULTILINE)


def load(spec: Spec, base_dir: Optional[Union[str, "os.PathLike[str]"]] = None) -> Tuple[str, str]:
    """Returns ``(kind, text)``: the spec's kind (``Job``, ``Pipeline``,
    ``Service``) and the text to send (YAML, or JSON, which YAML reads)."""
    if isinstance(spec, Mapping):
        doc: Dict[str, Any] = dict(spec)
        kind = str(doc.get("kind", ""))
        if not kind:
            raise SpecError("bad_spec", "the spec has no kind (Job, Pipeline or Service)")
        if kind == "Pipeline":
            doc = _inline_uses(doc, Path(base_dir) if base_dir else Path.cwd())
        return kind, json.dumps(doc)
    if isinstance(spec, os.PathLike) or _looks_like_path(spec):
        path = Path(spec)
        try:
            text = path.read_text()
        except OSError as e:
            raise SpecError("bad_spec", f"{path}: {e}") from e
        base = Path(base_dir) if base_dir else path.parent
        try:
            return _from_text(text, base)
        except SpecError as e:
            raise SpecError(e.code, f"{path}: {e.detail}") from None
    if not isinstance(spec, str):
        raise SpecError("bad_spec", f"a spec is a dict, YAML text or a path, not {type(spec).__name__}")
    return _from_text(spec, Path(base_dir) if base_dir else Path.cwd())


def _looks_like_path(s: object) -> bool:
    if not isinstance(s, str) or "\n" in s or s.lstrip().startswith("{"):
        return False
    return s.endswith((".yaml", ".yml", ".json")) or os.path.isfile(s)


def _from_text(text: str, base: Path) -> Tuple[str, str]:
    m = _KIND.search(text)
    kind = m.group(1) if m else None
    if kind is None and text.lstrip().startswith("{"):
        try:
            doc = json.loads(text)
        except ValueError:
            doc = None
        if isinstance(doc, dict):
            return load(doc, base)
        m = _FLOW_KIND.search(text)
        kind = m.group(1) if m else None
    if kind is None:
        raise SpecError("bad_spec", "the spec has no top-level `kind:` (Job, Pipeline or Service)")
    if kind == "Pipeline" and _USES.search(text):
        doc = _yaml().safe_load(text)
        if not isinstance(doc, dict):
            raise SpecError("bad_spec", "the pipeline spec is not a mapping")
        return kind, json.dumps(_inline_uses(doc, base))
    return kind, text


def _yaml() -> Any:
    try:
        import yaml  # type: ignore[import-untyped]
    except ImportError:
        raise SpecError(
            "needs_yaml",
            "this pipeline's steps say `uses:`; inlining job files needs PyYAML: "
            "pip install 'weft[yaml]' (or inline the job specs yourself)",
        ) from None
    return yaml


def _inline_uses(doc: Dict[str, Any], base: Path) -> Dict[str, Any]:
    """Replaces each step's ``uses: FILE`` (relative to ``base``) by the fields
    of that job file's ``spec``; fields the step gives itself win."""
    steps = (doc.get("spec") or {}).get("steps")
    if not isinstance(steps, dict) or not any(
        isinstance(s, dict) and "uses" in s for s in steps.values()
    ):
        return doc
    yaml = _yaml()
    doc = json.loads(json.dumps(doc))  # a deep copy
    for name, step in doc["spec"]["steps"].items():
        if not isinstance(step, dict) or "uses" not in step:
            continue
        file = step.pop("uses")
        where = f"spec.steps.{name}.uses"
        if not isinstance(file, str):
            raise SpecError("bad_spec", f"{where}: give the path of a job file (kind: Job)")
        path = base / file
        try:
            job = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as e:
            raise SpecError("bad_spec", f"{where}: {file}: {e}") from e
        if not isinstance(job, dict) or job.get("kind") != "Job":
            raise SpecError("bad_spec", f"{where}: {file} is not a job spec (kind: Job)")
        for k, v in (job.get("spec") or {}).items():
            step.setdefault(k, v)
    return doc
