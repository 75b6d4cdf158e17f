"""Image classifier: the dominant colours of an image, as concepts.

Deterministic and weightless, so it runs anywhere: the image is shrunk to at most 64x64 pixels,
each pixel is assigned to the nearest colour of a fixed palette, and a colour's score is the
share of pixels assigned to it. The scores of all colours sum to 1; ``predict`` returns the
``top_k`` best, highest first, leaving out colours no pixel is nearest to.
"""

import numpy as np

try:  # the official clarifai uploader loads this file with its own ModelClass
    from clarifai.runners.models.model_class import ModelClass
    from clarifai.runners.utils.data_types import Concept, Image
    from clarifai.runners.utils.data_utils import Param
except ImportError:  # Orchard (its runner and its uploader)
    from orchard.authoring import Concept, Image, ModelClass, Param

# The concepts of config.yaml, in the same order, with their RGB anchors.
PALETTE = {
    "black": (0, 0, 0),
    "white": (255, 255, 255),
    "gray": (128, 128, 128),
    "red": (220, 30, 30),
    "orange": (245, 140, 20),
    "yellow": (240, 220, 40),
    "green": (40, 170, 60),
    "cyan": (40, 200, 210),
    "blue": (30, 60, 220),
    "purple": (140, 50, 180),
}
THUMBNAIL = (64, 64)


class ImageClassifier(ModelClass):
    def load_model(self) -> None:
        self.names = list(PALETTE)
        self.anchors = np.array(list(PALETTE.values()), dtype=np.float32)

    @ModelClass.method
    def predict(
        self,
        image: Image,
        top_k: int = Param(default=3, description="how many colours to return", min_value=1),
    ) -> list[Concept]:
        """The image's dominant colours, each scored by its share of the pixels."""
        shares = self.colour_shares(image)
        ranked = sorted(zip(self.names, shares, strict=True), key=lambda pair: -pair[1])
        return [Concept(name, float(share)) for name, share in ranked[: int(top_k)] if share > 0]

    def colour_shares(self, image: Image) -> np.ndarray:
        """The share of the pixels nearest to each palette colour (sums to 1)."""
        picture = image.to_pil().convert("RGB")
        picture.thumbnail(THUMBNAIL)
        pixels = np.asarray(picture, dtype=np.float32).reshape(-1, 3)
        distances = ((pixels[:, None, :] - self.anchors[None, :, :]) ** 2).sum(axis=2)
        nearest = distances.argmin(axis=1)
        counts = np.bincount(nearest, minlength=len(self.names))
        return counts / counts.sum()
