"""Configuration of the tiny remote-code Bunny used by the tests (written for this project, not Bunny's own file).

It mirrors the public Bunny-v1.0-3B config: `model_type: bunny-phi`, a Phi text config at the top level, and the
multimodal keys `mm_vision_tower`, `mm_hidden_size`, `mm_projector_type`, `image_aspect_ratio`. The one key the
real model lacks is `mm_vision_config`: the shape of the tiny SigLIP tower, which the real code reads from the
tower's own repo (`google/siglip-so400m-patch14-384`).
"""

from transformers import PhiConfig


class BunnyPhiConfig(PhiConfig):
    model_type = "bunny-phi"
