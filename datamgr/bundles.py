"""Bundle names: how an app is named (`com.example.notes`), and the prefix kept for the daemon's own.

Apps register under a bundle name, KV stores and DataShare URIs carry one; all check it here, so the app
registry needs nothing from the capabilities that use it.
"""

from __future__ import annotations

import re

from datamgr.errors import InvalidArgument

BUNDLE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$")
# The bundles of the daemon's own replicated stores; app registration refuses names under it.
SYSTEM_BUNDLE_PREFIX = "ohos.distributeddata."


def check_bundle(bundle: str) -> str:
    if not (1 <= len(bundle) <= 128 and BUNDLE_RE.fullmatch(bundle)):
        raise InvalidArgument(f"invalid bundle name {bundle!r}: expected e.g. com.example.notes")
    return bundle
