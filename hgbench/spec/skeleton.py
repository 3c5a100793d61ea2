"""MPII's 16-joint skeleton: names, flip pairs, limbs and the evaluation's joint groups, as named constants."""

from __future__ import annotations

NUM_JOINTS = 16

# MPII order (shared/data/mpii/README.md).
JOINT_NAMES: tuple[str, ...] = (
    "r_ankle",  # 0
    "r_knee",  # 1
    "r_hip",  # 2
    "l_hip",  # 3
    "l_knee",  # 4
    "l_ankle",  # 5
    "pelvis",  # 6
    "thorax",  # 7
    "upper_neck",  # 8
    "head_top",  # 9
    "r_wrist",  # 10
    "r_elbow",  # 11
    "r_shoulder",  # 12
    "l_shoulder",  # 13
    "l_elbow",  # 14
    "l_wrist",  # 15
)

# Index permutation applied when an image is mirrored: joint i of the mirror is joint FLIP_INDEX[i] of the original.
FLIP_INDEX: tuple[int, ...] = (5, 4, 3, 2, 1, 0, 6, 7, 8, 9, 15, 14, 13, 12, 11, 10)

PELVIS, THORAX, UPPER_NECK, HEAD_TOP = 6, 7, 8, 9

# Joints the reference training loop's heatmap accuracy ("Val Acc") averages over.
HEATMAP_ACC_JOINTS: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 10, 11, 14, 15)

# The study's PCKh columns: each part is the mean of its left and right joint.
PCKH_PARTS: dict[str, tuple[int, ...]] = {
    "Head": (HEAD_TOP,),
    "Shoulder": (12, 13),
    "Elbow": (11, 14),
    "Wrist": (10, 15),
    "Hip": (2, 3),
    "Knee": (1, 4),
    "Ankle": (0, 5),
}
# Joints in the PCKh Mean: all but pelvis and thorax (upper neck counts though no column shows it).
PCKH_MEAN_JOINTS: tuple[int, ...] = tuple(j for j in range(NUM_JOINTS) if j not in (PELVIS, THORAX))

# Limbs for drawing: (joint a, joint b, side) with side "left", "right" or "centre".
LIMBS: tuple[tuple[int, int, str], ...] = (
    # right leg
    (0, 1, "right"),
    (1, 2, "right"),
    (2, 6, "right"),
    # left leg
    (5, 4, "left"),
    (4, 3, "left"),
    (3, 6, "left"),
    # spine and head
    (6, 7, "centre"),
    (7, 8, "centre"),
    (8, 9, "centre"),
    # right arm
    (10, 11, "right"),
    (11, 12, "right"),
    (12, 7, "right"),
    # left arm
    (15, 14, "left"),
    (14, 13, "left"),
    (13, 7, "left"),
)

# More people than any predictions or ground-truth file can hold (MPII has 40,522 in all, 2,958 in its validation
# split): a larger declared shape is refused from the file's header, before its data is decompressed (a zlib bomb of
# a few MB can declare gigabytes).
MAX_PEOPLE = 100_000
