"""Image and container references: what may be put into an Engine URL or tagged.

Every path segment of an accepted reference starts with a letter or digit, so ``..`` and the
like can never reach the Engine's URL.
"""

from __future__ import annotations

import re

from agent.runtime.errors import InvalidError

__all__ = ["check_image_ref", "check_repository", "is_container_ref", "is_image_ref", "normalize_image_ref"]

# A container name or id (with Docker's optional leading "/").
_CONTAINER_REF_RE = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]{0,254}$")
# An image reference as the Engine API accepts it in a URL path: [host[:port]/]path[:tag][@digest],
# or an id ("sha256:<hex>" or a hex prefix).
_IMAGE_REF_RE = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9._-]*(?::[0-9]+)?"
    r"(?:/[A-Za-z0-9][A-Za-z0-9._-]*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"
    r"(?:@[A-Za-z][A-Za-z0-9+._-]*:[0-9a-fA-F]{32,})?$"
)
_REPOSITORY_RE = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*(?::[0-9]+)?/)?"
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$"
)
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def is_container_ref(ref: object) -> bool:
    """Whether ``ref`` can name a container (an id, an id prefix or a name)."""
    return isinstance(ref, str) and bool(_CONTAINER_REF_RE.match(ref))


def is_image_ref(ref: object) -> bool:
    """Whether ``ref`` is a well-formed image reference or id."""
    return isinstance(ref, str) and len(ref) <= 512 and bool(_IMAGE_REF_RE.match(ref))


def check_image_ref(ref: object) -> str:
    """``ref`` when it is a well-formed image reference or id, else :class:`InvalidError`."""
    if not isinstance(ref, str) or not is_image_ref(ref):
        raise InvalidError(f"{ref!r} is not a valid image reference")
    return ref


def check_repository(repository: str, tag: str) -> None:
    """Raise :class:`InvalidError` unless ``repository:tag`` is a valid image name to tag with."""
    if not isinstance(repository, str) or len(repository) > 255 or not _REPOSITORY_RE.match(repository):
        raise InvalidError(
            f"{repository!r} is not a valid repository name (lower case letters, digits and . _ - separators, "
            "path components joined by /)"
        )
    if not isinstance(tag, str) or not _TAG_RE.match(tag):
        raise InvalidError(f"{tag!r} is not a valid tag")


def normalize_image_ref(ref: str) -> str:
    """``busybox`` -> ``busybox:latest``; references with a tag or digest stay as they are."""
    last = ref.rsplit("/", 1)[-1]
    if ":" in last or "@" in last:
        return ref
    return f"{ref}:latest"
