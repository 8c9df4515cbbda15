"""Google-style ID tokens and a metadata-server-compatible identity endpoint.

`TokenIssuer` owns one RSA key pair and mints/verifies ID tokens shaped like the ones Google's
metadata server hands out (RS256, `iss https://accounts.google.com`, `kid` header, numeric `sub`).
`add_metadata_routes` mounts the subset of the GCE/Cloud Run metadata server that google-auth really
calls, so `google.oauth2.id_token.fetch_id_token` works unchanged once `GCE_METADATA_HOST` and
`GCE_METADATA_IP` point at the emulator:

  GET  /                                                     ping (answers with `Metadata-Flavor: Google`)
  GET  /computeMetadata/v1/project/project-id | numeric-project-id
  GET  /computeMetadata/v1/universe/universe-domain
  GET  /computeMetadata/v1/instance/service-accounts/        ("default/" and the email)
  GET  /computeMetadata/v1/instance/service-accounts/{sa}/[?recursive=true]   {email, scopes, aliases}
  GET  /computeMetadata/v1/instance/service-accounts/{sa}/email | scopes | aliases
  GET|POST /computeMetadata/v1/instance/service-accounts/{sa}/identity?audience=A[&format=full]
  GET|POST /computeMetadata/v1/instance/service-accounts/{sa}/token          opaque access token (JSON)
  GET  /emulator/v1/certs    {kid: x509 PEM}  like https://www.googleapis.com/oauth2/v1/certs
  GET  /emulator/v3/certs    JWKS             like https://www.googleapis.com/oauth2/v3/certs

`{sa}` is `default` or the configured email. Every /computeMetadata request needs
`Metadata-Flavor: Google` and no `X-Forwarded-For`, else 403, like the real server.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.auth import crypt, exceptions, jwt

GOOGLE_ISSUER = "https://accounts.google.com"
ACCEPTED_ISSUERS = (GOOGLE_ISSUER, "accounts.google.com")
CERTS_PATH_PEM = "/emulator/v1/certs"
CERTS_PATH_JWKS = "/emulator/v3/certs"
METADATA_ROOT = "/computeMetadata/v1"
DEFAULT_SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)


class InvalidToken(Exception):
    """The token is malformed, not signed by this issuer, expired, or for another audience."""


def subject_for_email(email: str) -> str:
    """A stable 21-digit numeric id for an identity, like Google's `sub` for service accounts."""
    digest = int.from_bytes(hashlib.sha256(email.encode()).digest()[:9], "big")
    return "1" + str(digest).zfill(20)[-20:]


class TokenIssuer:
    """One RSA key pair that signs ID tokens; persist it with `key_pem()` to survive restarts."""

    def __init__(self, key_pem: bytes | None = None) -> None:
        if key_pem is None:
            self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            loaded = serialization.load_pem_private_key(key_pem, password=None)
            if not isinstance(loaded, rsa.RSAPrivateKey):
                raise ValueError("the emulator's token key must be an RSA private key")
            self._key = loaded
        self._pem = self._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        public_der = self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        # The kid depends on the key only, so tokens stay verifiable after a restart with the same key.
        self.kid = hashlib.sha1(public_der).hexdigest()
        self._signer = crypt.RSASigner.from_string(self._pem, key_id=self.kid)
        self._cert_pem = _self_signed_cert(self._key).public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self._pem

    def mint(self, email: str, audience: str, lifetime_s: int = 3600) -> str:
        """An ID token for `email` with `aud` = `audience`, valid from now for `lifetime_s` seconds."""
        if not email:
            raise ValueError("an ID token needs an email")
        if not audience:
            raise ValueError("an ID token needs an audience")
        now = int(time.time())
        sub = subject_for_email(email)
        claims = {
            "iss": GOOGLE_ISSUER,
            "aud": audience,
            "azp": sub,
            "sub": sub,
            "email": email,
            "email_verified": True,
            "iat": now,
            "exp": now + lifetime_s,
        }
        token = jwt.encode(self._signer, claims, header={"typ": "JWT"})
        return token.decode() if isinstance(token, bytes) else token

    def verify(self, token: str, audience: str | list[str]) -> str:
        """The token's email, after checking signature, expiry, issuer and audience."""
        try:
            claims = jwt.decode(token, certs={self.kid: self._cert_pem}, audience=audience)
        except (ValueError, exceptions.GoogleAuthError) as error:
            raise InvalidToken(str(error)) from None
        if claims.get("iss") not in ACCEPTED_ISSUERS:
            raise InvalidToken("Token has wrong issuer")
        email = claims.get("email")
        if not email or claims.get("email_verified") is not True:
            raise InvalidToken("Token carries no verified email")
        return str(email)

    def pem_certs(self) -> dict[str, str]:
        """`{kid: x509 PEM}`, the format of Google's oauth2/v1/certs (what google-auth verifies with)."""
        return {self.kid: self._cert_pem.decode()}

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """The JWKS form of the public key, like Google's oauth2/v3/certs."""
        numbers = self._key.public_key().public_numbers()
        return {
            "keys": [
                {
                    "kty": "RSA",
                    "alg": "RS256",
                    "use": "sig",
                    "kid": self.kid,
                    "n": _b64url_uint(numbers.n),
                    "e": _b64url_uint(numbers.e),
                }
            ]
        }


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _self_signed_cert(key: rsa.RSAPrivateKey) -> x509.Certificate:
    """A long-lived certificate around the public key: the container Google's v1 certs endpoint uses."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tgi-operator emulator token signer")])
    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )


@dataclass
class MetadataIdentity:
    """The identity the metadata server mints for; mutable at runtime (the emulator's admin API sets it)."""

    email: str
    project_id: str

    @property
    def numeric_project_id(self) -> str:
        return subject_for_email("project:" + self.project_id)[:12]


def _metadata_text(text: str, status: int = 200) -> web.Response:
    return web.Response(
        status=status, text=text, content_type="application/text", headers={"Metadata-Flavor": "Google"}
    )


def _metadata_json(document: object) -> web.Response:
    return web.json_response(document, headers={"Metadata-Flavor": "Google"})


def _refusal(request: web.Request) -> web.Response | None:
    """The real server's 403s: the header proves the caller is not a proxied browser request."""
    if request.headers.get("X-Forwarded-For"):
        return _metadata_text("Forbidden: request with X-Forwarded-For header is not allowed.\n", 403)
    if request.headers.get("Metadata-Flavor") != "Google":
        return _metadata_text(
            f"Your client does not have permission to get URL {request.path} from this server. "
            "Missing Metadata-Flavor:Google header.\n",
            403,
        )
    return None


Handler = Callable[[web.Request], Awaitable[web.Response]]


def add_metadata_routes(app: web.Application, issuer: TokenIssuer, identity: MetadataIdentity) -> None:
    """Mount the metadata-server routes listed in the module docstring on `app` (including `/`)."""

    def guarded(handler: Handler, *, per_account: bool = True) -> Handler:
        """Apply the real server's checks (header, proxy, known service account) before `handler`."""

        async def checked(request: web.Request) -> web.Response:
            refused = _refusal(request)
            if refused is not None:
                return refused
            account = request.match_info.get("account")
            if per_account and account not in ("default", identity.email):
                return _metadata_text(f"service account {account} not found on this instance\n", 404)
            return await handler(request)

        return checked

    async def root(request: web.Request) -> web.Response:
        return _metadata_text("computeMetadata/\n")

    async def listing_root(request: web.Request) -> web.Response:
        return _metadata_text("instance/\nproject/\nuniverse/\n")

    async def project_id(request: web.Request) -> web.Response:
        return _metadata_text(identity.project_id)

    async def numeric_project_id(request: web.Request) -> web.Response:
        return _metadata_text(identity.numeric_project_id)

    async def universe_domain(request: web.Request) -> web.Response:
        return _metadata_text("googleapis.com")

    async def accounts(request: web.Request) -> web.Response:
        return _metadata_text(f"default/\n{identity.email}/\n")

    async def account(request: web.Request) -> web.Response:
        if request.query.get("recursive") == "true":
            return _metadata_json(
                {"aliases": ["default"], "email": identity.email, "scopes": list(DEFAULT_SCOPES)}
            )
        return _metadata_text("aliases\nemail\nidentity\nscopes\ntoken\n")

    async def account_email(request: web.Request) -> web.Response:
        return _metadata_text(identity.email)

    async def account_scopes(request: web.Request) -> web.Response:
        return _metadata_text("\n".join(DEFAULT_SCOPES) + "\n")

    async def account_aliases(request: web.Request) -> web.Response:
        return _metadata_text("default\n")

    async def account_identity(request: web.Request) -> web.Response:
        audience = request.query.get("audience", "")
        if not audience:
            return _metadata_text("non-empty audience parameter required\n", 400)
        return _metadata_text(issuer.mint(identity.email, audience))

    async def account_token(request: web.Request) -> web.Response:
        # Opaque, like Google's access tokens; the emulator's gRPC API does not check them.
        return _metadata_json(
            {"access_token": "ya29.emulator." + secrets.token_urlsafe(32), "expires_in": 3599, "token_type": "Bearer"}
        )

    async def pem_certs(request: web.Request) -> web.Response:
        return web.json_response(issuer.pem_certs())

    async def jwks(request: web.Request) -> web.Response:
        return web.json_response(issuer.jwks())

    sa = METADATA_ROOT + "/instance/service-accounts/{account}"
    app.router.add_get("/", root)
    app.router.add_get(METADATA_ROOT + "/", guarded(listing_root, per_account=False))
    app.router.add_get(METADATA_ROOT + "/project/project-id", guarded(project_id, per_account=False))
    app.router.add_get(METADATA_ROOT + "/project/numeric-project-id", guarded(numeric_project_id, per_account=False))
    app.router.add_get(METADATA_ROOT + "/universe/universe-domain", guarded(universe_domain, per_account=False))
    app.router.add_get(METADATA_ROOT + "/instance/service-accounts/", guarded(accounts, per_account=False))
    app.router.add_get(sa + "/", guarded(account))
    app.router.add_get(sa, guarded(account))
    app.router.add_get(sa + "/email", guarded(account_email))
    app.router.add_get(sa + "/scopes", guarded(account_scopes))
    app.router.add_get(sa + "/aliases", guarded(account_aliases))
    for method in ("GET", "POST"):  # POST: google-auth's certificate-bound token request
        app.router.add_route(method, sa + "/identity", guarded(account_identity))
        app.router.add_route(method, sa + "/token", guarded(account_token))
    app.router.add_get(CERTS_PATH_PEM, pem_certs)
    app.router.add_get(CERTS_PATH_JWKS, jwks)
