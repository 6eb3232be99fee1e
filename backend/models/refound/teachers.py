"""ReFound's teachers: region descriptions, language and vision targets, and the visual codebook.

ReFound (Xiao et al., "ReFound: Crafting a Foundation Model for Urban Region Understanding upon Language and
Visual Foundation Models", KDD 2024) distils two frozen foundation models into its encoder and predicts discrete
visual tokens of masked image patches. Offline, RegionLens uses the packaged teachers:

* **Language teacher**: the region is described by a deterministic template (:func:`region_description`),
  e.g. ``"An urban area with 12 places: 4 cafes, 3 schools and 5 others. Among them: Blue Bottle Coffee,
  Mission High School."``, encoded by all-MiniLM-L6-v2 (384-d, L2-normalised) through CaLLiPer's on-disk
  text cache (:func:`text_targets`). Categories are listed by count (ties alphabetically), names by how often
  they occur (ties alphabetically), so the description depends only on the region's POIs, not their order.
* **Vision teacher**: the frozen EfficientNet-Lite0 (:func:`vision_targets`). Chips (first three bands; one or
  two bands repeated) are resized to ``16 * P`` pixels by default (128 for the small preset, 256 for the full
  one) and ImageNet-normalised. The *global* target is the mean of the final 1280-channel map over the chip's
  valid pixels (as :func:`backend.encoders.image.image_features`). The *patch* targets are the
  output of the last stride-16 block (block 10 of EfficientNet-Lite0, end of stage 5, 112 channels), which is
  exactly P x P at the default input side, so map cell (r, c) is patch ``r * P + c``; a larger ``input_size``
  (a multiple of ``16 * P``) is average-pooled to P x P. Patch features are not masked: pixels outside a
  region are already 0 in the chips, which is also what the student sees. They are stored as float16
  (S = 4000, P = 16: about 230 MB). Results are cached on disk, one ``.npz`` per (encoder, P, input side,
  chip and mask contents), written atomically.
* **Visual codebook**: spherical k-means over patch features (:func:`visual_codebook`): rows are L2-normalised
  (no per-channel statistics to keep, and the scale of a feature, which mostly follows image contrast, does
  not split clusters), seeded k-means++ on at most 20,000 rows then Lloyd steps in numpy (scikit-learn's
  k-means++ took 45 s or more for 100,000 x 112 rows and k = 256 on two busy cores, this about 15 s; it is
  deterministic for a seed), centroids are unit vectors,
  and :func:`visual_tokens` assigns each patch the centroid of highest cosine similarity (the nearest
  centroid between unit vectors).

An injected ``loader`` (tests) may return either an EfficientNet-style module (``_conv_stem``, ``_bn0``,
``_blocks``, ``_conv_head``, ``_bn1``, ``_swish``) or any object with ``feature_maps(x) -> (patch_map,
final_map)``, both N x C x h x w tensors.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from backend.encoders.image import DEFAULT_IMAGE_ENCODER
from backend.encoders.text import DEFAULT_TEXT_ENCODER
from backend.errors import ConfigError, InputError
from backend.progress import Progress

__all__ = [
    "DESCRIPTION_PROMPT",
    "VisionTargets",
    "generate_descriptions",
    "region_description",
    "text_targets",
    "vision_targets",
    "visual_codebook",
    "visual_tokens",
]

#: Stride of the patch feature map; bumped version tag invalidates old cache files.
_PATCH_STRIDE = 16
_CACHE_VERSION = "refound-vision-v1"
_TOKEN_CHUNK = 65_536
#: Rows k-means++ seeds from, and the fraction of changed assignments that ends the Lloyd steps.
_SEED_ROWS = 20_000
_KMEANS_TOL = 1e-3


# ------------------------------------------------------------------------------------------ descriptions
def _label(category: Any) -> str | None:
    """Readable category label, or None for a missing or blank category."""
    if category is None or (isinstance(category, float) and np.isnan(category)):
        return None
    label = " ".join(str(category).replace("_", " ").split())
    return label or None


def _plural(label: str, count: int) -> str:
    """``"cafe"`` -> ``"cafes"``; ``"place of worship"`` -> ``"places of worship"``; unchanged for one."""
    if count == 1:
        return label
    head, sep, tail = label.partition(" of ")
    low = head.lower()
    if low.endswith(("s", "x", "z", "ch", "sh")):
        head += "es"
    elif len(low) > 1 and low.endswith("y") and low[-2] not in "aeiou":
        head = head[:-1] + "ies"
    else:
        head += "s"
    return head + sep + tail


def _join(parts: Sequence[str]) -> str:
    """``["a", "b", "c"]`` -> ``"a, b and c"``."""
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def region_description(
    categories: Sequence[Any],
    names: Sequence[str | None] | None = None,
    max_categories: int = 8,
    max_names: int = 5,
) -> str:
    """Templated description of a region from its POIs (the language teacher's input).

    Args:
        categories: Category of each POI (underscores become spaces; None or blank counts as an other place).
        names: Name of each POI (None or blank for none), aligned with ``categories``, or None.
        max_categories: Most categories listed by count; the remaining POIs are counted as "others".
        max_names: Most distinct names listed.

    Returns:
        For example ``"An urban area with 12 places: 4 cafes, 3 schools and 5 others. Among them: Blue Bottle
        Coffee, Mission High School."``; ``"An urban area with no recorded places."`` without POIs.

    Raises:
        ValueError: If ``names`` is not aligned with ``categories``.
    """
    n = len(categories)
    if names is not None and len(names) != n:
        raise ValueError(f"region_description: {n} categories but {len(names)} names.")
    if n == 0:
        return "An urban area with no recorded places."
    counts = Counter(label for label in map(_label, categories) if label is not None)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: max(int(max_categories), 0)]
    parts = [f"{c} {_plural(label, c)}" for label, c in ranked]
    rest = n - sum(c for _, c in ranked)
    text = f"An urban area with {n} {'place' if n == 1 else 'places'}"
    if parts:
        if rest:
            parts.append(f"{rest} {'other' if rest == 1 else 'others'}")
        text += ": " + _join(parts)
    text += "."
    if names is not None and max_names > 0:
        cleaned = (" ".join(v.split()) for v in names if isinstance(v, str))
        named = Counter(v for v in cleaned if v)
        top = [v for v, _ in sorted(named.items(), key=lambda kv: (-kv[1], kv[0]))[: int(max_names)]]
        if top:
            text += " Among them: " + ", ".join(top) + "."
    return text


# --------------------------------------------------------------------------------- generated descriptions
#: Prompt of :func:`generate_descriptions`; ``{facts}`` is the templated description.
DESCRIPTION_PROMPT = (
    "Facts about an urban area: {facts}\n"
    "Write one sentence that describes the character of this area for an urban planner:\n"
)


def generate_descriptions(
    templates: Sequence[str],
    model: str,
    device: str = "cpu",
    max_new_tokens: int = 48,
    batch_size: int = 8,
    progress: Progress | None = None,
) -> list[str]:
    """Rewrite templated descriptions with a local causal language model (greedy decoding, deterministic).

    Args:
        templates: Descriptions from :func:`region_description`; each distinct one is generated once.
        model: A local folder of a Hugging Face causal language model, or a hub name already in the local
            Hugging Face cache (nothing is downloaded).
        device: Torch device of the model.
        max_new_tokens: Length limit of each generated description.
        batch_size: Prompts per generation call.
        progress: Progress (one update per batch; cancellation checked).

    Returns:
        One description per template; the template itself where the model generated nothing.

    Raises:
        ConfigError: If the model cannot be loaded from disk.
        Cancelled: If cancelled.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    progress = progress or Progress()
    source = str(Path(model).expanduser()) if Path(model).expanduser().is_dir() else model
    def load() -> tuple[Any, Any]:
        # local_files_only: nothing is downloaded, so there is no remote revision to pin
        tok = AutoTokenizer.from_pretrained(source, local_files_only=True)  # nosec B615
        lm = AutoModelForCausalLM.from_pretrained(source, local_files_only=True)  # nosec B615
        return tok, lm.to(device).eval()

    try:
        tok, lm = progress.wait(load, f"loading {model}")
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"refound: the description model '{model}' could not be loaded from disk ({exc}); give a local folder "
            "of a causal language model or a name already in the Hugging Face cache (nothing is downloaded)."
        ) from exc
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    unique = list(dict.fromkeys(str(t) for t in templates))
    out: dict[str, str] = {}
    for start in range(0, len(unique), batch_size):
        progress.update(start / max(len(unique), 1), f"describing regions {start}/{len(unique)}")
        chunk = unique[start:start + batch_size]
        enc = tok([DESCRIPTION_PROMPT.format(facts=t) for t in chunk], return_tensors="pt", padding=True)
        enc = {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
        with torch.no_grad(), progress.watch(lm):
            ids = lm.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
        for template, row in zip(chunk, ids[:, enc["input_ids"].shape[1]:], strict=True):
            text = " ".join(tok.decode(row, skip_special_tokens=True).split())
            out[template] = text or template
    progress.update(1.0, f"{len(unique):,} region descriptions generated")
    return [out[str(t)] for t in templates]


# ------------------------------------------------------------------------------------------ language teacher
def text_targets(
    descriptions: Sequence[str],
    encoder: str = DEFAULT_TEXT_ENCODER,
    cache_dir: str | Path | None = None,
    device: str = "cpu",
    progress: Progress | None = None,
    loader: Callable[[str, str], Any] | None = None,
) -> np.ndarray:
    """Sentence embeddings of the region descriptions (language-teacher targets).

    Args:
        descriptions: One description per sample (see :func:`region_description`).
        encoder: Sentence encoder (registry name or local sentence-transformers folder).
        cache_dir: CaLLiPer's text cache folder (None: no cache).
        device: Torch device of the encoder.
        progress: Progress (cancellation checked).
        loader: ``loader(name, device) -> model`` with ``encode``; default: the encoder registry.

    Returns:
        S x D float32, rows L2-normalised (D = 384 for all-MiniLM-L6-v2).

    Raises:
        ConfigError: If the encoder is unknown.
        Cancelled: If cancelled.
    """
    from backend.encoders.text import encode_texts

    if len(descriptions) == 0:
        from backend.encoders.registry import ENCODERS

        spec = ENCODERS.get(encoder)
        return np.zeros((0, spec.output_dim if spec is not None else 0), dtype=np.float32)
    enc = encode_texts([str(d) for d in descriptions], encoder, cache_dir, device, progress=progress, loader=loader)
    vecs = enc.vectors[enc.index].astype(np.float32)
    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
    return (vecs / np.maximum(norms, 1e-12)).astype(np.float32)


# ------------------------------------------------------------------------------------------ vision teacher
@dataclass
class VisionTargets:
    """Vision-teacher targets of S samples.

    Attributes:
        global_: S x C float32 global features (mean of the final map over valid pixels; C = 1280).
        patches: S x P*P x D float16 patch features (row-major from the top-left; D = 112).
        valid: S bool, whether the chip has any valid pixel (False: ``global_`` is the plain mean, a filler).
    """

    global_: np.ndarray
    patches: np.ndarray
    valid: np.ndarray


def _cache_key(encoder: str, patch_grid: int, side: int, chips: np.ndarray, masks: np.ndarray | None,
               progress: Progress | None = None) -> str:
    from backend.encoders.cache import array_key, encoder_id

    header = f"{_CACHE_VERSION}|{encoder_id(encoder)}|{patch_grid}|{side}|{chips.shape}|{chips.dtype}"
    parts = [chips] if masks is None else [chips, b"|masks", np.asarray(masks, dtype=bool)]
    return array_key(header, parts, progress)


def _feature_maps(model: Any, x: Any) -> tuple[Any, Any]:
    """``(patch_map, final_map)``: the last stride-16 block's output and the final 1280-channel map."""
    if hasattr(model, "feature_maps"):
        return model.feature_maps(x)
    target = x.shape[-1] // _PATCH_STRIDE
    h = model._swish(model._bn0(model._conv_stem(x)))
    mid = None
    rate = model._global_params.drop_connect_rate
    for idx, block in enumerate(model._blocks):
        h = block(h, drop_connect_rate=rate * float(idx) / len(model._blocks) if rate else rate)
        if h.shape[-1] == target:
            mid = h
    if mid is None:
        raise ValueError(f"refound: the image encoder has no stride-{_PATCH_STRIDE} block for input {x.shape[-1]}.")
    return mid, model._swish(model._bn1(model._conv_head(h)))


def _load_cached(path: Path) -> VisionTargets | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            return VisionTargets(global_=z["global_"].astype(np.float32), patches=z["patches"].astype(np.float16),
                                 valid=z["valid"].astype(bool))
    except (OSError, ValueError, KeyError):
        return None  # unreadable: recompute and overwrite


def vision_targets(
    chips: np.ndarray,
    masks: np.ndarray | None,
    patch_grid: int,
    encoder: str = DEFAULT_IMAGE_ENCODER,
    cache_dir: str | Path | None = None,
    device: str = "cpu",
    batch_size: int = 32,
    progress: Progress | None = None,
    loader: Callable[[str, str], Any] | None = None,
    input_size: int | None = None,
) -> VisionTargets:
    """Frozen vision-teacher features of the chips: one global vector and P x P patch vectors each.

    Args:
        chips: S x B x H x W chips in [0, 1] (first three bands; one or two bands are repeated to three).
        masks: S x H x W valid-pixel masks, or None (every pixel valid).
        patch_grid: P, patches per side.
        encoder: Registered image encoder (EfficientNet-Lite0).
        cache_dir: Folder of the feature cache (None: no cache).
        device: Torch device of the encoder.
        batch_size: Chips per forward pass.
        progress: Progress (one update per batch; cancellation checked).
        loader: ``loader(name, device) -> model``; default: the encoder registry.
        input_size: Side the chips are resized to, a multiple of ``16 * P`` (default ``16 * P``).

    Returns:
        The :class:`VisionTargets`.

    Raises:
        ValueError: If the shapes, ``patch_grid`` or ``input_size`` are invalid.
        ConfigError: If the encoder is not a registered image encoder.
        Cancelled: If cancelled.
    """
    import torch
    import torch.nn.functional as F  # noqa: N812

    from backend.encoders import image as image_encoders
    from backend.encoders.cache import store
    from backend.encoders.image import check_image_encoder

    chips = np.asarray(chips, dtype=np.float32)
    if chips.ndim != 4 or chips.shape[1] < 1:
        raise ValueError(f"refound: chips must be S x B x H x W with B >= 1, got {chips.shape}.")
    if masks is not None:
        masks = np.asarray(masks, dtype=bool)
        if masks.shape != (chips.shape[0], *chips.shape[2:]):
            raise ValueError(f"refound: masks {masks.shape} do not match chips {chips.shape}.")
    p = int(patch_grid)
    if p < 1:
        raise ValueError(f"refound: patch_grid must be at least 1, got {patch_grid}.")
    side = int(input_size) if input_size is not None else _PATCH_STRIDE * p
    if side < _PATCH_STRIDE * p or side % (_PATCH_STRIDE * p):
        raise ValueError(f"refound: input_size {side} must be a multiple of 16 * patch_grid = {_PATCH_STRIDE * p}.")
    if loader is None:
        check_image_encoder(encoder, "refound")
    n = len(chips)
    valid = masks.reshape(n, -1).any(axis=1) if masks is not None else np.ones(n, dtype=bool)
    path = None
    progress = progress or Progress()
    if cache_dir is not None:
        path = Path(cache_dir) / f"refound-{encoder}-{_cache_key(encoder, p, side, chips, masks, progress)}.npz"
        if path.is_file() and (cached := _load_cached(path)) is not None:
            return cached
    progress.update(0.0, f"vision teacher on {n} chips")
    load = loader or image_encoders.load_image_encoder
    model = progress.wait(lambda: load(encoder, device), f"loading {encoder}")
    mean = torch.tensor(image_encoders.IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(image_encoders.IMAGENET_STD, device=device).view(1, 3, 1, 1)
    globals_: list[np.ndarray] = []
    patches: list[np.ndarray] = []
    with torch.no_grad(), progress.watch(model):
        for start in range(0, n, batch_size):
            progress.update(start / max(n, 1), f"vision teacher {start}/{n}")
            x = torch.from_numpy(np.nan_to_num(chips[start:start + batch_size])).to(device)
            x = x[:, :3] if x.shape[1] >= 3 else x[:, [i % x.shape[1] for i in range(3)]]
            if x.shape[-2:] != (side, side):
                shrink = min(x.shape[-2:]) > side
                x = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False, antialias=shrink)
            mid, final = _feature_maps(model, (x - mean) / std)
            mid = F.adaptive_avg_pool2d(mid, p) if mid.shape[-2:] != (p, p) else mid
            patches.append(mid.flatten(2).transpose(1, 2).cpu().numpy().astype(np.float16))
            plain = final.mean(dim=(2, 3))
            if masks is None:
                pooled = plain
            else:
                m = torch.from_numpy(masks[start:start + batch_size].astype(np.float32)).to(device)
                w = F.adaptive_avg_pool2d(m[:, None], final.shape[-2:])
                total = w.sum(dim=(2, 3))
                weighted = (final * w).sum(dim=(2, 3)) / total.clamp_min(1e-8)
                pooled = torch.where(total > 1e-8, weighted, plain)
            globals_.append(pooled.float().cpu().numpy())
    if n:
        out = VisionTargets(global_=np.concatenate(globals_).astype(np.float32), patches=np.concatenate(patches),
                            valid=valid)
    else:
        out = VisionTargets(global_=np.zeros((0, 0), np.float32), patches=np.zeros((0, p * p, 0), np.float16),
                            valid=valid)
    progress.update(1.0, f"vision teacher on {n} chips")
    if path is not None and n:
        store(path, lambda fh: np.savez(fh, global_=out.global_, patches=out.patches, valid=out.valid), progress,
              "refound: vision feature")
    return out


# ------------------------------------------------------------------------------------------ visual tokens
def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.nan_to_num(np.asarray(x, dtype=np.float32))
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _assign(x: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest unit centre of every unit row: ``(labels, cosine similarity)``."""
    labels = np.empty(len(x), dtype=np.int64)
    sims = np.empty(len(x), dtype=np.float32)
    for start in range(0, len(x), _TOKEN_CHUNK):
        s = x[start:start + _TOKEN_CHUNK] @ centres.T
        labels[start:start + _TOKEN_CHUNK] = s.argmax(axis=1)
        sims[start:start + _TOKEN_CHUNK] = s[np.arange(len(s)), labels[start:start + _TOKEN_CHUNK]]
    return labels, sims


def _spherical_kmeans(x: np.ndarray, k: int, rng: np.random.Generator, max_iter: int) -> np.ndarray:
    """k-means on unit rows with cosine similarity: k-means++ seeding (on at most :data:`_SEED_ROWS` rows), then
    Lloyd steps until at most :data:`_KMEANS_TOL` of the rows change cluster."""
    n = len(x)
    seed_rows = x[np.sort(rng.choice(n, size=_SEED_ROWS, replace=False))] if n > _SEED_ROWS else x
    centres = np.empty((k, x.shape[1]), dtype=np.float32)
    pick = int(rng.integers(len(seed_rows)))
    centres[0] = seed_rows[pick]
    dist = np.maximum(1.0 - seed_rows @ seed_rows[pick], 0.0).astype(np.float64)  # half the squared distance
    for j in range(1, k):
        total = dist.sum()
        pick = int(rng.choice(len(seed_rows), p=dist / total)) if total > 0 else int(rng.integers(len(seed_rows)))
        centres[j] = seed_rows[pick]
        dist = np.minimum(dist, np.maximum(1.0 - seed_rows @ seed_rows[pick], 0.0))
    labels = np.full(n, -1, dtype=np.int64)
    for _ in range(max_iter):
        new, sims = _assign(x, centres)
        changed = int((new != labels).sum())
        labels = new
        if changed <= _KMEANS_TOL * n:
            break
        counts = np.bincount(labels, minlength=k)
        order = np.argsort(labels, kind="stable")
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        sums = np.zeros_like(centres)
        used = counts > 0
        sums[used] = np.add.reduceat(x[order], starts[used], axis=0)
        if not used.all():  # empty clusters restart at the rows worst served by their centre
            worst = np.argsort(sims, kind="stable")[: int((~used).sum())]
            sums[~used] = x[worst]
        centres = _unit_rows(sums)
    return centres


def visual_codebook(patches: np.ndarray, k: int, seed: int, max_fit: int = 100_000, max_iter: int = 30) -> np.ndarray:
    """Spherical k-means codebook of (L2-normalised) patch features, the targets of masked image modelling.

    Args:
        patches: M x D patch features (any float dtype; S x N x D is flattened).
        k: Codebook size; it shrinks to the number of distinct normalised rows when there are fewer.
        seed: Seed of the row sample and of the k-means++ seeding (same inputs and seed: same codebook).
        max_fit: Most rows used for the fit (a seeded random sample).
        max_iter: Most Lloyd iterations (it stops earlier when fewer than 0.1% of the rows change cluster).

    Returns:
        k' x D float32 unit-length centroids (k' <= k).

    Raises:
        InputError: If there are no patch features.
        ValueError: If ``k`` is smaller than 1.
    """
    if k < 1:
        raise ValueError(f"refound: the codebook size must be at least 1, got {k}.")
    x = np.asarray(patches)
    x = x.reshape(-1, x.shape[-1]) if x.ndim != 2 else x
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise InputError("refound: no image patch features to build the visual codebook from.")
    rng = np.random.default_rng(seed)
    if x.shape[0] > max_fit:
        x = x[np.sort(rng.choice(x.shape[0], size=int(max_fit), replace=False))]
    x = _unit_rows(x)
    distinct = np.unique(x, axis=0)
    if len(distinct) <= k:
        return distinct.astype(np.float32)
    return _spherical_kmeans(x, int(k), rng, int(max_iter)).astype(np.float32)


def visual_tokens(patches: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """Index of the nearest codebook centroid (highest cosine similarity) of every patch.

    Args:
        patches: S x N x D patch features (or M x D).
        codebook: K x D centroids (normalised here as well).

    Returns:
        S x N (or M) int64 token ids in 0..K-1.

    Raises:
        ValueError: If the feature widths differ.
    """
    x = np.asarray(patches)
    c = _unit_rows(codebook)
    if x.shape[-1] != c.shape[1]:
        raise ValueError(f"refound: patch features have {x.shape[-1]} channels, the codebook {c.shape[1]}.")
    flat = x.reshape(-1, x.shape[-1])
    out = np.empty(len(flat), dtype=np.int64)
    for start in range(0, len(flat), _TOKEN_CHUNK):
        out[start:start + _TOKEN_CHUNK] = np.argmax(_unit_rows(flat[start:start + _TOKEN_CHUNK]) @ c.T, axis=1)
    return out.reshape(x.shape[:-1])
