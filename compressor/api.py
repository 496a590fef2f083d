"""The one orchestrator. The CLI and the app call only this module (and the recipe/report types).

Each function is one arrow of the data flow in DESIGN.md; the order of stages lives only here.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from compressor.errors import CompressorError
from compressor.plan import Plan
from compressor.recipe import Recipe

log = logging.getLogger("compressor")

PRUNE_REPORT = "prune_report.json"


def _plan_at(recipe: Recipe, token: str | None) -> tuple[Plan, str | None]:
    from compressor import hub
    from compressor.arch import spec_for
    from compressor.plan import resolve

    config, commit = hub.pull_config(
        recipe.model.source,
        revision=recipe.model.revision,
        token=token,
        trust_remote_code=recipe.model.trust_remote_code,
    )
    spec, backbone = spec_for(config, recipe.model.trust_remote_code)
    return resolve(config, spec, backbone, recipe.prune, source=recipe.model.source), commit


def plan(recipe: Recipe, token: str | None = None) -> Plan:
    """Read config.json only (no weights) and resolve the recipe into an exact Plan."""
    return _plan_at(recipe, token)[0]


def calibration_batches(
    recipe: Recipe, plan_: Plan, processor, config, token: str | None = None
) -> list[dict[str, Any]]:
    """The calibration samples the plan's scorer needs (none for data-free scorers)."""
    from compressor.arch import spec_for
    from compressor.data import load_rows
    from compressor.prune.calibration import build_batches

    if not plan_.num_samples:
        return []
    cal = recipe.prune.calibration
    if cal.dataset is None:
        raise CompressorError(
            f"scorer {plan_.scorer!r} needs calibration data; pass --calibration DATA (a Hub dataset, a local "
            "folder or a LLaVA json file), or choose a data-free scorer (depth: last; width: magnitude)"
        )
    spec, _ = spec_for(config.to_dict(), recipe.model.trust_remote_code)
    log.info("calibration: %d samples from %s", plan_.num_samples, cal.dataset)
    rows = load_rows(cal.dataset, split=cal.split, image_folder=cal.image_folder, token=token)
    return build_batches(
        rows, processor, config, plan_.num_samples, cal.max_length, cal.seed, spec.needs_mm_token_type_ids
    )


def prune(recipe: Recipe, out: str | Path, token: str | None = None, overwrite: bool = False, progress=None):
    """Pull, load, score, prune and save a standard checkpoint with its processor and prune_report.json."""
    from compressor import hub
    from compressor import prune as pruning
    from compressor.arch import spec_for
    from compressor.models import commit_output, load_model, load_processor, prepare_output, save_model

    out = prepare_output(out, overwrite)
    plan_, planned_at = _plan_at(recipe, token)  # fails fast, before any weight is downloaded
    log.debug("plan:\n%s", plan_.table())
    m = recipe.model
    # the snapshot is taken at the commit the plan was read at, even if the branch moves meanwhile
    local, commit = hub.pull(
        m.source, revision=planned_at or m.revision, token=token, allow_pickle=m.allow_pickle
    )
    spec, backbone = spec_for(json.loads((Path(local) / "config.json").read_text()), m.trust_remote_code)
    model = load_model(local, spec, m.dtype, m.device_map, m.trust_remote_code, m.allow_pickle)
    processor = load_processor(local, m.trust_remote_code)
    batches = calibration_batches(recipe, plan_, processor, model.config, token)
    log.info("scoring with %s and pruning", plan_.scorer)
    report = pruning.apply(model, spec, backbone, plan_, batches, progress or pruning.tqdm_progress)

    def write(folder: Path) -> None:
        log.info("saving to %s", out)
        save_model(model, processor, folder)
        record = report.model_dump(mode="json")
        record["source"] = {"id": m.source, "revision": m.revision, "commit": commit}
        (folder / PRUNE_REPORT).write_text(json.dumps(record, indent=1))

    commit_output(out, write)
    return report
