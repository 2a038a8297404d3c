"""CUB-200-2011 with the captions of Reed et al. (CUB-Captions, as used by PCME).

On-disk layout (docs/datasets.md):

    root/CUB_200_2011/images.txt                    "<image_id> <NNN.Class>/<file>.jpg"
    root/CUB_200_2011/classes.txt                   "<class_id> <NNN.Class>"
    root/CUB_200_2011/image_class_labels.txt        "<image_id> <class_id>"
    root/CUB_200_2011/train_test_split.txt          "<image_id> <is_training_image>"
    root/CUB_200_2011/images/<NNN.Class>/<file>.jpg
    root/CUB_200_2011/attributes/image_attribute_labels.txt
                                                    "<image_id> <attr_id> <is_present> <certainty> <time>"
    root/CUB_200_2011/attributes/class_attribute_labels_continuous.txt   200 lines x 312 percentages
    root/attributes.txt                             beside CUB_200_2011/, as in the official tgz
    root/text_c10/<NNN.Class>/<file>.txt            10 captions a file (also root/cub_text/text_c10,
                                                    root/cvpr2016_cub/text_c10)
    root/seen_test_images.txt                       PCME's held-out images of the 150 seen classes,
                                                    "<NNN.Class>/<file>.jpg" a line (also inside CUB_200_2011/)

`root` may also be the CUB_200_2011 folder itself. Splits follow PCME's `cub` split (naver-ai/pcme,
datasets/_dataloader.py): the 50 classes of pcme_testclasses.txt are `test` (all their images); of the other
150, the images listed in seen_test_images.txt are `val` (PCME's `val_in` loader) and the rest `train`.
`val_split="train_test_split"` instead splits the 150 classes by CUB's is_training_image (train 1, val 0).
"""

from __future__ import annotations

from functools import cached_property
from importlib import resources
from pathlib import Path

import numpy as np

from pcmpipe.datasets.base import Dataset, Record, read_lines, require, require_some_files
from pcmpipe.errors import UserError

NUM_ATTRIBUTES = 312
CUB_DIR = "CUB_200_2011"
GET_IT = "run `pcmpipe download cub --root ROOT` or see docs/datasets.md"
GET_TEXT = (
    "download cvpr2016_cub.tar.gz (Reed et al. captions) from https://drive.google.com/file/d/"
    "0B0ywwgffWnLLZW9uVHNjb2JmNlE/view?resourcekey=0-8y2UVmBHAlG26HafWYNoFQ and unpack it into ROOT "
    "(giving ROOT/cvpr2016_cub/text_c10/<NNN.Class>/<image>.txt)"
)
TEXT_DIRS = ("text_c10", "cub_text/text_c10", "cvpr2016_cub/text_c10")
CLASS_VECTORS = ("mean", "continuous")
VAL_SPLITS = ("pcme", "train_test_split")
ATTRIBUTE_VALUES = ("binary", "certainty")
PCME_VAL_LIST = "seen_test_images.txt"
# PCME's split files at a fixed commit, so the list cannot change under a reproduction; `pcmpipe download cub`
# fetches it and checks this sha256 (PCME publishes no checksum). testclasses.txt at the same commit has the
# sha256 of the packaged pcmpipe/data/pcme_testclasses.txt (2adcf5ae...), so it is not fetched.
PCME_COMMIT = "7224f04e4f780545176e3bc5040ad9b9e78a5049"
PCME_VAL_URL = f"https://raw.githubusercontent.com/naver-ai/pcme/{PCME_COMMIT}/datasets/annotations/cub/{PCME_VAL_LIST}"
PCME_VAL_SHA256 = "730c15fcdd2a3324f998dea2a3a25ec777aa1e1c22626302fa8256e1f6c127a0"
PCME_TESTCLASSES_SHA256 = "2adcf5ae19ee338ef46ae938c13c4a94d36c30dfc75981edf4fc6dd7f856ef3c"
# CUB's certainties.txt: 1 not visible, 2 guessing, 3 probably, 4 definitely -> how far from "unknown" (0.5)
CERTAINTY_WEIGHT = {1: 0.0, 2: 1 / 3, 3: 2 / 3, 4: 1.0}


def pcme_test_classes() -> set[str]:
    """The 50 PCME test class folder names ('043.Yellow_bellied_Flycatcher', ...)."""
    text = resources.files("pcmpipe.data").joinpath("pcme_testclasses.txt").read_text(encoding="utf-8")
    return {line.strip() for line in text.splitlines() if line.strip()}


def clean_class_name(folder: str) -> str:
    """'001.Black_footed_Albatross' -> 'Black footed Albatross'."""
    return folder.split(".", 1)[-1].replace("_", " ").strip()


def prompt(folder: str) -> str:
    """The zero-shot prompt of a class (modality P)."""
    return f"A photo of a {clean_class_name(folder)}."


def attribute_values(present: np.ndarray, certainty: np.ndarray, reading: str) -> np.ndarray:
    """float32 values of (is_present, certainty) pairs of image_attribute_labels.txt.

    "binary": is_present (1 -> 1.0, else 0.0). "certainty": 0.5 +- 0.5 x weight(certainty), + when present:
    "definitely" present is 1.0, "definitely" absent 0.0, "not visible" 0.5 (unknown) either way.
    """
    yes = present == 1
    if reading == "binary":
        return yes.astype(np.float32)
    weight = np.zeros(5, dtype=np.float32)
    for c, w in CERTAINTY_WEIGHT.items():
        weight[c] = w
    w = weight[np.clip(certainty, 0, 4)]
    return (0.5 + 0.5 * np.where(yes, w, -w)).astype(np.float32)


COLUMNS = ("img", "attr", "present", "certainty")


def _read_attribute_columns(path: Path, odd_lines: list[str]) -> tuple[np.ndarray, ...]:
    """(image_id, attribute_id, is_present, certainty) int64 columns of the well-formed 5-field lines; the
    text of every other line is appended to `odd_lines`. Raises ValueError when a column is not integer."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    def keep_aside(row) -> str:
        odd_lines.append(row.text)
        return "skip"

    try:
        t = pcsv.read_csv(
            path,
            read_options=pcsv.ReadOptions(column_names=[*COLUMNS, "time"]),
            parse_options=pcsv.ParseOptions(delimiter=" ", invalid_row_handler=keep_aside),
            convert_options=pcsv.ConvertOptions(
                column_types={c: pa.int64() for c in COLUMNS}, include_columns=list(COLUMNS)
            ),
        )
    except pa.ArrowInvalid as e:
        raise ValueError(str(e)) from None
    if any(t.column(c).null_count for c in COLUMNS):
        raise ValueError("empty fields")
    return tuple(t.column(c).to_numpy(zero_copy_only=False) for c in COLUMNS)


def _parse_attribute_lines(
    lines: list[str], index: dict[str, int], table: np.ndarray, where: Path | None, reading: str
) -> None:
    """Set table[image, attribute] from text lines (first four fields, see attribute_values). A bad line
    raises UserError naming `where`:line, or ValueError when `where` is None (the caller then reparses)."""
    for lineno, line in enumerate(lines, 1):
        parts = line.split()
        if not parts:
            continue
        try:
            k, a, present, cert = index[parts[0]], int(parts[1]) - 1, int(parts[2]), int(parts[3])
            if not 0 <= a < NUM_ATTRIBUTES:
                raise ValueError(f"attribute id {a + 1} outside 1..{NUM_ATTRIBUTES}")
        except (KeyError, ValueError, IndexError) as e:
            if where is None:
                raise ValueError(str(e)) from None
            raise UserError(
                f"{where}:{lineno}: cannot parse {line.strip()[:60]!r} (image id, attribute id, is_present, certainty)"
            ) from None
        table[k, a] = attribute_values(np.array([present]), np.array([cert]), reading)[0]


class CUB(Dataset):
    """Reader of CUB-200-2011 + text_c10. Modalities I, T, A (attributes), C (class vector), P (prompt).

    `attributes="binary"` (default): A is each image's is_present vector; `"certainty"` weighs it by the
    annotator's certainty (attribute_values). `class_vectors="mean"` (default) makes C the mean of the class's
    A vectors (over all its images); `"continuous"` uses class_attribute_labels_continuous.txt / 100 instead.
    `val_split`: "pcme" (default) or "train_test_split" (see the module docstring).
    """

    name = "cub"
    modalities = ("I", "T", "A", "C", "P")

    def __init__(
        self, root: Path | str, class_vectors: str = "mean", attributes: str = "binary", val_split: str = "pcme"
    ) -> None:
        super().__init__(root)
        for option, value, choices in (
            ("class_vectors", class_vectors, CLASS_VECTORS),
            ("attributes", attributes, ATTRIBUTE_VALUES),
            ("val_split", val_split, VAL_SPLITS),
        ):
            if value not in choices:
                raise UserError(f"{option} must be one of {', '.join(choices)}, got {value!r}")
        self.class_vectors, self.attribute_reading, self.val_split = class_vectors, attributes, val_split
        if (self.root / CUB_DIR).is_dir():
            self.cub = self.root / CUB_DIR
        elif (self.root / "images.txt").is_file():
            self.cub = self.root
        else:
            raise UserError(f"missing {self.root / CUB_DIR}: {GET_IT}")

    # ---- tables ----------------------------------------------------------------------------
    def _table(self, rel: str) -> list[list[str]]:
        path = require(self.cub / rel, GET_IT)
        return [line.split(maxsplit=1) for line in read_lines(path)]

    @cached_property
    def class_folder(self) -> dict[str, str]:
        """class_id -> folder name ('1' -> '001.Black_footed_Albatross')."""
        return {cid: folder.strip() for cid, folder in self._table("classes.txt")}

    @cached_property
    def image_path(self) -> dict[str, str]:
        """image_id -> path relative to images/ ('001.Black_footed_Albatross/Black_Footed_..._0046_18.jpg')."""
        return {iid: rel.strip() for iid, rel in self._table("images.txt")}

    @cached_property
    def image_class(self) -> dict[str, str]:
        return {iid: cid.strip() for iid, cid in self._table("image_class_labels.txt")}

    @cached_property
    def split_of_image(self) -> dict[str, str]:
        """image_id -> train / val / test: PCME's class split, then its held-out list (or is_training_image)."""
        test_classes = pcme_test_classes()
        unknown = test_classes - set(self.class_folder.values())
        if unknown:
            raise UserError(f"{self.cub / 'classes.txt'} lacks PCME test classes, e.g. {sorted(unknown)[0]}")
        if self.val_split == "pcme":
            held_out = self.pcme_val_images
            in_val = {iid: self.image_path[iid] in held_out for iid in self.image_path}
        else:
            in_val = {iid: flag.strip() != "1" for iid, flag in self._table("train_test_split.txt")}
        out = {}
        for iid in self.image_path:
            if self.class_folder[self.image_class[iid]] in test_classes:
                out[iid] = "test"  # PCME tests on every image of the unseen classes, listed or not
            else:
                out[iid] = "val" if in_val.get(iid, False) else "train"
        return out

    @cached_property
    def pcme_val_images(self) -> set[str]:
        """The image paths of PCME's seen_test_images.txt ('001.Black_footed_Albatross/....jpg')."""
        for path in (self.cub.parent / PCME_VAL_LIST, self.cub / PCME_VAL_LIST, self.root / PCME_VAL_LIST):
            if path.is_file():
                break
        else:
            raise UserError(
                f"missing {self.cub.parent / PCME_VAL_LIST} (PCME's held-out images of the 150 seen classes): "
                f"run `pcmpipe download cub --root {self.cub.parent}` (it fetches the list) or download "
                f"{PCME_VAL_URL} into {self.cub.parent}, or pass val_split='train_test_split'"
            )
        listed = {line.strip() for line in read_lines(path) if line.strip()}
        unknown = listed - set(self.image_path.values())
        if unknown:
            raise UserError(f"{path} lists images that images.txt does not have, e.g. {sorted(unknown)[0]}")
        return listed

    def _ids(self, split: str) -> list[str]:
        return sorted((i for i, s in self.split_of_image.items() if s == split), key=int)

    @cached_property
    def attributes(self) -> dict[str, np.ndarray]:
        """image_id -> float32 [312] from image_attribute_labels.txt (see attribute_values).

        Only the first four fields are used: the real file has a few lines with an extra field.
        The 3.7M-line file is read by pyarrow; lines it cannot take (those extra fields) and any file
        it rejects go through the line-by-line parser, which names the offending line.
        """
        path = require(self.cub / "attributes" / "image_attribute_labels.txt", GET_IT)
        index = {iid: k for k, iid in enumerate(self.image_path)}
        table = np.zeros((len(index), NUM_ATTRIBUTES), dtype=np.float32)
        reading = self.attribute_reading
        try:
            odd_lines: list[str] = []
            img, attr, present, certainty = _read_attribute_columns(path, odd_lines)
            pos = np.full(int(max(map(int, index))) + 1, -1, dtype=np.int64)
            pos[[int(i) for i in index]] = list(index.values())
            ok = (img >= 0) & (img < len(pos)) & (attr >= 1) & (attr <= NUM_ATTRIBUTES)
            rows = np.where(ok, pos[np.clip(img, 0, len(pos) - 1)], -1)
            if not ok.all() or (rows < 0).any():
                raise ValueError("ids out of range")
            table[rows, attr - 1] = attribute_values(present, certainty, reading)
            _parse_attribute_lines(odd_lines, index, table, None, reading)
        except (ValueError, ImportError):  # anything odd: parse it all by hand, naming the bad line
            table[:] = 0
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
            _parse_attribute_lines(lines, index, table, path, reading)
        return {iid: table[k] for iid, k in index.items()}

    @cached_property
    def class_vector(self) -> dict[str, np.ndarray]:
        """class_id -> float32 [312]: mean of its images' A vectors, or the continuous percentages / 100."""
        if self.class_vectors == "continuous":
            path = require(self.cub / "attributes" / "class_attribute_labels_continuous.txt", GET_IT)
            rows = [np.array(line.split(), dtype=np.float32) / 100.0 for line in read_lines(path)]
            if len(rows) != len(self.class_folder) or any(r.shape != (NUM_ATTRIBUTES,) for r in rows):
                raise UserError(f"{path}: expected {len(self.class_folder)} lines of {NUM_ATTRIBUTES} numbers")
            return {cid: rows[int(cid) - 1] for cid in self.class_folder}
        sums: dict[str, np.ndarray] = {}
        counts: dict[str, int] = {}
        for iid, vec in self.attributes.items():
            cid = self.image_class[iid]
            sums[cid] = sums.get(cid, 0) + vec
            counts[cid] = counts.get(cid, 0) + 1
        return {cid: (sums[cid] / counts[cid]).astype(np.float32) for cid in sums}

    @cached_property
    def text_dir(self) -> Path:
        for base in (self.root, self.cub.parent):
            for rel in TEXT_DIRS:
                if (base / rel).is_dir():
                    return base / rel
        raise UserError(f"missing {self.root / 'text_c10'}: {GET_TEXT}")

    # ---- records ---------------------------------------------------------------------------
    def _records(self, modality: str, split: str) -> list[Record]:
        ids = self._ids(split)
        if modality == "I":
            recs = [
                Record(
                    id=i,
                    links={"image_id": i, "class_id": self.image_class[i]},
                    path=self.cub / "images" / self.image_path[i],
                )
                for i in ids
            ]
            return require_some_files(recs, f"{split} images", GET_IT)
        if modality == "A":
            return [
                Record(id=i, links={"image_id": i, "class_id": self.image_class[i]}, vector=self.attributes[i])
                for i in ids
            ]
        if modality == "T":
            return self._captions(ids)
        classes = sorted({self.image_class[i] for i in ids}, key=int)
        if modality == "C":
            return [Record(id=c, links={"class_id": c}, vector=self.class_vector[c]) for c in classes]
        return [Record(id=c, links={"class_id": c}, text=prompt(self.class_folder[c])) for c in classes]

    def _captions(self, ids: list[str]) -> list[Record]:
        recs = []
        for i in ids:
            rel = Path(self.image_path[i]).with_suffix(".txt")
            path = self.text_dir / rel
            if not path.is_file():
                raise UserError(f"missing caption file {path}: {GET_TEXT}")
            links = {"image_id": i, "class_id": self.image_class[i]}
            for n, caption in enumerate(read_lines(path)):
                cid = f"{i}#{n}"
                recs.append(Record(id=cid, links={"caption_id": cid, **links}, text=caption))
        return recs
