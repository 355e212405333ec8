"""Content check of the split separation: no image shared where the protocol forbids it.

The config check (:mod:`opnp.pipeline.config`) compares dataset *names*; a test set copied under
another name would pass it. This module compares the images themselves, by the content
hash every dataset manifest records (:func:`opnp.data.manifests.image_hashes`):

- a validation image (ID ``id.val`` or OOD ``ood.val``) must not be a test image
  (``id.test`` or ``ood.test``): hyperparameters chosen on it would have seen the test;
- an OOD image (``ood.val``/``ood.test``) must not be an ID image (``id.train``,
  ``id.val``, ``id.test``): it would be scored as both.

The paper's own protocol uses the ID test set as ID validation set; the config states
that choice with ``selection.id_val_may_be_id_test: true``, which exempts that one pair.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["SplitLeakError", "split_pairs", "check_split_separation"]

#: Files named per offending pair of sets in an error message.
_SHOWN = 3


class SplitLeakError(ValueError):
    """Two sets that must be disjoint share images."""


def split_pairs(
    roles: Mapping[str, Any], id_val_may_be_id_test: bool = False
) -> list[tuple[str, str, str, str]]:
    """``(set a, role a, set b, role b)`` of every pair of sets that must share no image.

    ``roles`` holds the config's ``id_train``, ``id_val``, ``id_test`` (names) and
    ``ood_val``, ``ood_test`` and optionally ``sensitivity`` (the unlabeled images of
    the sensitivity set; lists of names).
    """
    validation = [(roles["id_val"], "id.val")] + [(n, "ood.val") for n in roles["ood_val"]]
    test = [(roles["id_test"], "id.test")] + [(n, "ood.test") for n in roles["ood_test"]]
    ood = [(n, "ood.val") for n in roles["ood_val"]] + [(n, "ood.test") for n in roles["ood_test"]]
    in_dist = [
        (roles["id_train"], "id.train"),
        (roles["id_val"], "id.val"),
        (roles["id_test"], "id.test"),
    ]
    # unlabeled sensitivity images: never a validation or test image
    unlabeled = [(n, "sensitivity.unlabeled") for n in roles.get("sensitivity", [])]
    pairs, seen = [], set()
    for group_a, group_b in ((validation, test), (ood, in_dist), (unlabeled, validation + test)):
        for a, role_a in group_a:
            for b, role_b in group_b:
                if id_val_may_be_id_test and (role_a, role_b) == ("id.val", "id.test"):
                    continue
                key = (a, role_a, b, role_b)
                if key not in seen:
                    seen.add(key)
                    pairs.append(key)
    return pairs


def check_split_separation(
    hashes: Mapping[str, Sequence[str]],
    roles: Mapping[str, Any],
    id_val_may_be_id_test: bool = False,
    files=None,
) -> dict:
    """Raise :class:`SplitLeakError` when two sets that must be disjoint share an image.

    ``hashes`` maps each dataset name to its images' content hashes (manifest order);
    ``files(name)`` returns that set's relative file paths in the same order, called only
    to name the shared images in the error. Returns a report of the pairs checked.
    """
    index: dict[str, dict[str, int]] = {}

    def first_position(name: str) -> dict[str, int]:
        if name not in index:
            positions: dict[str, int] = {}
            for i, h in enumerate(hashes[name]):
                positions.setdefault(h, i)
            index[name] = positions
        return index[name]

    problems, checked = [], []
    for a, role_a, b, role_b in split_pairs(roles, id_val_may_be_id_test):
        in_a, in_b = first_position(a), first_position(b)
        small, large = (in_a, in_b) if len(in_a) <= len(in_b) else (in_b, in_a)
        shared = [h for h in small if h in large]
        checked.append({"a": a, "role_a": role_a, "b": b, "role_b": role_b, "shared": len(shared)})
        if not shared:
            continue
        if a == b:
            detail = "the same dataset"
        elif files is None:
            detail = f"e.g. image hashes {', '.join(shared[:_SHOWN])}"
        else:
            files_a, files_b = files(a), files(b)
            detail = "e.g. " + "; ".join(
                f"{a}:{files_a[in_a[h]]} = {b}:{files_b[in_b[h]]}" for h in shared[:_SHOWN]
            )
        problems.append(
            f"{role_a} set {a!r} and {role_b} set {b!r} share {len(shared)} identical "
            f"image(s) ({detail})"
        )
    if problems:
        exemption = (
            ""
            if id_val_may_be_id_test
            else " (the paper's protocol of ID validation = ID test images is allowed with "
            "selection.id_val_may_be_id_test: true)"
        )
        raise SplitLeakError(
            "sets that must be disjoint share images: "
            + "; ".join(problems)
            + ". Validation images must not be test images and OOD images must not be ID "
            "images: remove the shared images from one of the sets or choose other sets" + exemption
        )
    return {"id_val_may_be_id_test": bool(id_val_may_be_id_test), "pairs": checked}
