"""Model, dataset and Space card rules: the YAML front matter the Hub validates (POST /api/validate-yaml) and
the card data it shows in a repo's info."""

from __future__ import annotations

import re

from .store import Store

LICENSES = (  # noqa: SIM905
    "apache-2.0 mit openrail bigscience-openrail-m creativeml-openrail-m bigscience-bloom-rail-1.0 "
    "bigcode-openrail-m afl-3.0 artistic-2.0 bsl-1.0 bsd bsd-2-clause bsd-3-clause bsd-3-clause-clear c-uda cc "
    "cc0-1.0 cc-by-2.0 cc-by-2.5 cc-by-3.0 cc-by-4.0 cc-by-sa-3.0 cc-by-sa-4.0 cc-by-nc-2.0 cc-by-nc-3.0 "
    "cc-by-nc-4.0 cc-by-nd-4.0 cc-by-nc-nd-3.0 cc-by-nc-nd-4.0 cc-by-nc-sa-2.0 cc-by-nc-sa-3.0 cc-by-nc-sa-4.0 "
    "cdla-sharing-1.0 cdla-permissive-1.0 cdla-permissive-2.0 wtfpl ecl-2.0 epl-1.0 epl-2.0 etalab-2.0 eupl-1.1 "
    "eupl-1.2 agpl-3.0 gfdl gpl gpl-2.0 gpl-3.0 lgpl lgpl-2.1 lgpl-3.0 isc h-research intel-research lppl-1.3c "
    "ms-pl apple-ascl apple-amlr mpl-2.0 odc-by odbl openrail++ osl-3.0 postgresql ofl-1.1 ncsa unlicense zlib "
    "pddl lgpl-lr deepfloyd-if-license fair-noncommercial-research-license llama2 llama3 llama3.1 llama3.2 "
    "llama3.3 llama4 gemma unknown other"
).split()
SPACE_SDKS = ("gradio", "streamlit", "docker", "static")
SPACE_COLORS = ("red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray")
NO_METADATA = "empty or missing yaml metadata in repo card (https://huggingface.co/docs/hub/model-cards#model-card-metadata)"
YAML_BLOCK = re.compile(r"^(\s*---(?:\r\n|\r|\n))([\S\s]*?)((?:\r\n|\r|\n)---[ \t]*(\r\n|\n|$))")

# --- model card validation (POST /api/validate-yaml) -----------------------------------------------------


BASE_MODEL_RELATIONS = ("adapter", "merge", "quantized", "finetune")


def validate_card(content: str, repo_type: str = "model") -> tuple[list[str], list[str]]:
    """(errors, warnings) for a card's YAML front matter, in the Hub's words where we know them."""
    import yaml

    match = YAML_BLOCK.search(content)
    if match is None:
        return [], [NO_METADATA]
    try:
        data = yaml.safe_load(match.group(2))
    except yaml.YAMLError as exc:
        return [f"Invalid YAML in the metadata block: {exc}".replace("\n", " ")], []
    if data is None:
        return [], [NO_METADATA]
    if not isinstance(data, dict):
        return ['"value" must be of type object'], []
    return _card_errors(data, repo_type), []


def _card_errors(data: dict, repo_type: str) -> list[str]:
    errors = []
    for key in ("license", "tags", "datasets", "language", "metrics", "base_model", "pipeline_tag"):
        if key in data and not _str_or_strs(data[key]):
            errors.append(f'"{key}" must be a string or an array of strings')
    licenses = data.get("license")
    licenses = [licenses] if isinstance(licenses, str) else licenses if isinstance(licenses, list) else []
    if any(isinstance(value, str) and value not in LICENSES for value in licenses):
        errors.append(f'"license" must be one of [{", ".join(LICENSES)}]')
    if "base_model_relation" in data and data["base_model_relation"] not in BASE_MODEL_RELATIONS:
        errors.append(f'"base_model_relation" must be one of [{", ".join(BASE_MODEL_RELATIONS)}]')
    if "library_name" in data and not isinstance(data["library_name"], str):
        errors.append('"library_name" must be a string')
    if "model-index" in data:
        errors += _model_index_errors(data["model-index"])
    if repo_type == "space":
        if data.get("sdk") is not None and data["sdk"] not in SPACE_SDKS:
            errors.append(f'"sdk" must be one of [{", ".join(SPACE_SDKS)}]')
        for key in ("colorFrom", "colorTo"):
            if key in data and data[key] not in SPACE_COLORS:
                errors.append(f'"{key}" must be one of [{", ".join(SPACE_COLORS)}]')
    return errors


def _str_or_strs(value: object) -> bool:
    return isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))


def _model_index_errors(index: object) -> list[str]:
    if not isinstance(index, list):
        return ['"model-index" must be an array']
    errors = []
    for i, model in enumerate(index):
        where = f"model-index[{i}]"
        if not isinstance(model, dict) or not isinstance(model.get("name"), str):
            errors.append(f'"{where}.name" is required')
            continue
        for j, result in enumerate(model.get("results") or []):
            at = f"{where}.results[{j}]"
            task, dataset = (result or {}).get("task"), (result or {}).get("dataset")
            if not isinstance(task, dict) or not isinstance(task.get("type"), str):
                errors.append(f'"{at}.task.type" is required')
            for key in ("type", "name"):
                if not isinstance(dataset, dict) or not isinstance(dataset.get(key), str):
                    errors.append(f'"{at}.dataset.{key}" is required')
            metrics = (result or {}).get("metrics")
            if not isinstance(metrics, list) or not metrics:
                errors.append(f'"{at}.metrics" must contain at least 1 items')
            for k, metric in enumerate(metrics if isinstance(metrics, list) else []):
                if (
                    not isinstance(metric, dict)
                    or not isinstance(metric.get("type"), str)
                    or "value" not in metric
                ):
                    errors.append(f'"{at}.metrics[{k}]" must have a "type" and a "value"')
    return errors


def _card_data(store: Store, readme: dict | None) -> dict | None:
    if readme is None or readme["size"] > 1_000_000:
        return None
    import yaml

    match = YAML_BLOCK.search(store.blob(readme["sha256"]).read_text(errors="replace"))
    try:
        data = yaml.safe_load(match.group(2)) if match else None
    except yaml.YAMLError:
        return None
    return data if isinstance(data, dict) else None
