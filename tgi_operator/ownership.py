"""Pure: whether a Cloud Run service found at an object's id is that object's, and when it may be taken over.

Owner labels say which namespace/name (and cluster) a service belongs to, but anyone who may write the service can
write them. So a service is this object's only when it also carries the object's uid (written at creation), or when
it is a service the first version created (its shorter id, recorded in the object's status; it had no uid). Anything
else is taken over only when the TGIService asks for it by naming the service's uid (`tgi-operator.dev/adopt`), and
the takeover is announced once: the invoker members its policy held beyond the spec are named in a Warning event
and revoked (they go into the record of members this object granted, so a failed pass still revokes them).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum

from tgi_operator.naming import is_owned_by

OWNER_UID_ANNOTATION = "tgi-operator.dev/owner-uid"
ADOPT_ANNOTATION = "tgi-operator.dev/adopt"  # on the TGIService: the uid of the Cloud Run service it may take over


class Claim(Enum):
    OURS = "ours"
    ADOPT = "adopt"  # not ours, and the object asks to take it over
    FOREIGN = "foreign"


def claim(
    labels: Mapping[str, str], annotations: Mapping[str, str], *, namespace: str, name: str, uid: str, cluster: str,
    first_version: bool, adopt: str | None, service_uid: str,
) -> Claim:
    """`first_version`: the object's status records this service under the first version's id (made before uids)."""
    if is_owned_by(dict(labels), namespace, name, cluster):
        marked = annotations.get(OWNER_UID_ANNOTATION)
        if (uid and marked == uid) or (marked is None and first_version):
            return Claim.OURS
    # The service's uid, not its id: a service deleted and made again by someone else is not taken over silently.
    return Claim.ADOPT if adopt and adopt == service_uid else Claim.FOREIGN
