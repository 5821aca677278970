"""Output colour spaces: linear Rec.709 (the model's) -> ACEScg or ACES2065-1, for VFX pipelines.

Each space is its primaries and white as xy chromaticities, which is also what an EXR's
`chromaticities` header says. The conversion goes through CIE XYZ, with the white point adapted
from D65 to the ACES white (~D60) by the Bradford transform, as ACES' own Rec.709 input transform does:

    M = RGB_to_XYZ(dst)^-1 . Bradford(white_src -> white_dst) . RGB_to_XYZ(src)
"""

from __future__ import annotations

import numpy as np

from .color_mapping import REC709_CHROMATICITIES
from .errors import InputError
from .options import OUTPUT_COLORSPACES

ACES_WHITE = (0.32168, 0.33767)
CHROMATICITIES = dict(zip(OUTPUT_COLORSPACES, (
    REC709_CHROMATICITIES,
    (0.713, 0.293, 0.165, 0.830, 0.128, 0.044, *ACES_WHITE),  # ACEScg: AP1 primaries
    (0.7347, 0.2653, 0.0, 1.0, 0.0001, -0.0770, *ACES_WHITE),  # ACES2065-1: AP0 primaries
)))
BRADFORD = np.array([[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367], [0.0389, -0.0685, 1.0296]])


def _xyz(x: float, y: float) -> np.ndarray:
    """xy chromaticity -> XYZ with Y = 1."""
    return np.array([x / y, 1.0, (1.0 - x - y) / y])


def rgb_to_xyz(chromaticities) -> np.ndarray:
    """3x3 matrix from linear RGB with these primaries to XYZ, white mapping to Y = 1."""
    primaries = np.stack([_xyz(*chromaticities[i : i + 2]) for i in (0, 2, 4)], axis=1)
    return primaries * np.linalg.solve(primaries, _xyz(*chromaticities[6:8]))


def bradford(white_src, white_dst) -> np.ndarray:
    """3x3 chromatic adaptation in XYZ from one white to another (von Kries in Bradford's cone space)."""
    gain = (BRADFORD @ _xyz(*white_dst)) / (BRADFORD @ _xyz(*white_src))
    return np.linalg.inv(BRADFORD) @ np.diag(gain) @ BRADFORD


def conversion_matrix(src: str, dst: str) -> np.ndarray:
    """3x3 matrix taking linear RGB in colour space `src` to `dst` (names of OUTPUT_COLORSPACES)."""
    s, d = CHROMATICITIES[src], CHROMATICITIES[dst]
    return np.linalg.inv(rgb_to_xyz(d)) @ bradford(s[6:], d[6:]) @ rgb_to_xyz(s)


def convert(rgb: np.ndarray, src: str, dst: str) -> np.ndarray:
    """(..., 3) linear RGB from `src` to `dst`, float32."""
    if src == dst:
        return rgb
    return (rgb @ conversion_matrix(src, dst).T.astype(np.float32)).astype(np.float32)


def space_of(chromaticities, source) -> str:
    """The name of the colour space an EXR header's chromaticities describe (Rec.709 when absent)."""
    if chromaticities is None:
        return "rec709"
    for name, known in CHROMATICITIES.items():
        if np.allclose(chromaticities, known, atol=1e-3):
            return name
    raise InputError(f"{source}: chromaticities {tuple(round(float(c), 4) for c in chromaticities)} are none of "
                     f"{', '.join(OUTPUT_COLORSPACES)}")
