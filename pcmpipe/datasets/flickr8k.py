"""Flickr8k (images, text captions) and the Flickr Audio Caption Corpus (spoken captions).

On-disk layout, as the official archives unpack (docs/datasets.md):

    root/Flicker8k_Dataset/<image_id>.jpg          (sic: "Flicker")
    root/Flickr8k.token.txt                         "<image_id>.jpg#<n>\\t<caption>", n = 0..4
    root/Flickr_8k.{train,dev,test}Images.txt       one "<image_id>.jpg" a line (6000/1000/1000)
      (the text files may also sit in root/Flickr8k_text/)
    root/flickr_audio/wavs/<image_id>_<n>.wav
    root/flickr_audio/wav2capt.txt                  "<wav> <image_id>.jpg #<n>"
    root/flickr_audio/wav2spk.txt                   "<wav> <speaker>"

The real token file has 40,460 lines: 8,092 keys x 5, one of them (`2258277193_586949ec62.jpg.1`) an
image that exists in no split list. Captions of images outside every split list are skipped and the
reason is kept in `Flickr8k.skipped`. A key that appears twice keeps both captions: the later one gets the
id `<image_id>#<n>.<k>` and is noted in `Flickr8k.renamed` (docs/datasets.md).
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pcmpipe.datasets.base import Dataset, Record, read_lines, require, require_some_files
from pcmpipe.errors import UserError

IMAGE_DIR = "Flicker8k_Dataset"
IMAGE_DIR_ALIASES = ("Flickr8k_Dataset",)  # some mirrors fix the spelling
TEXT_SUBDIR = "Flickr8k_text"
TOKEN_FILE = "Flickr8k.token.txt"
SPLIT_FILES = {
    "train": "Flickr_8k.trainImages.txt",
    "val": "Flickr_8k.devImages.txt",
    "test": "Flickr_8k.testImages.txt",
}
AUDIO_DIR = "flickr_audio"
GET_IT = "run `pcmpipe download flickr8k --root ROOT` or see docs/datasets.md"


def _stem(name: str) -> str:
    """'1000268201_693b08cb0e.jpg' -> '1000268201_693b08cb0e' (the image id)."""
    return name[:-4] if name.lower().endswith(".jpg") else name


class Flickr8k(Dataset):
    """Reader of Flickr8k + Flickr Audio. Modalities I (image files), T (captions), S (wav files)."""

    name = "flickr8k"
    modalities = ("I", "T", "S")

    def __init__(self, root: Path | str) -> None:
        super().__init__(root)
        if not self.root.is_dir():
            raise UserError(f"missing dataset root {self.root}: {GET_IT}")

    # ---- file locations -------------------------------------------------------------------
    def _text_file(self, name: str) -> Path:
        """A Flickr8k text file at the top of root or under Flickr8k_text/."""
        for candidate in (self.root / name, self.root / TEXT_SUBDIR / name):
            if candidate.is_file():
                return candidate
        raise UserError(f"missing {self.root / name} (or {self.root / TEXT_SUBDIR / name}): {GET_IT}")

    @cached_property
    def split_of_image(self) -> dict[str, str]:
        """image_id -> split, from the three official lists (dev -> val)."""
        out: dict[str, str] = {}
        for split, fname in SPLIT_FILES.items():
            for line in read_lines(self._text_file(fname)):
                image_id = _stem(line.split()[0])
                if image_id in out and out[image_id] != split:
                    raise UserError(f"image {image_id} is listed in two split files ({out[image_id]}, {split})")
                out[image_id] = split
        return out

    @cached_property
    def captions(self) -> dict[str, tuple[str, str]]:
        """caption_id -> (image_id, caption) for every caption whose image is in a split list."""
        out: dict[str, tuple[str, str]] = {}
        repeats: dict[str, int] = {}  # caption id -> how many later lines repeated its key
        path = self._text_file(TOKEN_FILE)
        for lineno, line in enumerate(read_lines(path), 1):
            key, sep, caption = line.partition("\t")
            name, hash_, n = key.rpartition("#")
            if not sep or not hash_ or not n.isdigit():
                raise UserError(f"{path}:{lineno}: expected '<image>.jpg#<n><TAB><caption>', got {line[:60]!r}")
            image_id = _stem(name)
            if image_id not in self.split_of_image:
                self.skipped[key] = "image is in no split list (no such image in Flickr8k)"
                continue
            cid = f"{image_id}#{n}"
            if cid in out:
                # a repeated key is a numbering slip in the file, not a correction: both captions describe the
                # image, so both are kept; the later one under `<image>#<n>.<k>`, which no real key can be
                k = repeats[cid] = repeats.get(cid, 0) + 1
                self.renamed[f"{path.name}:{lineno}"] = f"repeated key {key}: kept as caption {cid}.{k}"
                cid = f"{cid}.{k}"
            out[cid] = (image_id, caption.strip())
        return out

    # ---- records ---------------------------------------------------------------------------
    def _records(self, modality: str, split: str) -> list[Record]:
        if modality == "I":
            return self._images(split)
        if modality == "T":
            return [
                Record(id=cid, links={"caption_id": cid, "image_id": img}, text=text)
                for cid, (img, text) in self.captions.items()
                if self.split_of_image[img] == split
            ]
        return self._speech(split)

    def _images(self, split: str) -> list[Record]:
        image_dir = next((self.root / d for d in IMAGE_DIR_ALIASES if (self.root / d).is_dir()), self.root / IMAGE_DIR)
        require(image_dir, f"unpack Flickr8k_Dataset.zip into {self.root} ({GET_IT})")
        ids = sorted(i for i, s in self.split_of_image.items() if s == split)
        recs = [Record(id=i, links={"image_id": i}, path=image_dir / f"{i}.jpg") for i in ids]
        return require_some_files(recs, f"{split} images", GET_IT)

    def _speech(self, split: str) -> list[Record]:
        audio = self.root / AUDIO_DIR
        how = f"unpack flickr_audio.tar.gz into {self.root} ({GET_IT})"
        index = require(audio / "wav2capt.txt", how)
        wav_dir = require(audio / "wavs", how)
        recs: list[Record] = []
        for lineno, line in enumerate(read_lines(index), 1):
            parts = line.split()
            if len(parts) != 3 or not parts[2].startswith("#") or not parts[2][1:].isdigit():
                raise UserError(f"{index}:{lineno}: expected '<wav> <image>.jpg #<n>', got {line[:60]!r}")
            wav, image_id, n = parts[0], _stem(parts[1]), parts[2][1:]
            img_split = self.split_of_image.get(image_id)
            if img_split is None:
                self.skipped[wav] = "image is in no split list"
                continue
            if img_split == split:
                cid = f"{image_id}#{n}"
                recs.append(Record(id=cid, links={"caption_id": cid, "image_id": image_id}, path=wav_dir / wav))
        return require_some_files(recs, f"{split} wav files", how)

    @cached_property
    def speakers(self) -> dict[str, str]:
        """wav file name -> speaker id, from flickr_audio/wav2spk.txt."""
        path = require(self.root / AUDIO_DIR / "wav2spk.txt", f"unpack flickr_audio.tar.gz into {self.root}")
        return dict(line.split()[:2] for line in read_lines(path))
