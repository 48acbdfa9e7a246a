"""Region names: the ones botocore knows, for settings, and the shape of one, for run time."""

from __future__ import annotations

import difflib
import re
from functools import lru_cache


@lru_cache(maxsize=1)
def known_regions() -> frozenset[str]:
    """Every region botocore's bundled endpoint data knows, across partitions.

    Read through a bare loader, not a session: a session reads the AWS config for its
    profile first, and an AWS_PROFILE that names no profile would fail this check of
    the agent's own settings with botocore's ProfileNotFound.
    """
    from botocore.loaders import create_loader
    from botocore.regions import EndpointResolver

    resolver = EndpointResolver(create_loader().load_data("endpoints"))
    regions: set[str] = set()
    for partition in resolver.get_available_partitions():
        for service in ("sts", "ec2"):
            regions.update(resolver.get_available_endpoints(service, partition))
    return frozenset(regions)


# us-east-2, us-gov-west-1, eu-isoe-west-1, ap-southeast-5: the shape of every region name.
_REGION_SHAPE = re.compile(r"[a-z]{2,4}(?:-[a-z]+)+-\d{1,2}")


def region_shaped(text: str) -> str:
    """`text` normalised if it has the shape of a region name, else ValueError.

    The check for values read at run time (environment, IMDS): it keeps odd
    characters out of hostnames and labels without loading botocore's endpoint
    data, which would stay resident in the daemon (about 27 MiB).
    """
    name = text.strip().lower()
    if not _REGION_SHAPE.fullmatch(name):
        raise ValueError("is not a region name (such as us-east-2)")
    return name


def validate_region(text: str) -> str:
    """`text` normalised if botocore knows the region, else ValueError naming the closest."""
    name = text.strip().lower()
    known = known_regions()
    if name not in known:
        close = difflib.get_close_matches(name, sorted(known), n=3)
        # Offer every equally close region: us-eest-2 is as near us-west-2 as us-east-2.
        best = [c for c in close if _ratio(name, c) == _ratio(name, close[0])]
        hint = f" (did you mean {' or '.join(map(repr, sorted(best)))}?)" if best else ""
        raise ValueError(f"is not a region botocore knows{hint}")
    return name


def _ratio(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a, b).ratio()
