"""Real photographs, offline: the ones scikit-image ships inside its wheel (skimage.data),
for vision-language and image-to-video workloads. No hub, no network."""

from __future__ import annotations

from typing import Any

# skimage.data's colour photographs (name: what it shows), the choices of workload.image
IMAGES = {"astronaut": "Eileen Collins, NASA portrait (512x512)",
          "coffee": "a cup of coffee on a saucer (400x600)",
          "chelsea": "Chelsea the cat (300x451)",
          "rocket": "a rocket on its launch pad (427x640)"}
DEFAULT_IMAGE = "astronaut"
DEFAULT_VLM_PROMPT = "Describe this image in one sentence."
DEFAULT_IMAGE_PROMPT = "A photograph of an astronaut riding a horse on the moon"


def load_image(name: str) -> Any:
    """The photograph as an RGB PIL image (from the scikit-image wheel)."""
    from PIL import Image
    from skimage import data

    if name not in IMAGES:
        raise ValueError(f"no image {name!r}; valid: {', '.join(IMAGES)}")
    return Image.fromarray(getattr(data, name)()).convert("RGB")

