"""``python -m moezoo.hub ORG/NAME --revision COMMIT [--subfolder DIR]``: download and verify a snapshot.

The command moezoo's offline errors print: it fetches the safetensors, JSON and tokenizer files
into the hub cache, checks each against the hub's digests, records the marker, and prints the
folder, so a later offline ``moezoo.load`` finds it.
"""

from __future__ import annotations

import argparse
import sys

from moezoo.hub.hf import SnapshotNotFoundError, fetch_snapshot


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m moezoo.hub", description=__doc__.splitlines()[0])
    parser.add_argument("repo_id", help="e.g. allenai/OLMoE-1B-7B-0924")
    parser.add_argument("--revision", required=True, help="the 40-hex commit (a branch or tag is resolved to one)")
    parser.add_argument("--subfolder", default=None, help="a folder of the repo holding the checkpoint")
    args = parser.parse_args(argv)
    try:
        print(fetch_snapshot(args.repo_id, args.revision, args.subfolder))
    except (SnapshotNotFoundError, ValueError) as err:  # not found, no revision, a digest mismatch
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
