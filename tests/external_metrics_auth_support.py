"""Certificates and callers for the External Metrics API's delegated auth tests.

A front-proxy CA and client certificates made with ``cryptography`` (the kube-aggregator's
``--proxy-client-cert-file`` is one such certificate, signed by the CA the API server publishes
as ``requestheader-client-ca-file``), and the RBAC an HPA needs to read the metrics.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from predictive_scaler.external_metrics import GROUP, METRIC_NAMES

HPA_USER: Final = "system:serviceaccount:kube-system:horizontal-pod-autoscaler"
HPA_GROUPS: Final = ("system:serviceaccounts", "system:serviceaccounts:kube-system")
HPA_TOKEN: Final = "hpa-controller-token"
READ_METRICS: Final = {"apiGroups": [GROUP], "resources": list(METRIC_NAMES), "verbs": ["list"]}
"""What deploy/overlays/external-metrics grants the HPA controller."""
DISCOVERY: Final = {"nonResourceURLs": ["/apis", "/apis/*"], "verbs": ["get"]}
"""The part of the built-in ClusterRole ``system:discovery`` (bound to
``system:authenticated``) the API's discovery paths need."""
AGGREGATOR_CN: Final = "front-proxy-client"
"""The common name kubeadm gives the aggregator's proxy client certificate."""


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass(frozen=True)
class CertificateAuthority:
    cert_file: Path
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @property
    def pem(self) -> str:
        return self.cert_file.read_text()

    def issue_client(self, directory: Path, common_name: str) -> tuple[Path, Path]:
        """A client certificate (``clientAuth``) for ``common_name``: ``(cert, key)`` files."""
        directory.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
            .sign(self.key, hashes.SHA256())
        )
        cert_file, key_file = directory / f"{common_name}.crt", directory / f"{common_name}.key"
        cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(_pem_key(key))
        return cert_file, key_file


def make_ca(directory: Path, name: str) -> CertificateAuthority:
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    cert_file = directory / "ca.crt"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return CertificateAuthority(cert_file, key, certificate)


def authentication_configmap(ca: CertificateAuthority, allowed: list[str]) -> dict[str, Any]:
    """``kube-system/extension-apiserver-authentication`` as kube-apiserver writes it."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "extension-apiserver-authentication", "namespace": "kube-system"},
        "data": {
            "client-ca-file": ca.pem,
            "requestheader-client-ca-file": ca.pem,
            "requestheader-allowed-names": json.dumps(allowed),
            "requestheader-username-headers": json.dumps(["X-Remote-User"]),
            "requestheader-group-headers": json.dumps(["X-Remote-Group"]),
            "requestheader-extra-headers-prefix": json.dumps(["X-Remote-Extra-"]),
        },
    }
