"""The visual concepts of the demo: textures that a network can learn from many images.

A concept is a 4×4 binary tile of 2 px cells painted in one of four colour pairs
(concept c: tile c, pair c % 4). A scene shows an object (a rectangle filled with the tile
repeated at a random phase, in the pair's colours with per-scene jitter) drifting over a
noisy grey background. Phase, position, motion and background carry no class information;
colour tells four groups of concepts apart, only the texture tells the concepts of a group
apart. The tiles are distinct under what the augmentation and the colour pair cannot tell
apart: cyclic shifts (the phase), horizontal flips (the flip augmentation) and complements,
and at least MIN_DISTANCE cells apart from every such variant of one another.

The student's classes are STUDENT_CONCEPTS, three pairs of concepts that share a colour pair
and differ in texture only; the image teacher's "ImageNet" has all N_CONCEPTS
(demo/image_teacher.py).
"""
import numpy as np

N_CONCEPTS = 16
STUDENT_CONCEPTS = (0, 4, 1, 5, 2, 6)
PALETTE = ((220, 60, 40), (40, 40, 160)), ((240, 220, 60), (30, 120, 40)), \
    ((250, 250, 250), (90, 40, 120)), ((60, 200, 220), (120, 60, 20))   # (RGB, RGB) per group
COLOUR_JITTER = 15.0        # std of the per-scene jitter of each colour channel (0-255)
TILE = 4                    # tile side, in cells
CELL = 2                    # cell side, in px (1 px cells do not survive the crops' resampling)
MIN_DISTANCE = 4            # least number of differing cells between two concepts' variants
TILE_SEED = 2021            # fixed: the concepts are part of the design, not of a run's seed
HEIGHT, WIDTH = 16, 20      # rendered frame size (the videos' stored resolution)
OBJECT = (12, 14)           # object height, width in px
SPEED = 0.6                 # object speed in px/frame (direction drawn per scene)
BACKGROUND = (40.0, 200.0)  # range of the per-scene grey level (0-255)
PIXEL_NOISE = 30.0          # std of the per-frame, per-pixel Gaussian noise (0-255 scale)


def equivalents(tile: np.ndarray) -> set[bytes]:
    """Every tile that renders like `tile` up to phase, horizontal flip and colour swap."""
    found = set()
    for variant in (tile, tile[:, ::-1], 1 - tile, 1 - tile[:, ::-1]):
        for dy in range(TILE):
            for dx in range(TILE):
                found.add(np.roll(variant, (dy, dx), axis=(0, 1)).astype(np.uint8).tobytes())
    return found


def concept_tiles(n: int = N_CONCEPTS) -> np.ndarray:
    """(n, TILE, TILE) uint8 0/1: the first n random tiles (fixed stream) with both values on
    at least 5 of the 16 cells (no near-uniform object) and at least MIN_DISTANCE cells away
    from every variant (`equivalents`) of the tiles before them. n may be at most 19."""
    rng = np.random.default_rng(TILE_SEED)
    tiles, variants = [], []
    while len(tiles) < n:
        tile = rng.integers(0, 2, (TILE, TILE), dtype=np.uint8)
        if not 5 <= tile.sum() <= TILE * TILE - 5:
            continue
        if all((v != tile.ravel()).sum(1).min() >= MIN_DISTANCE for v in variants):
            tiles.append(tile)
            variants.append(np.stack([np.frombuffer(b, dtype=np.uint8) for b in equivalents(tile)]))
    return np.stack(tiles)


def object_colours(concept: int, rng: np.random.Generator) -> np.ndarray:
    """(2, 3) float64: the concept's colour pair, each channel jittered by N(0, COLOUR_JITTER)."""
    return np.clip(np.array(PALETTE[concept % len(PALETTE)], float)
                   + rng.normal(0, COLOUR_JITTER, (2, 3)), 0, 255)


def bounce(start: float, step: float, t: np.ndarray, span: float) -> np.ndarray:
    """Positions start + step·t reflected into [0, span] (an object bouncing off the walls)."""
    phase = np.mod(start + step * t, 2 * span)
    return span - np.abs(phase - span)


def render_scene(concept: int, rng: np.random.Generator, n_frames: int,
                 tiles: np.ndarray | None = None) -> np.ndarray:
    """(n_frames, HEIGHT, WIDTH, 3) uint8: an object showing `concept` drifting over a noisy
    background. tiles: `concept_tiles()` (computed when None).

    Per scene: background grey level, colour jitter, texture phase, start
    position and direction; per frame: fresh pixel noise. The texture moves with the object.
    """
    tile = (concept_tiles() if tiles is None else tiles)[concept]
    oh, ow = OBJECT
    period = TILE * CELL
    cells = np.kron(tile, np.ones((CELL, CELL), dtype=np.uint8))
    dy, dx = rng.integers(0, period, 2)
    texture = np.tile(cells, (oh // period + 2, ow // period + 2))[dy:dy + oh, dx:dx + ow]
    colours = object_colours(concept, rng)
    patch = colours[texture]                                     # (oh, ow, 3)
    angle = rng.uniform(0, 2 * np.pi)
    t = np.arange(n_frames)
    tops = bounce(rng.uniform(0, HEIGHT - oh), SPEED * np.sin(angle), t, HEIGHT - oh).round().astype(int)
    lefts = bounce(rng.uniform(0, WIDTH - ow), SPEED * np.cos(angle), t, WIDTH - ow).round().astype(int)
    frames = np.full((n_frames, HEIGHT, WIDTH, 3), rng.uniform(*BACKGROUND))
    for k, (top, left) in enumerate(zip(tops, lefts)):
        frames[k, top:top + oh, left:left + ow] = patch
    frames += rng.normal(0, PIXEL_NOISE, (n_frames, HEIGHT, WIDTH, 1))
    return np.clip(frames, 0, 255).round().astype(np.uint8)


def design() -> dict:
    """The constants that shape the scenes (recorded in the demo data's manifest)."""
    return {"n_concepts": N_CONCEPTS, "tile": TILE, "cell": CELL, "min_distance": MIN_DISTANCE, "tile_seed": TILE_SEED, "height": HEIGHT,
            "width": WIDTH, "object": OBJECT, "speed": SPEED, "background": BACKGROUND,
            "pixel_noise": PIXEL_NOISE, "palette": PALETTE, "colour_jitter": COLOUR_JITTER,
            "student_concepts": STUDENT_CONCEPTS}
