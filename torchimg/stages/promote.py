"""`python -m torchimg promote`: release the staged digest that passed its test and scan.

No rebuild and no push from an engine: `buildx imagetools create` copies the staged index,
byte for byte, into the release repository. Same order and checks as `push` (immutable tag ->
digest read back -> moving tags never backwards, each read back), from the image's record
alone, so the publish job needs no GPU and no local image. A second promote of the same
commit changes nothing; a rebuild of a released commit (another digest) is refused.
"""

import argparse
import dataclasses

from torchimg.settings import Settings
from torchimg.stages import Selection, StageResult, push

HELP = "copy each staged, tested and scanned digest to the release repository; move tags"
SELECTS = "images"  # variants x flavors
Options = push.Options


def arguments(p: argparse.ArgumentParser) -> None:
    push.arguments(p)


def options(args: argparse.Namespace, settings: Settings) -> Options:
    return dataclasses.replace(push.options(args, settings), promote=True)


def run(selection: Selection, opts: Options) -> StageResult:
    return push.run(selection, opts)
