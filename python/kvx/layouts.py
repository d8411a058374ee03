"""Named KV-cache layouts: how engines and LMCache lay out paged and dense KV caches.

Every layout is described by the *axes* of one tensor, named with this vocabulary:

``layer``
    the model layer (present only when one tensor holds all layers)
``kv``
    K (0) or V (1); absent where K and V live in separate tensors or there is one plane (MLA)
``block``, ``token``
    block index and offset within a block of a paged cache (``token`` absent: block size 1);
    on the dense side ``token`` is the dense token index
``head``, ``dim``
    KV head and element within the head vector; ``hd`` is both flattened (``H * D``, LMCache's
    dense formats)

and a *container*: how the engine hands the tensors over (one tensor, a list per layer, per-layer
``(K, V)`` tuples, or separate K and V lists). :func:`paged_layout` and :func:`dense_format` turn a
name (or an LMCache ``EngineKVFormat`` number) into that description; ``kvx.transfer`` reads the
actual shapes and strides from the tensors, so padded or sliced views work unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ._errors import InvalidArgumentError

# How the caller passes a paged cache.
SINGLE = "single tensor"  # one tensor with a `layer` axis
LAYER_LIST = "list per layer"  # [tensor for layer 0, tensor for layer 1, ...]
KV_TUPLES = "(K, V) per layer"  # [(K0, V0), (K1, V1), ...]
KV_LISTS = "K list, V list"  # ([K0, K1, ...], [V0, V1, ...])


@dataclass(frozen=True)
class PagedLayout:
    """A paged KV-cache layout: the axes of each tensor and how the tensors are grouped."""

    name: str
    axes: tuple[str, ...]
    container: str
    description: str

    @property
    def num_kv_fixed(self) -> int | None:
        """1 for single-plane layouts (MLA), 2 for separate K/V tensors, None if a `kv` axis
        says."""
        if self.container in (KV_TUPLES, KV_LISTS):
            return 2
        return None if "kv" in self.axes else 1


@dataclass(frozen=True)
class DenseFormat:
    """A dense (contiguous-side) KV buffer format: the axes of the one buffer tensor."""

    name: str
    axes: tuple[str, ...]
    description: str


_PAGED = [
    PagedLayout(
        "vllm_nhd",
        ("kv", "block", "token", "head", "dim"),
        LAYER_LIST,
        "vLLM flash-attn, per layer [2, NB, BS, H, D]",
    ),
    PagedLayout(
        "vllm_hnd",
        ("kv", "block", "head", "token", "dim"),
        LAYER_LIST,
        "vLLM flash-attn HND, per layer [2, NB, H, BS, D]",
    ),
    PagedLayout(
        "flashinfer_nhd",
        ("block", "kv", "token", "head", "dim"),
        LAYER_LIST,
        "flashinfer, per layer [NB, 2, BS, H, D]",
    ),
    PagedLayout(
        "flashinfer_hnd",
        ("block", "kv", "head", "token", "dim"),
        LAYER_LIST,
        "flashinfer HND, per layer [NB, 2, H, BS, D]",
    ),
    PagedLayout(
        "mla",
        ("block", "token", "dim"),
        LAYER_LIST,
        "vLLM MLA, per layer [NB, BS, D] (one latent plane)",
    ),
    PagedLayout(
        "sglang_mha",
        ("block", "head", "dim"),
        KV_LISTS,
        "SGLang MHA token pool: K list and V list, per layer [S, H, D]",
    ),
    PagedLayout(
        "sglang_mla",
        ("block", "head", "dim"),
        LAYER_LIST,
        "SGLang MLA token pool, per layer [S, 1, D]",
    ),
    PagedLayout(
        "kv_tuples",
        ("block", "token", "head", "dim"),
        KV_TUPLES,
        "per-layer (K, V) tuples, each [NB, BS, H, D]",
    ),
    PagedLayout(
        "kv_lists",
        ("block", "token", "head", "dim"),
        KV_LISTS,
        "K list and V list, per layer [NB, BS, H, D]",
    ),
    PagedLayout(
        "cross_layer",
        ("block", "layer", "kv", "token", "head", "dim"),
        SINGLE,
        "cross-layer pool [NB, L, 2, BS, H, D]",
    ),
    PagedLayout(
        "cross_layer_hnd",
        ("block", "layer", "kv", "head", "token", "dim"),
        SINGLE,
        "cross-layer pool HND [NB, L, 2, H, BS, D]",
    ),
    PagedLayout(
        "fused_nhd",
        ("block", "token", "head", "kv", "dim"),
        LAYER_LIST,
        "K/V fused per head, per layer [NB, BS, H, 2, D]",
    ),
    PagedLayout(
        "fused_hnd",
        ("block", "head", "token", "kv", "dim"),
        LAYER_LIST,
        "K/V fused per head HND, per layer [NB, H, BS, 2, D]",
    ),
]
PAGED_LAYOUTS: dict[str, PagedLayout] = {layout.name: layout for layout in _PAGED}

_DENSE = [
    DenseFormat("KV_2LTD", ("kv", "layer", "token", "hd"), "LMCache [2, L, T, H*D]"),
    DenseFormat("KV_T2D", ("token", "kv", "hd"), "LMCache single layer [T, 2, H*D]"),
    DenseFormat("KV_2TD", ("kv", "token", "hd"), "LMCache single layer [2, T, H*D]"),
    DenseFormat("MLA_1LTD", ("kv", "layer", "token", "hd"), "LMCache MLA [1, L, T, D]"),
]
DENSE_FORMATS: dict[str, DenseFormat] = {fmt.name: fmt for fmt in _DENSE}

# LMCache's EngineKVFormat numbers -> presets (formats 12 to 15 are not supported yet).
ENGINE_KV_FORMATS: dict[int, str] = {
    0: "cross_layer",  # NB_NL_TWO_BS_NH_HS
    1: "vllm_nhd",  # NL_X_TWO_NB_BS_NH_HS
    2: "flashinfer_nhd",  # NL_X_NB_TWO_BS_NH_HS
    3: "mla",  # NL_X_NB_BS_HS
    4: "sglang_mha",  # TWO_X_NL_X_NBBS_NH_HS
    5: "sglang_mla",  # NL_X_NBBS_ONE_HS
    6: "vllm_hnd",  # NL_X_TWO_NB_NH_BS_HS
    7: "flashinfer_hnd",  # NL_X_NB_TWO_NH_BS_HS
    8: "cross_layer_hnd",  # NB_NL_TWO_NH_BS_HS
    9: "kv_lists",  # TWO_X_NL_X_NB_BS_NH_HS
    10: "fused_hnd",  # NL_X_NB_NH_BS_TWO_HS
    11: "fused_nhd",  # NL_X_NB_BS_NH_TWO_HS
    16: "kv_tuples",  # NL_X_TWO_X_NB_BS_NH_HS
}


def paged_layout(layout: str | int | PagedLayout) -> PagedLayout:
    """Resolves a preset name or an LMCache ``EngineKVFormat`` number."""
    if isinstance(layout, PagedLayout):
        return layout
    if isinstance(layout, int) and not isinstance(layout, bool):
        try:
            return PAGED_LAYOUTS[ENGINE_KV_FORMATS[int(layout)]]
        except KeyError:
            raise InvalidArgumentError(
                f"layout: EngineKVFormat {int(layout)} is not supported; expected one of "
                f"{sorted(ENGINE_KV_FORMATS)}"
            ) from None
    try:
        return PAGED_LAYOUTS[str(layout)]
    except KeyError:
        raise InvalidArgumentError(
            f"layout: expected one of {sorted(PAGED_LAYOUTS)}, got {layout!r}"
        ) from None


def dense_format(fmt: str | DenseFormat) -> DenseFormat:
    """Resolves a dense format name (LMCache's ``KV_2LTD``, ``KV_T2D``, ``KV_2TD``,
    ``MLA_1LTD``)."""
    if isinstance(fmt, DenseFormat):
        return fmt
    try:
        return DENSE_FORMATS[str(fmt)]
    except KeyError:
        raise InvalidArgumentError(
            f"dense_format: expected one of {sorted(DENSE_FORMATS)}, got {fmt!r}"
        ) from None


def flatten_paged(layout: PagedLayout, paged: Any, is_tensor: Any) -> tuple[list[Any], int]:
    """The engine's tensors as a flat list and the number of layers.

    The list is per layer, or per (kv, layer) for separate K/V tensors (K tensors first), or a
    single tensor with a ``layer`` axis. A stacked tensor may stand for a per-layer list.
    """
    if layout.container == SINGLE:
        if not is_tensor(paged):
            raise InvalidArgumentError(
                f"paged: layout {layout.name} expects one tensor, got {type(paged).__name__}"
            )
        return [paged], int(paged.shape[layout.axes.index("layer")])
    if layout.container == LAYER_LIST:
        layers = list(paged) if (is_tensor(paged) or _is_sequence(paged)) else None
        if not layers:
            raise InvalidArgumentError(
                f"paged: layout {layout.name} expects a non-empty list of per-layer tensors"
            )
        return layers, len(layers)
    if layout.container == KV_TUPLES:
        if (
            not _is_sequence(paged)
            or not paged
            or not all(_is_sequence(kv) and len(kv) == 2 for kv in paged)
        ):
            raise InvalidArgumentError(
                f"paged: layout {layout.name} expects a list of (K, V) pairs"
            )
        return [kv[0] for kv in paged] + [kv[1] for kv in paged], len(paged)
    if (
        not _is_sequence(paged)
        or len(paged) != 2
        or len(paged[0]) != len(paged[1])
        or not len(paged[0])
    ):
        raise InvalidArgumentError(
            f"paged: layout {layout.name} expects (K list, V list) of equal, non-zero length"
        )
    return list(paged[0]) + list(paged[1]), len(paged[0])


def _is_sequence(x: Any) -> bool:
    return isinstance(x, (list, tuple))


def axis_sizes(axes: Sequence[str], shape: Sequence[int], what: str) -> dict[str, int]:
    """Maps axis names to sizes, checking the rank."""
    if len(shape) != len(axes):
        raise InvalidArgumentError(
            f"{what}: expected {len(axes)} dimensions [{', '.join(axes)}], got shape {tuple(shape)}"
        )
    return dict(zip(axes, (int(n) for n in shape), strict=True))


def dense_axes(fmt: DenseFormat, ndim: int) -> tuple[str, ...]:
    """A dense buffer may keep H*D flattened (``hd``) or split into ``head, dim``."""
    if ndim == len(fmt.axes) + 1:
        i = fmt.axes.index("hd")
        return fmt.axes[:i] + ("head", "dim") + fmt.axes[i + 1 :]
    return fmt.axes
