"""Synthetic CUB-200-2011 + text_c10 in the official layout (see cub.py), quirks included.

The 200 real class folders (pcmpipe/data/classes.txt) each get a latent bird: one value per attribute
group (primary, wing, crown, ... colours; bill shape, size, ...). Every image of the class is drawn from
that latent (random pose, scale and background), its binary attributes are the class values with
label noise, and its ten captions name the class's colours and shapes, so I, T, A and C agree.
Quirks of the real files: CRLF endings in images.txt, image_attribute_labels.txt and some caption files,
a few attribute lines with an extra field, attributes.txt beside the CUB_200_2011 folder.
PCME's held-out list (seen_test_images.txt, beside CUB_200_2011/) names the is_training_image = 0 images of
the 150 seen classes, so both readings of the val split select the same images here, plus, like the real
list, a few images of unseen test classes (which stay in `test`).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np

from pcmpipe.datasets.cub import CUB_DIR, NUM_ATTRIBUTES, PCME_VAL_LIST, pcme_test_classes
from pcmpipe.datasets.synthetic.render import COLOURS, a, draw_bird

COLOUR_NAMES = list(COLOURS)  # the 15 colour values of CUB's colour groups
PATTERNS = ["solid", "spotted", "striped", "multi-colored"]
# (group, values) in the order of the real attributes.txt: 28 groups, 312 attributes
GROUPS: list[tuple[str, list[str]]] = [
    (
        "bill_shape",
        [
            "curved_(up_or_down)",
            "dagger",
            "hooked",
            "needle",
            "hooked_seabird",
            "spatulate",
            "all-purpose",
            "cone",
            "specialized",
        ],
    ),
    ("wing_color", COLOUR_NAMES),
    ("upperparts_color", COLOUR_NAMES),
    ("underparts_color", COLOUR_NAMES),
    ("breast_pattern", PATTERNS),
    ("back_color", COLOUR_NAMES),
    ("tail_shape", ["forked_tail", "rounded_tail", "notched_tail", "fan-shaped_tail", "pointed_tail", "squared_tail"]),
    ("upper_tail_color", COLOUR_NAMES),
    (
        "head_pattern",
        [
            "spotted",
            "malar",
            "crested",
            "masked",
            "unique_pattern",
            "eyebrow",
            "eyering",
            "plain",
            "eyeline",
            "striped",
            "capped",
        ],
    ),
    ("breast_color", COLOUR_NAMES),
    ("throat_color", COLOUR_NAMES),
    ("eye_color", [c for c in COLOUR_NAMES if c != "iridescent"]),
    ("bill_length", ["about_the_same_as_head", "longer_than_head", "shorter_than_head"]),
    ("forehead_color", COLOUR_NAMES),
    ("under_tail_color", COLOUR_NAMES),
    ("nape_color", COLOUR_NAMES),
    ("belly_color", COLOUR_NAMES),
    ("wing_shape", ["rounded-wings", "pointed-wings", "broad-wings", "tapered-wings", "long-wings"]),
    (
        "size",
        [
            "large_(16_-_32_in)",
            "small_(5_-_9_in)",
            "very_large_(32_-_72_in)",
            "medium_(9_-_16_in)",
            "very_small_(3_-_5_in)",
        ],
    ),
    (
        "shape",
        [
            "upright-perching_water-like",
            "chicken-like-marsh",
            "long-legged-like",
            "duck-like",
            "owl-like",
            "gull-like",
            "hummingbird-like",
            "pigeon-like",
            "tree-clinging-like",
            "hawk-like",
            "sandpiper-like",
            "upland-ground-like",
            "swallow-like",
            "perching-like",
        ],
    ),
    ("back_pattern", PATTERNS),
    ("tail_pattern", PATTERNS),
    ("belly_pattern", PATTERNS),
    ("primary_color", COLOUR_NAMES),
    ("leg_color", COLOUR_NAMES),
    ("bill_color", COLOUR_NAMES),
    ("crown_color", COLOUR_NAMES),
    ("wing_pattern", PATTERNS),
]
ATTRIBUTES = [f"has_{g}::{v}" for g, vals in GROUPS for v in vals]
assert len(ATTRIBUTES) == NUM_ATTRIBUTES
_OFFSET = {}
_o = 0
for _g, _vals in GROUPS:
    _OFFSET[_g] = _o
    _o += len(_vals)
SIZE_SCALE = {"very_small": 0.5, "small": 0.6, "medium": 0.72, "large": 0.85, "very_large": 1.0}
BACKGROUNDS = [(170, 210, 240), (90, 140, 70), (200, 190, 160), (230, 230, 235)]
IMAGE_SIZE = 128


def real_class_folders() -> list[str]:
    """The 200 class folder names of CUB, in class id order."""
    text = resources.files("pcmpipe.data").joinpath("classes.txt").read_text(encoding="utf-8")
    return [line.split()[1] for line in text.splitlines() if line.strip()]


def _class_latent(rng: np.random.Generator) -> dict[str, str]:
    """One value per group; colour groups mostly take the class's two main colours."""
    main = rng.choice(len(COLOUR_NAMES), 2, replace=False)
    latent = {}
    for g, vals in GROUPS:
        if vals is COLOUR_NAMES and rng.random() < 0.8:
            latent[g] = COLOUR_NAMES[main[int(rng.random() < 0.35)]]
        else:
            latent[g] = vals[int(rng.integers(len(vals)))]
    return latent


def _image_attributes(latent: dict[str, str], rng: np.random.Generator) -> np.ndarray:
    """int [312] 0/1: the class values present with p=0.85, any other value with p=0.03."""
    vec = (rng.random(NUM_ATTRIBUTES) < 0.03).astype(int)
    for g, vals in GROUPS:
        vec[_OFFSET[g] + vals.index(latent[g])] = int(rng.random() < 0.85)
    return vec


def _words(value: str) -> str:
    return value.split("_(")[0].replace("_", " ").replace("-like", "").replace("-", " ")


def _captions(lat: dict[str, str], rng: np.random.Generator) -> list[str]:
    w = {g: _words(v) for g, v in lat.items()}
    templates = [
        f"this bird has {a(w['primary_color'])} body and {a(w['crown_color'])} crown.",
        f"{a(w['size'])} bird with {w['wing_color']} wings and {a(w['bill_shape'])} bill.",
        f"this {w['primary_color']} bird has {a(w['belly_color'])} belly and {w['leg_color']} legs.",
        f"the bird has {a(w['bill_color'])} {w['bill_shape']} bill and {a(w['crown_color'])} head.",
        f"{a(w['shape'])} bird with {a(w['underparts_color'])} breast and {w['wing_color']} wings.",
        f"this bird is mostly {w['primary_color']} with {a(w['tail_shape'])}.",
        f"a bird with {w['wing_pattern']} {w['wing_color']} wings and {a(w['back_color'])} back.",
        f"this {w['size']} bird has {a(w['bill_length'])} bill that is {w['bill_color']}.",
        f"the {w['primary_color']} bird has {w['eye_color']} eyes and {a(w['head_pattern'])} head pattern.",
        f"{a(w['crown_color'])} crowned bird with {a(w['underparts_color'])} belly and {w['leg_color']} feet.",
        f"this bird has {w['wing_shape']} and {a(w['breast_pattern'])} {w['breast_color']} breast.",
        f"{a(w['primary_color'])} and {w['wing_color']} bird with a short {w['bill_color']} beak.",
    ]
    return [templates[k] for k in rng.permutation(len(templates))[:10]]


def synth_cub(out: Path, images_per_class: int = 3, seed: int = 0, text_subdir: bool = False) -> dict:
    """Write a synthetic CUB under `out` (text_c10 in out/ or out/cub_text/); returns a summary."""
    rng = np.random.default_rng(seed)
    folders = real_class_folders()
    cub = out / CUB_DIR
    (cub / "attributes").mkdir(parents=True, exist_ok=True)
    text_root = out / "cub_text" / "text_c10" if text_subdir else out / "text_c10"
    images, labels, split, attr_lines, held_out = [], [], [], [], []
    test_classes = pcme_test_classes()
    listed_test_class = sorted(test_classes)[0]  # the real list also names a few unseen-class images
    class_vecs = np.zeros((len(folders), NUM_ATTRIBUTES))
    iid = 0
    for cid, folder in enumerate(folders, 1):
        lat = _class_latent(rng)
        (cub / "images" / folder).mkdir(parents=True, exist_ok=True)
        (text_root / folder).mkdir(parents=True, exist_ok=True)
        parts = {k: lat[f"{k}_color"] for k in ("primary", "underparts", "wing", "crown", "bill", "leg")}
        scale = SIZE_SCALE[_words(lat["size"]).replace(" ", "_")]
        training = rng.permutation(images_per_class) < (images_per_class + 1) // 2
        for j in range(images_per_class):
            iid += 1
            stem = f"{folder.split('.', 1)[1]}_{j + 1:04d}_{int(rng.integers(1000, 99999))}"
            bg = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
            size = scale * rng.uniform(0.9, 1.05)  # drawn before the offsets: the seeded images depend on the order
            dx, dy = rng.uniform(-1, 1, 2)
            img = draw_bird(IMAGE_SIZE, parts, size, dx, dy, bg)
            img.save(cub / "images" / folder / f"{stem}.jpg", quality=90)
            images.append(f"{iid} {folder}/{stem}.jpg")
            labels.append(f"{iid} {cid}")
            split.append(f"{iid} {int(training[j])}")
            if not training[j] and (folder not in test_classes or folder == listed_test_class):
                held_out.append(f"{folder}/{stem}.jpg")
            vec = _image_attributes(lat, rng)
            class_vecs[cid - 1] += vec / images_per_class
            certs, times = rng.integers(1, 5, NUM_ATTRIBUTES), rng.uniform(1, 30, NUM_ATTRIBUTES)
            for k in range(NUM_ATTRIBUTES):
                cert, t = certs[k], times[k]
                extra = " 0" if (iid * NUM_ATTRIBUTES + k) % 997 == 0 else ""  # the real file's malformed lines
                attr_lines.append(f"{iid} {k + 1} {vec[k]} {cert}{extra} {t:.3f}")
            nl = "\r\n" if cid % 7 == 0 else "\n"  # some caption files with CRLF
            (text_root / folder / f"{stem}.txt").write_bytes(nl.join(_captions(lat, rng)).encode() + nl.encode())

    def write(path: Path, lines: list[str], crlf: bool = False) -> None:
        nl = "\r\n" if crlf else "\n"
        path.write_bytes("".join(line + nl for line in lines).encode("utf-8"))

    write(cub / "images.txt", images, crlf=True)
    write(cub / "classes.txt", [f"{c} {f}" for c, f in enumerate(folders, 1)])
    write(cub / "image_class_labels.txt", labels)
    write(cub / "train_test_split.txt", split, crlf=True)
    write(cub / "attributes" / "image_attribute_labels.txt", attr_lines, crlf=True)
    write(
        cub / "attributes" / "class_attribute_labels_continuous.txt",
        [" ".join(f"{100 * v:.12f}" for v in row) for row in class_vecs],
    )
    write(cub / "attributes" / "certainties.txt", ["1 not visible", "2 guessing", "3 probably", "4 definitely"])
    write(out / "attributes.txt", [f"{k} {name}" for k, name in enumerate(ATTRIBUTES, 1)])
    write(out / PCME_VAL_LIST, held_out)
    return {"dataset": "cub", "classes": len(folders), "images": iid, "text_c10": str(text_root)}
