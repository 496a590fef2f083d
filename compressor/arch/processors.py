"""A model folder's processor: the family's own processor class, never a silent fallback to a bare tokenizer.

- Native families: `AutoProcessor`. Where its video processor cannot load (every transformers 5.24 video
  processor needs torchvision), the family's processor class is built with its PIL image processor and no video
  processor (`without_video`), and a log line says so: images work, videos are refused.
- A processor that cannot load for another reason (e.g. SmolVLM's `num2words`) is an error naming the package.
- Bunny ships no processor: its tokenizer plus a SigLIP image processor, joined in `BunnyProcessor`.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from compressor.errors import CompressorError

log = logging.getLogger(__name__)

# Bunny's placeholder for one image in `input_ids`; its forward splices the image features there.
BUNNY_IMAGE_TOKEN_INDEX = -200

# Bunny-v1.0's conversation format ("bunny" in its conversation.py), with TRL's {% generation %} markers, for a
# tokenizer that has no chat template of its own.
BUNNY_CHAT_TEMPLATE = (
    "{{- 'A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the user\\'s questions.' -}}"
    "{%- for message in messages -%}"
    "{%- if message['content'] is string -%}{%- set parts = [{'type': 'text', 'text': message['content']}] -%}"
    "{%- else -%}{%- set parts = message['content'] -%}{%- endif -%}"
    "{%- if message['role'] == 'assistant' -%}{{- ' ASSISTANT:' -}}{%- generation -%}"
    "{%- for part in parts if part['type'] == 'text' -%}{{- ' ' + part['text'] -}}{%- endfor -%}"
    "{{- eos_token -}}{%- endgeneration -%}"
    "{%- else -%}{{- ' USER: ' -}}"
    "{%- for part in parts -%}{%- if part['type'] == 'image' -%}{{- '<image>\\n' -}}"
    "{%- elif part['type'] == 'text' -%}{{- part['text'] -}}{%- endif -%}{%- endfor -%}"
    "{%- endif -%}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- ' ASSISTANT:' -}}{%- endif -%}"
)


def _processor_mixin():
    from transformers import ProcessorMixin

    return ProcessorMixin


class _NoVideo:
    """Stands in for a video processor that cannot load: processors read these defaults even for images."""

    num_frames = None
    fps = None

    def __bool__(self) -> bool:
        return False


def without_video(cls):
    """`cls` (a processor class) built and saved without its video processor, under the same class name."""
    attributes = [a for a in cls.get_attributes() if a != "video_processor"]

    class ImagesOnly(cls):
        video_processor = _NoVideo()

        @classmethod
        def get_attributes(klass):
            return list(attributes)

        @classmethod
        def from_args_and_dict(klass, args, processor_dict, **kwargs):
            # SmolVLM's __init__ requires the argument: give None (the attributes loaded exclude it)
            return super().from_args_and_dict(args, {**processor_dict, "video_processor": None}, **kwargs)

    ImagesOnly.__name__ = ImagesOnly.__qualname__ = cls.__name__
    ImagesOnly.__module__ = cls.__module__
    return ImagesOnly


def _bunny_class():
    ProcessorMixin = _processor_mixin()

    class BunnyProcessor(ProcessorMixin):
        """Bunny's tokenizer + image processor as one processor: `images` (pixels) and `input_ids` holding -200 once
        per image, where the model's own forward splices the image features. The tokenizer gets `<image>` as an added
        token, so character offsets (assistant masks) line up; its id is replaced by -200 after tokenising."""

        image_token = "<image>"

        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            if self.image_token not in tokenizer.get_vocab():
                tokenizer.add_tokens([self.image_token], special_tokens=True)
            super().__init__(
                image_processor, tokenizer, chat_template=chat_template or tokenizer.chat_template
            )
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)

        def __call__(self, images=None, text=None, **kwargs):
            import torch
            from transformers import BatchFeature

            tensors = kwargs.pop("return_tensors", None)
            names = (
                "padding",
                "padding_side",
                "truncation",
                "max_length",
                "pad_to_multiple_of",
                "add_special_tokens",
                "return_offsets_mapping",
                "return_attention_mask",
            )
            text_kwargs = {k: kwargs[k] for k in names if k in kwargs}
            out: dict[str, Any] = {}
            if text is not None:
                texts = [text] if isinstance(text, str) else list(text)
                enc = self.tokenizer(texts, return_tensors="pt", **{"padding": True, **text_kwargs})
                ids = enc["input_ids"]
                enc["input_ids"] = ids.masked_fill(ids == self.image_token_id, BUNNY_IMAGE_TOKEN_INDEX)
                out.update(enc)
                if kwargs.get("return_text_replacement_offsets"):
                    out["text_replacement_offsets"] = [[] for _ in texts]
            if images is not None:
                flat = _flatten(images)
                if flat:
                    pixels = self.image_processor(
                        [_square(im, self.image_processor) for im in flat], return_tensors="pt"
                    )
                    out["images"] = pixels["pixel_values"].to(torch.float32)
            return BatchFeature(out, tensor_type=tensors, skip_tensor_conversion=["text_replacement_offsets"])

        def save_pretrained(self, folder, **kwargs):
            """The tokenizer's and the image processor's files, as Bunny's own repo holds them (no processor file)."""
            folder = Path(folder)
            self.tokenizer.chat_template = self.chat_template
            self.tokenizer.save_pretrained(folder)
            self.image_processor.save_pretrained(folder)
            return [str(folder)]

        @property
        def model_input_names(self):
            return ["input_ids", "attention_mask", "images"]

    return BunnyProcessor


def _flatten(images) -> list:
    if images is None:
        return []
    if isinstance(images, (list, tuple)):
        return [im for item in images for im in _flatten(item)]
    return [images]


def _square(image, image_processor):
    """Pad to a square with the image processor's mean colour (Bunny's `image_aspect_ratio: pad`)."""
    from PIL import Image

    image = image.convert("RGB")
    w, h = image.size
    if w == h:
        return image
    mean = getattr(image_processor, "image_mean", None) or (0.5, 0.5, 0.5)
    side = max(w, h)
    canvas = Image.new("RGB", (side, side), tuple(int(255 * m) for m in mean))
    canvas.paste(image, ((side - w) // 2, (side - h) // 2))
    return canvas


_BUNNY = None


def bunny_processor_class():
    global _BUNNY
    if _BUNNY is None:
        _BUNNY = _bunny_class()
    return _BUNNY


def _bunny_image_processor(path: Path, config: dict[str, Any]):
    """The folder's SigLIP image processor (preprocessor_config.json), else SigLIP's defaults at the size that
    `mm_vision_tower` names (`...-patch14-384` → 384), as Bunny's own code builds it."""
    from transformers import AutoImageProcessor, SiglipImageProcessorPil

    if (path / "preprocessor_config.json").is_file():
        return AutoImageProcessor.from_pretrained(str(path))
    match = re.search(r"-(\d+)$", str(config.get("mm_vision_tower") or ""))
    side = int(match.group(1)) if match else 384
    log.info("%s has no preprocessor_config.json: SigLIP image processor at %dx%d", path, side, side)
    return SiglipImageProcessorPil(size={"height": side, "width": side})


def load_bunny(path: Path, config: dict[str, Any], trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    template = tokenizer.chat_template or BUNNY_CHAT_TEMPLATE
    return bunny_processor_class()(_bunny_image_processor(path, config), tokenizer, chat_template=template)


def _needs_package(err: BaseException) -> str | None:
    text = str(err)
    for package in ("num2words", "torchvision", "av", "decord", "timm"):
        if re.search(rf"\b{package}\b", text):
            return package
    return None


def _processor_class(path: Path, config: dict[str, Any]):
    """The processor class the folder names (processor_config.json / tokenizer_config.json), else the family's."""
    import transformers
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    for name in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json"):
        file = path / name
        if file.is_file():
            cls_name = json.loads(file.read_text()).get("processor_class")
            if cls_name and hasattr(transformers, cls_name):
                return getattr(transformers, cls_name)
    cls_name = PROCESSOR_MAPPING_NAMES.get(config.get("model_type"))
    return getattr(transformers, cls_name) if cls_name else None


def load(path: str | Path, spec, config: dict[str, Any], trust_remote_code: bool = False):
    """The processor of a model folder (see the module doc); None when the folder holds no tokenizer at all."""
    from transformers import AutoProcessor, AutoTokenizer

    path = Path(path)
    if spec is not None and spec.processor == "bunny":
        return load_bunny(path, config, trust_remote_code)
    try:
        processor = AutoProcessor.from_pretrained(str(path), trust_remote_code=trust_remote_code)
        if spec is None or hasattr(processor, "image_processor"):
            return processor
        first = None  # a tokenizer alone: the folder has no image processor files
    except (ImportError, AttributeError, TypeError, ValueError, OSError, KeyError) as err:
        first = err
    if spec is not None and first is not None:
        cls = _processor_class(path, config)
        package = _needs_package(first)
        if cls is not None and package in ("torchvision", None):
            try:
                processor = without_video(cls).from_pretrained(str(path), trust_remote_code=trust_remote_code)
            except (ImportError, AttributeError, TypeError, ValueError, OSError, KeyError) as err:
                package = _needs_package(err) or package
                log.debug("%s without a video processor failed on %s: %s", cls.__name__, path, err)
            else:
                log.info(
                    "%s: %s loaded with its PIL image processor and no video processor (torchvision is not "
                    "installed; images work, videos do not)",
                    path,
                    cls.__name__,
                )
                return processor
        if package is not None and package != "torchvision":
            raise CompressorError(
                f"the processor of {path} needs the `{package}` package: pip install {package}"
            ) from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except (OSError, ValueError, TypeError, KeyError, ImportError):
        return None
    if spec is not None:
        raise CompressorError(
            f"{path} holds a tokenizer but no image processor that loads ({first}); a {spec.family} model needs "
            "its processor: save it with processor.save_pretrained into the model folder"
        )
    return tokenizer
