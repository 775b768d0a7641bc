"""Credentials a test gives a real nats-server: user/password, token, nkey/JWT (operator mode)
and TLS certificates.

No `nsc`: the operator, account and user nkeys come from the `nkeys` library and their JWTs
are written here in the nats-io/jwt v2 format (a base64url header and claims, signed with the
issuer's nkey; `jti` is the base32 SHA-512/256 of the claims).
"""

import base64
import datetime as dt
import hashlib
import ipaddress
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import nkeys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

JWT_HEADER = {"typ": "JWT", "alg": "ed25519-nkey"}
UNLIMITED = -1


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def new_nkey(prefix: int) -> nkeys.KeyPair:
    """A fresh key pair of a role (`nkeys.PREFIX_BYTE_OPERATOR`, `_ACCOUNT`, `_USER`)."""
    return nkeys.from_seed(bytearray(nkeys.encode_seed(os.urandom(32), prefix)))


def encode_jwt(issuer: nkeys.KeyPair, subject: str, name: str, nats: dict[str, object]) -> str:
    """A JWT of `subject` signed by `issuer`."""
    claims: dict[str, object] = {
        "jti": "",
        "iat": int(time.time()),
        "iss": issuer.public_key.decode(),
        "name": name,
        "sub": subject,
        "nats": {**nats, "version": 2},
    }
    digest = hashlib.new("sha512_256", json.dumps(claims).encode()).digest()
    claims["jti"] = base64.b32encode(digest).rstrip(b"=").decode()
    signed = f"{_b64(json.dumps(JWT_HEADER).encode())}.{_b64(json.dumps(claims).encode())}"
    return f"{signed}.{_b64(issuer.sign(signed.encode()))}"


def creds_file_text(user_jwt: str, user_seed: bytes) -> str:
    """The `.creds` file `nsc` would write: the user JWT and the user's nkey seed."""
    return (
        f"-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n\n"
        f"-----BEGIN USER NKEY SEED-----\n{user_seed.decode()}\n------END USER NKEY SEED------\n"
    )


@dataclass(frozen=True)
class OperatorMode:
    """A trust chain operator → account (JetStream enabled) → user, and the server config."""

    operator_jwt: str
    account_public: str
    account_jwt: str
    system_public: str
    system_jwt: str
    user_jwt: str
    user_seed: bytes

    @classmethod
    def create(cls) -> "OperatorMode":
        operator = new_nkey(nkeys.PREFIX_BYTE_OPERATOR)
        account = new_nkey(nkeys.PREFIX_BYTE_ACCOUNT)
        system = new_nkey(nkeys.PREFIX_BYTE_ACCOUNT)  # JetStream needs a system account
        system_public = system.public_key.decode()
        user = new_nkey(nkeys.PREFIX_BYTE_USER)
        operator_public = operator.public_key.decode()
        account_public = account.public_key.decode()
        limits = {
            name: UNLIMITED
            for name in ("subs", "data", "payload", "imports", "exports", "conn", "leaf")
        }
        jetstream = {
            name: UNLIMITED for name in ("mem_storage", "disk_storage", "streams", "consumer")
        }
        account_claims = {"type": "account", "limits": {**limits, **jetstream, "wildcards": True}}
        user_claims = {"type": "user", "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1}
        return cls(
            operator_jwt=encode_jwt(operator, operator_public, "lake-op", {"type": "operator"}),
            account_public=account_public,
            account_jwt=encode_jwt(operator, account_public, "lake", account_claims),
            system_public=system_public,
            system_jwt=encode_jwt(operator, system_public, "SYS", {"type": "account"}),
            user_jwt=encode_jwt(account, user.public_key.decode(), "ingest", user_claims),
            user_seed=bytes(user.seed),
        )

    def server_config(self) -> str:
        return (
            f"operator: {self.operator_jwt}\nsystem_account: {self.system_public}\n"
            "resolver: MEMORY\nresolver_preload: {\n"
            f"  {self.account_public}: {self.account_jwt}\n"
            f"  {self.system_public}: {self.system_jwt}\n}}\n"
        )

    def creds(self) -> str:
        return creds_file_text(self.user_jwt, self.user_seed)


@dataclass(frozen=True)
class Authority:
    """A certificate authority the test makes: signs server certificates."""

    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @classmethod
    def create(cls, name: str) -> "Authority":
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = dt.datetime.now(dt.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        return cls(key, certificate)

    def write(self, path: Path) -> Path:
        path.write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))
        return path

    def server_certificate(
        self, folder: Path, *, expired: bool = False, host: str = "127.0.0.1"
    ) -> tuple[Path, Path]:
        """A certificate and key for `host` (IP address) in `folder`; `expired` ended yesterday."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        start, end = (
            (now - dt.timedelta(days=10), now - dt.timedelta(days=1))
            if expired
            else (now - dt.timedelta(days=1), now + dt.timedelta(days=30))
        )
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        cert_path, key_path = folder / "server-cert.pem", folder / "server-key.pem"
        cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return cert_path, key_path


def tls_config(cert: Path, key: Path) -> str:
    return f'tls {{\n  cert_file: "{cert}"\n  key_file: "{key}"\n}}\n'


def users_config(*users: tuple[str, str]) -> str:
    """An `authorization` block with these (user, password) pairs."""
    entries = ", ".join(f'{{user: "{user}", password: "{password}"}}' for user, password in users)
    return f"authorization {{\n  users: [{entries}]\n}}\n"


def token_config(token: str) -> str:
    return f'authorization {{\n  token: "{token}"\n}}\n'
