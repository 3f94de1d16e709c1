"""Release tags: one immutable tag per image and commit, then the moving tags users follow.

Immutable: `<variant>-<flavor>-<commit date>-<short sha>` (e.g. 2.9.1-cu128-runtime-20261127-c31bdfd),
dated by the commit, so pushing the same build again names the same tag. Moving:
`<variant>-<flavor>`, `<torch major.minor><rest of the name>-<flavor>` for the newest torch
patch release among the declared variants, and `latest` (runtime) / `latest-dev` for the
default variant.
"""

import datetime

from packaging.version import Version

from torchimg.errors import PipelineError
from torchimg.model.record import Record
from torchimg.model.variants import Config, Variant


def immutable(variant: Variant, flavor: str, epoch: int, revision: str, dirty: bool) -> str:
    date = datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y%m%d")
    return f"{variant.name}-{flavor}-{date}-{revision[:7]}" + ("-dirty" if dirty else "")


def staging(immutable_tag: str, image_id: str) -> str:
    """A staged candidate's tag: the commit's immutable tag plus the image's own ID."""
    return f"{immutable_tag}-{image_id.split(':')[-1][:12]}"


def release_files(digest: str) -> str:
    """The tag of the files that describe a release of `digest` (its manifest and notes), in
    the image's own repository: `sha256-<hex>.release`, named as cosign names what it attaches,
    so the next release on any machine finds the previous one's from its digest alone."""
    return digest.replace(":", "-", 1) + ".release"


def immutable_of(variant: Variant, flavor: str, rec: Record) -> str:
    """The immutable tag of a recorded image: its commit's date and revision."""
    git = rec.inputs.git
    epoch = int(rec.inputs.build_args["SOURCE_DATE_EPOCH"])
    return immutable(variant, flavor, epoch, git.revision, git.dirty)


def _instant(created: str) -> datetime.datetime | None:
    try:
        when = datetime.datetime.fromisoformat(created)
    except ValueError:
        return None
    return when if when.tzinfo else None


def backwards(ours: str, theirs: str | None) -> bool:
    """Whether moving a tag from an image created at `theirs` to ours (both the OCI `created`
    label: the commit time) would move it back in time. Unknown or unreadable times count as
    backwards: the tag is then only moved deliberately."""
    mine, other = _instant(ours), _instant(theirs or "")
    return mine is None or other is None or other > mine


def _minor_name(variant: Variant) -> str | None:
    """2.9.1-cu128-cuda -> 2.9-cu128-cuda (None when the name does not start with the version)."""
    if not variant.name.startswith(variant.torch):
        return None
    major, minor, _ = variant.torch.split(".")
    return f"{major}.{minor}{variant.name[len(variant.torch) :]}"


def _torch_version(variant: Variant) -> Version:
    return Version(variant.torch)


def moving(config: Config, variant: Variant, flavor: str) -> list[str]:
    tags = [f"{variant.name}-{flavor}"]
    minor = _minor_name(variant)
    same_line = [v for v in config.variants.values() if _minor_name(v) == minor]
    if minor and max(same_line, key=_torch_version) == variant:
        tags.append(f"{minor}-{flavor}")
    if variant.name == config.default:
        tags.append("latest" if flavor == "runtime" else f"latest-{flavor}")
    return tags


_TAG_MAX = 128  # Docker's limit on a tag's length


def check(config: Config) -> None:
    """Every tag the declared variants would push fits Docker's limit and names one image only
    (a variant named `latest`, or `2.9-cu128` beside 2.9.1-cu128's minor tag, would take over
    another image's moving tag): refused when the variants file is read, not at a push."""
    owner: dict[str, str] = {}
    for variant in config.variants.values():
        for flavor in variant.flavors:
            longest = staging(immutable(variant, flavor, 0, "0" * 40, dirty=True), "sha256:" + "0" * 64)
            if len(longest) > _TAG_MAX:
                raise PipelineError(
                    f"variant {variant.name!r}: its tags would be {len(longest)} characters "
                    f"(e.g. {longest}); Docker allows {_TAG_MAX}",
                    "give it a shorter name in variants.toml",
                )
            for tag in moving(config, variant, flavor):
                image = f"{variant.name} {flavor}"
                if owner.setdefault(tag, image) != image:
                    raise PipelineError(
                        f"{config.source.name}: the tag {tag!r} would name both {owner[tag]} and {image}",
                        "rename one of the variants so that each tag names one image",
                    )
