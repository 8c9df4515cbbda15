"""Secret Manager access of a revision's service account, as Cloud Run checks it when it starts a revision.

Cloud Run reads every secret a revision's env names (`value_source.secret_key_ref`) as the revision's service
account. One it may not read makes the revision fail, service Ready=False, with one line per refused secret.
Recorded (terraform-docs-samples#168, sourcegraph/sourcegraph-public-snapshot#59045):
  "Revision 'x' is not ready and cannot serve traffic. spec.template.spec.containers[0].env[0].value_from.
  secret_key_ref.name: Permission denied on secret: projects/729273278660/secrets/dbusersecret/versions/latest for
  Revision service account 729273278660-compute@developer.gserviceaccount.com. The service account used must be
  granted the 'Secret Manager Secret Accessor' role (roles/secretmanager.secretAccessor) at the secret, project or
  higher level."
A bare secret name is the service's project's, named by its number there; a full name is shown as written. Who may read: the account granted on the secret (the admin API's
/secret-accessors), or holding a project role that includes secretmanager.versions.access. roles/editor does not
("Editor ... does not include ... accessing secret payloads"; cloud.google.com/secret-manager/docs/access-control).
Nobody else, by default: the stricter answer. Whether the secret exists is not modelled (a missing secret reads
as a refused one to a caller that may not list it), nor are secrets mounted as volumes (the operator renders env
secrets only).
"""

from __future__ import annotations

from collections.abc import Callable

from google.cloud import run_v2

from tgi_operator.emulator import rules

ACCESSOR_ROLES = frozenset({"roles/secretmanager.secretAccessor", "roles/secretmanager.admin", "roles/owner"})
GRANT_HINT = ("The service account used must be granted the 'Secret Manager Secret Accessor' role "
              "(roles/secretmanager.secretAccessor) at the secret, project or higher level.")


def secret_name(project: str, secret: str) -> str:
    """`projects/P/secrets/S` for a reference that is a bare name (the service's project) or a full name."""
    return secret if secret.startswith("projects/") else f"projects/{project}/secrets/{secret}"


def refused_secrets(project: str, template: run_v2.RevisionTemplate, may_read: Callable[[str, str], bool]) -> list[str]:
    """One line per env secret the revision's account may not read (`may_read(secret name, email)`)."""
    account = template.service_account or f"{rules.project_number(project)}-compute@developer.gserviceaccount.com"
    lines = []
    for c, container in enumerate(template.containers):
        for e, env in enumerate(container.env):
            ref = env.value_source.secret_key_ref if "value_source" in env else None
            if ref is None or not ref.secret or may_read(name := secret_name(project, ref.secret), account):
                continue
            # A bare name is the service's project's, which the message names by number (terraform-docs-samples#168);
            # a full name is shown as written (sourcegraph#59045: projects/sourcegraph-dev/secrets/...).
            if not ref.secret.startswith("projects/"):
                name = f"projects/{rules.project_number(project)}/secrets/{ref.secret}"
            shown = f"{name}/versions/{ref.version or 'latest'}"
            lines.append(f"spec.template.spec.containers[{c}].env[{e}].value_from.secret_key_ref.name: Permission "
                         f"denied on secret: {shown} for Revision service account {account}. {GRANT_HINT}")
    return lines
