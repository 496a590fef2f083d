"""A tiny Bunny-style model run through `trust_remote_code`, for the tests (written for this project).

Structure, as in BAAI-DCAI/Bunny (`bunny_phi.py`, `bunny_arch.py`): `BunnyPhiForCausalLM(PhiForCausalLM)` holds
`model = BunnyPhiModel(PhiModel)`, which owns the text decoder plus `vision_tower` (a SigLIP tower whose
second-to-last hidden state is the image feature) and `mm_projector` (Linear, GELU, Linear). The top-level forward
takes `images=` (pixel tensors) and splices each image's features into the sequence where `input_ids` holds the
placeholder -200, so the backbone sees a longer sequence than `input_ids`. Generation keeps the prompt's ids in
its output; decoding steps with a cache extend the attention mask and the positions past the spliced prompt.
"""

import torch
from torch import nn
from transformers import PhiForCausalLM, PhiModel, SiglipVisionConfig, SiglipVisionModel

from .configuration_bunny_phi import BunnyPhiConfig

IMAGE_TOKEN_INDEX = -200
IGNORE_INDEX = -100


class SiglipVisionTower(nn.Module):
    """Wraps a SigLIP vision model; returns the hidden state of layer `select_layer` for every patch."""

    def __init__(self, config):
        super().__init__()
        self.select_layer = -2
        self.vision_tower = SiglipVisionModel(SiglipVisionConfig(**config.mm_vision_config))

    def forward(self, images):
        param = next(self.vision_tower.parameters())
        out = self.vision_tower(images.to(param.device, param.dtype), output_hidden_states=True)
        return out.hidden_states[self.select_layer].to(images.dtype)


def build_projector(config):
    if config.mm_projector_type != "mlp2x_gelu":
        raise ValueError(f"unknown mm_projector_type {config.mm_projector_type!r}")
    return nn.Sequential(
        nn.Linear(config.mm_hidden_size, config.hidden_size),
        nn.GELU(),
        nn.Linear(config.hidden_size, config.hidden_size),
    )


class BunnyPhiModel(PhiModel):
    config_class = BunnyPhiConfig

    def __init__(self, config):
        super().__init__(config)
        self.vision_tower = SiglipVisionTower(config)
        self.mm_projector = build_projector(config)
        self.post_init()


class BunnyPhiForCausalLM(PhiForCausalLM):
    config_class = BunnyPhiConfig

    def __init__(self, config):
        super().__init__(config)
        self.model = BunnyPhiModel(config)
        self.post_init()

    def get_model(self):
        return self.model

    def encode_images(self, images):
        return self.model.mm_projector(self.model.vision_tower(images))

    def splice(self, input_ids, attention_mask, labels, images):
        """Embeddings with image features in place of each -200, and the mask / labels / positions to match."""
        features = self.encode_images(images)  # [images, patches, hidden], in sequence order
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        embeds, masks, new_labels = [], [], []
        image = 0
        for row in range(input_ids.shape[0]):
            ids, mask = input_ids[row], attention_mask[row]
            lab = labels[row] if labels is not None else torch.full_like(ids, IGNORE_INDEX)
            parts, part_mask, part_labels = [], [], []
            start = 0
            for pos in torch.where(ids == IMAGE_TOKEN_INDEX)[0].tolist() + [len(ids)]:
                text = ids[start:pos]
                parts.append(self.model.embed_tokens(text))
                part_mask.append(mask[start:pos])
                part_labels.append(lab[start:pos])
                if pos < len(ids):
                    feat = features[image]
                    image += 1
                    parts.append(feat.to(parts[-1].dtype))
                    part_mask.append(mask.new_full((feat.shape[0],), int(mask[pos])))
                    part_labels.append(lab.new_full((feat.shape[0],), IGNORE_INDEX))
                start = pos + 1
            embeds.append(torch.cat(parts))
            masks.append(torch.cat(part_mask))
            new_labels.append(torch.cat(part_labels))
        length = max(e.shape[0] for e in embeds)
        hidden = embeds[0].shape[-1]
        out_embeds = embeds[0].new_zeros(len(embeds), length, hidden)
        out_mask = attention_mask.new_zeros(len(embeds), length)
        out_labels = input_ids.new_full((len(embeds), length), IGNORE_INDEX)
        for row, (e, m, lab) in enumerate(zip(embeds, masks, new_labels)):
            out_embeds[row, : e.shape[0]] = e
            out_mask[row, : m.shape[0]] = m
            out_labels[row, : lab.shape[0]] = lab
        positions = (out_mask.long().cumsum(-1) - 1).clamp(min=0)
        return out_embeds, out_mask, (out_labels if labels is not None else None), positions

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        cache=None,
        inputs_embeds=None,
        labels=None,
        use_cache=None,
        images=None,
        logits_to_keep=0,
        **kwargs,
    ):
        past = cache.get_seq_length() if cache is not None else 0
        if inputs_embeds is None and images is not None and past == 0:
            inputs_embeds, attention_mask, labels, position_ids = self.splice(
                input_ids, attention_mask, labels, images
            )
            input_ids = None
        elif past > 0 and input_ids is not None:
            new = input_ids.shape[1]
            if attention_mask is not None and attention_mask.shape[1] < past + new:
                extra = attention_mask.new_ones(attention_mask.shape[0], past + new - attention_mask.shape[1])
                attention_mask = torch.cat([attention_mask, extra], dim=1)
            position_ids = torch.arange(past, past + new, device=input_ids.device).unsqueeze(0)
        return super().forward(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            labels=labels,
            use_cache=use_cache,
            logits_to_keep=logits_to_keep,
            **kwargs,
        )

    def prepare_inputs_for_generation(
        self, input_ids, cache=None, attention_mask=None, inputs_embeds=None, **kwargs
    ):
        images = kwargs.pop("images", None)
        inputs = super().prepare_inputs_for_generation(
            input_ids, cache=cache, attention_mask=attention_mask, inputs_embeds=inputs_embeds, **kwargs
        )
        if images is not None:
            inputs["images"] = images
        return inputs
