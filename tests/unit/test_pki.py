"""The federation PKI (federation.trust.pki), certificate checks and options (federation.trust.tls), and `hpf pki`."""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import stat
import textwrap
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, cast

import grpc
import pytest
import typer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from typer.testing import CliRunner

from hpf.cli.pki import describe, register
from hpf.federation.config_files import parse_model
from hpf.federation.errors import AuthError, ConfigError, FederationError
from hpf.federation.trust import (
    ca_record,
    certificates,
    channels,
    key_files,
    pki,
    revocation,
    server_names,
    servers,
    tls,
    tls_material,
)
from hpf.federation.trust.envelope import EnvelopeVerifier, Signer
from hpf.federation.trust.revocation import RevocationList


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> pki.FederationFiles:
    out = tmp_path_factory.mktemp("fed")
    return pki.init_federation(
        out,
        ["hangzhou", "shanghai"],
        federation="test",
        clients=[("alice", "analyst", "hangzhou"), ("bob", "auditor", None)],
    )


@pytest.fixture(scope="module")
def other(tmp_path_factory: pytest.TempPathFactory) -> pki.FederationFiles:
    return pki.init_federation(tmp_path_factory.mktemp("other"), ["rogue"], federation="other")


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _config(files: key_files.CertFiles, **over: Path) -> tls.TlsConfig:
    return tls.TlsConfig(**{"ca": files.ca, "cert": files.cert, "key": files.key, **over})


def _raises(tls_config: tls.TlsConfig, purpose: tls_material.Purpose, code: str) -> FederationError:
    with pytest.raises(FederationError) as info:
        tls_material.load_material(tls_config, purpose)
    assert info.value.code == code, str(info.value)
    return info.value


# --- pki ------------------------------------------------------------------------------------------------


def test_create_ca_writes_private_key_0600_and_refuses_to_overwrite(tmp_path: Path) -> None:
    files = pki.create_ca(tmp_path, name="test CA", federation="test")
    assert stat.S_IMODE(files.key.stat().st_mode) == 0o600
    cert = _cert(files.cert)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    before = files.cert.read_bytes()
    with pytest.raises(ConfigError) as info:
        pki.create_ca(tmp_path, federation="test")
    assert info.value.code == "PKI_CA_EXISTS"
    assert files.cert.read_bytes() == before
    pki.create_ca(tmp_path, federation="test", force=True)
    assert files.cert.read_bytes() != before


def test_node_certificate_has_default_hosts_and_server_and_client_auth(fed: pki.FederationFiles) -> None:
    files = pki.issue_certificate(fed["ca"], fed["ca"].cert.parent / "extra", "wuxi", "node", region="wuxi")
    cert = _cert(files.cert)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["wuxi.node.test", "localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert stat.S_IMODE(files.key.stat().st_mode) == 0o600


def test_person_certificate_is_client_only_without_hosts(fed: pki.FederationFiles) -> None:
    cert = _cert(fed["people"]["alice"].cert)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == "analyst"
    assert cert.subject.get_attributes_for_oid(NameOID.LOCALITY_NAME)[0].value == "hangzhou"
    with pytest.raises(ConfigError):
        pki.issue_certificate(fed["ca"], "/nonexistent", "p", "person", role="analyst", hosts=["localhost"])


@pytest.mark.parametrize(
    ("name", "kind", "role", "region"),
    [
        ("carol", "person", "caseworker", "suzhou"),
        ("dave", "person", "integrator", None),
        ("erin", "person", "operator", "taizhou-js"),
        ("ningbo", "node", None, "ningbo"),
        ("coordinator", "coordinator", None, None),
    ],
)
def test_read_identity_round_trip(
    fed: pki.FederationFiles, tmp_path: Path, name: str, kind: certificates.Kind, role: str | None, region: str | None
) -> None:
    files = pki.issue_certificate(fed["ca"], tmp_path, name, kind, role=role, region=region, valid_days=30)
    ident = certificates.read_identity(files.cert.read_bytes())
    cert = _cert(files.cert)
    assert (ident.common_name, ident.kind, ident.role, ident.region) == (name, kind, role, region)
    assert ident.serial == cert.serial_number
    assert ident.not_after == cert.not_valid_after_utc
    assert certificates.read_identity(files.cert.read_text()) == ident


def test_read_identity_refuses_certificates_without_or_with_inconsistent_identity(
    fed: pki.FederationFiles,
) -> None:
    with pytest.raises(AuthError) as info:
        certificates.read_identity(fed["ca"].cert.read_bytes())
    assert info.value.code == "IDENTITY_MISSING"
    with pytest.raises(AuthError) as info:
        certificates.read_identity(b"not a certificate")
    assert info.value.code == "TLS_PEM_INVALID"
    # Subject says auditor, the identity extension says analyst.
    ca_cert, ca_key = key_files.load_ca(fed["ca"])
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    payload = '{"kind":"person","region":null,"role":"analyst","v":1}'
    forged = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "auditor"),
                    x509.NameAttribute(NameOID.COMMON_NAME, "mallory"),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.UnrecognizedExtension(certificates.IDENTITY_OID, certificates.der_utf8(payload)), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    with pytest.raises(AuthError) as info:
        certificates.read_identity(forged.public_bytes(serialization.Encoding.PEM))
    assert info.value.code == "IDENTITY_INCONSISTENT"


def test_der_utf8_long_form_round_trip() -> None:
    text = "区" * 200
    assert certificates.parse_der_utf8(certificates.der_utf8(text)) == text


@pytest.mark.parametrize(
    ("name", "kind", "role", "region", "code"),
    [
        ("x", "person", None, None, "PKI_BAD_ROLE"),
        ("x", "person", "boss", None, "PKI_BAD_ROLE"),
        ("x", "node", "analyst", None, "PKI_BAD_ROLE"),
        ("x", "robot", None, None, "PKI_BAD_KIND"),
        ("../evil", "node", None, None, "PKI_BAD_NAME"),
        ("x", "node", None, "Hang Zhou", "PKI_BAD_REGION"),
    ],
)
def test_issue_refuses_bad_identities(
    fed: pki.FederationFiles,
    tmp_path: Path,
    name: str,
    kind: str,
    role: str | None,
    region: str | None,
    code: str,
) -> None:
    with pytest.raises(ConfigError) as info:
        pki.issue_certificate(fed["ca"], tmp_path, name, cast(certificates.Kind, kind), role=role, region=region)
    assert info.value.code == code
    assert list(tmp_path.iterdir()) == []


def test_issue_without_ca_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        pki.issue_certificate(tmp_path, tmp_path, "n", "node")
    assert info.value.code == "PKI_CA_NOT_FOUND"
    assert "hpf pki init" in str(info.value)


def test_init_federation_layout_and_idempotence(tmp_path: Path) -> None:
    first = pki.init_federation(tmp_path, ["hangzhou"], federation="test")
    assert (tmp_path / "ca.pem").is_file() and (tmp_path / "coordinator.key").is_file()
    assert first["nodes"]["hangzhou"].cert == tmp_path / "nodes" / "hangzhou.pem"
    assert first["people"]["caseworker"].key == tmp_path / "people" / "caseworker.key"
    assert certificates.read_identity(first["people"]["caseworker"].cert.read_bytes()).role == "caseworker"
    node_san = (
        _cert(first["nodes"]["hangzhou"].cert).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    )
    assert node_san.get_values_for_type(x509.DNSName) == ["hangzhou.node.test", "localhost"]
    assert len(first["created"]) == 4
    snapshot = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}

    again = pki.init_federation(tmp_path, ["hangzhou", "ningbo"])
    assert again["created"] == [tmp_path / "nodes" / "ningbo.pem"]
    assert all(p.read_bytes() == data for p, data in snapshot.items())

    forced = pki.init_federation(tmp_path, ["hangzhou"], federation="test", force=True)
    assert (tmp_path / "ca.pem").read_bytes() != snapshot[tmp_path / "ca.pem"]
    assert len(forced["created"]) == 4
    # ningbo's old certificate is from the replaced CA: the next run re-issues it.
    assert pki.init_federation(tmp_path, ["ningbo"])["created"] == [tmp_path / "nodes" / "ningbo.pem"]


def test_init_federation_reissues_when_identity_or_hosts_change(tmp_path: Path) -> None:
    pki.init_federation(tmp_path, [], federation="test", clients=[("alice", "analyst", None)])
    changed = pki.init_federation(tmp_path, [], clients=[("alice", "auditor", None)], hosts=["node.example"])
    assert set(changed["created"]) == {tmp_path / "people" / "alice.pem", tmp_path / "coordinator.pem"}
    assert certificates.read_identity((tmp_path / "people" / "alice.pem").read_bytes()).role == "auditor"


def test_init_federation_refuses_an_incomplete_ca(tmp_path: Path) -> None:
    pki.create_ca(tmp_path, federation="test")
    (tmp_path / "ca.key").unlink()
    with pytest.raises(ConfigError) as info:
        pki.init_federation(tmp_path, ["hangzhou"])
    assert info.value.code == "PKI_CA_INCOMPLETE"


# --- pki: names are matched whole ------------------------------------------------------------------------------

SMUGGLED = ("\n", "\r", "\x00")  # "$" would match before a trailing "\n"; "\r" and NUL keep a looser pattern honest


def _issue(fed: pki.FederationFiles, out: Path, name: str, kind: str, **options: Any) -> Callable[[], object]:
    return partial(pki.issue_certificate, fed["ca"], out, name, cast(certificates.Kind, kind), **options)


@pytest.mark.parametrize("tail", SMUGGLED)
def test_a_name_with_a_line_break_or_nul_is_never_issued(fed: pki.FederationFiles, tmp_path: Path, tail: str) -> None:
    """What the attacker tried: a person named after the coordinator's server name with a newline, and hosts that
    fall under the federation's names but for a newline; a NUL or a line break inside as well as at the end."""
    tries = [
        ("PKI_BAD_NAME", _issue(fed, tmp_path, n, "person", role="caseworker"))
        for n in (f"coordinator.test{tail}", f"bob{tail}", f"bo{tail}b", f"{tail}bob")
    ]
    hosts = [f"*.node.test{tail}", f"coordinator.test{tail}", f"hangzhou.node.test{tail}", f"localhost{tail}"]
    hosts += [f"local{tail}host", f"127.0.0.1{tail}", f"::1{tail}", f"fe80::1%eth0{tail}", "fe80::1%eth0"]
    for host in hosts:
        tries.append(("PKI_BAD_HOST", _issue(fed, tmp_path, "n9", "node", region="n9", hosts=[host])))
        tries.append(("PKI_BAD_HOST", _issue(fed, tmp_path, "gw", "coordinator", hosts=["localhost", host])))
    tries.append(("PKI_BAD_REGION", _issue(fed, tmp_path, "n9", "node", region=f"n9{tail}")))
    tries.append(("PKI_BAD_REGION", _issue(fed, tmp_path, "al", "person", role="analyst", region=f"hangzhou{tail}")))
    for code, issue in tries:
        with pytest.raises(ConfigError) as info:
            issue()
        assert info.value.code == code, (code, info.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("tail", SMUGGLED)
def test_node_ids_and_federation_names_with_a_line_break_or_nul_are_refused(tmp_path: Path, tail: str) -> None:
    for node_id in (f"n0{tail}", f"n{tail}0"):
        for code, call in (
            ("PKI_BAD_NODE_ID", partial(server_names.check_node_id, node_id)),
            ("PKI_BAD_NODE_ID", partial(server_names.ServerNames("test").node, node_id)),
            ("PKI_BAD_NAME", partial(pki.init_federation, tmp_path, [node_id], federation="test")),
        ):
            with pytest.raises(ConfigError) as info:
                call()
            assert info.value.code == code
    for name in (f"test{tail}", f"te{tail}st", f"yrd-demo.org{tail}"):
        for make in (
            partial(server_names.check_federation_name, name),
            partial(server_names.ServerNames, name),
            partial(pki.create_ca, tmp_path, federation=name),
            partial(pki.init_federation, tmp_path, [], federation=name),
        ):
            with pytest.raises(ConfigError) as info:
                make()
            assert info.value.code == "PKI_BAD_FEDERATION"
    assert list(tmp_path.iterdir()) == []


def test_hpf_pki_issue_refuses_a_name_ending_in_a_newline(cli: typer.Typer, tmp_path: Path) -> None:
    pki.init_federation(tmp_path / "pki", [], federation="test")
    out = tmp_path / "out"
    for extra in (
        ["--name", "coordinator.test\n", "--kind", "person", "--role", "caseworker"],
        ["--name", "n9", "--kind", "node", "--region", "n9", "--host", "coordinator.test\n"],
    ):
        result = CliRunner().invoke(cli, ["pki", "issue", "--ca-dir", str(tmp_path / "pki"), "--out", str(out), *extra])
        assert result.exit_code == 2 and result.stderr.startswith("error: [PKI_BAD_"), result.output
    assert not out.exists()


# --- pki: server names -------------------------------------------------------------------------------------


def _old_ca(directory: Path) -> key_files.CaFiles:
    """A CA as `hpf pki init` made it before CAs named their federation (no identity extension)."""
    files = key_files.CaFiles.in_dir(directory)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hpf federation CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_files.write_pair(files, cert, key)
    return files


def _unnamed_leaf(ca: key_files.CaFiles, out: Path, node_id: str) -> key_files.CertFiles:
    """A node certificate as issued before server names: identity and hosts, but not its name."""
    ca_cert, ca_key = key_files.load_ca(ca)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    payload = f'{{"kind": "node", "region": "{node_id}", "role": null, "v": 1}}'
    subject = [
        (NameOID.ORGANIZATION_NAME, certificates.ORGANIZATION),
        (NameOID.ORGANIZATIONAL_UNIT_NAME, "node"),
        (NameOID.LOCALITY_NAME, node_id),
        (NameOID.COMMON_NAME, node_id),
    ]
    usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(oid, value) for oid, value in subject]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.UnrecognizedExtension(certificates.IDENTITY_OID, certificates.der_utf8(payload)), critical=False
        )
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.DNSName(node_id)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    files = key_files.CertFiles(cert=out / f"{node_id}.pem", key=out / f"{node_id}.key", ca=ca.cert)
    key_files.write_pair(files, cert, key)
    return files


def test_the_ca_names_its_federation_and_each_server(fed: pki.FederationFiles) -> None:
    assert fed["federation"] == "test"
    assert server_names.federation_of(_cert(fed["ca"].cert)) == "test"
    for files, name in [(fed["coordinator"], "coordinator.test"), (fed["nodes"]["hangzhou"], "hangzhou.node.test")]:
        san = _cert(files.cert).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName)[0] == name
    config = _config(fed["people"]["alice"])
    assert channels.coordinator_target(config) == "coordinator.test"
    assert channels.node_target(config, "shanghai") == "shanghai.node.test"
    assert channels.coordinator_target(None) is None and channels.node_target(None, "shanghai") is None  # insecure


@pytest.mark.parametrize("name", ["test", "yrd-demo", "my-federation", "hpf.example.org", "a" * 63, "x1.y-2"])
def test_good_federation_names(name: str) -> None:
    assert server_names.check_federation_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "Test", "a_b", "-x", "x-", "a..b", ".a", "a.", "yrd demo", "a" * 64, ".".join(["abc"] * 40)]
)
def test_bad_federation_names(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        server_names.check_federation_name(name)
    assert info.value.code == "PKI_BAD_FEDERATION"


def test_every_region_id_is_a_node_name() -> None:
    from hpf.federation.regions import REGIONS

    for region in REGIONS:
        assert server_names.ServerNames("yrd-demo").node(region.node_id) == f"{region.node_id}.node.yrd-demo"


@pytest.mark.parametrize("node_id", ["N0", "a.b", "a_b", "-a", "a-", "", "a" * 64])
def test_bad_node_ids(tmp_path: Path, node_id: str) -> None:
    with pytest.raises(ConfigError) as info:
        pki.init_federation(tmp_path, [node_id], federation="test")
    assert info.value.code in ("PKI_BAD_NODE_ID", "PKI_BAD_NAME")
    assert not (tmp_path / "ca.pem").exists()


def test_a_new_ca_needs_the_federation_name_and_a_kept_one_must_match(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        pki.init_federation(tmp_path, ["hangzhou"])
    assert info.value.code == "PKI_FEDERATION_REQUIRED" and "--federation" in str(info.value)
    pki.init_federation(tmp_path, ["hangzhou"], federation="test")
    assert pki.init_federation(tmp_path, ["hangzhou"])["created"] == []  # an existing CA names it already
    with pytest.raises(ConfigError) as info:
        pki.init_federation(tmp_path, ["hangzhou"], federation="prod")
    assert info.value.code == "PKI_FEDERATION_MISMATCH" and "--force" in str(info.value)
    assert pki.init_federation(tmp_path, ["hangzhou"], federation="prod", force=True)["federation"] == "prod"


def test_a_ca_made_before_federation_names_is_refused_everywhere_with_the_fix(tmp_path: Path) -> None:
    old = _old_ca(tmp_path / "pki")
    leaf = _unnamed_leaf(old, tmp_path / "pki" / "nodes", "hangzhou")
    for call in (
        lambda: pki.init_federation(tmp_path / "pki", ["hangzhou"]),
        lambda: pki.issue_certificate(old, tmp_path, "ningbo", "node", region="ningbo"),
        lambda: channels.coordinator_target(_config(leaf)),
        lambda: servers.server_credentials(_config(leaf)),
    ):
        with pytest.raises(ConfigError) as info:
            call()
        assert info.value.code == "PKI_CA_NO_FEDERATION"
        assert "hpf pki init --dir DIR --federation NAME --force" in str(info.value)
    assert channels.coordinator_target(None) is None  # insecure mode has no names to check
    made = pki.init_federation(tmp_path / "pki", ["hangzhou"], federation="test", force=True)
    assert server_names.federation_of(_cert(made["ca"].cert)) == "test"
    assert tls_material.load_material(_config(made["nodes"]["hangzhou"]), "server")


def test_init_reissues_a_server_certificate_that_lacks_its_name(tmp_path: Path) -> None:
    first = pki.init_federation(tmp_path, ["hangzhou"], federation="test")
    leaf = _unnamed_leaf(first["ca"], tmp_path / "nodes", "hangzhou")
    with pytest.raises(AuthError) as info:  # a server refuses to start with it: no client could dial it
        tls_material.load_material(_config(leaf), "server")
    assert info.value.code == "TLS_SERVER_UNNAMED" and "hpf pki init" in str(info.value)
    assert tls_material.load_material(_config(leaf), "client")  # as a client it is still who it says
    again = pki.init_federation(tmp_path, ["hangzhou"])
    assert again["created"] == [leaf.cert]
    assert tls_material.load_material(_config(again["nodes"]["hangzhou"]), "server")


def test_cli_init_needs_the_federation_and_show_prints_it(cli: typer.Typer, tmp_path: Path) -> None:
    runner = CliRunner()
    refused = runner.invoke(cli, ["pki", "init", "--dir", str(tmp_path), "--nodes", "hangzhou"])
    assert refused.exit_code == 2 and "PKI_FEDERATION_REQUIRED" in refused.stderr
    made = runner.invoke(cli, ["pki", "init", "--dir", str(tmp_path), "--federation", "yrd", "--nodes", "hangzhou"])
    assert made.exit_code == 0 and "coordinator.yrd" in made.output, made.output
    shown = runner.invoke(cli, ["pki", "show", str(tmp_path / "ca.pem")])
    assert "federation:  yrd" in shown.output, shown.output
    node = runner.invoke(cli, ["pki", "show", str(tmp_path / "nodes" / "hangzhou.pem")])
    assert "hangzhou.node.yrd" in node.output
    old = _old_ca(tmp_path / "old")
    shown = runner.invoke(cli, ["pki", "show", str(old.cert)])
    assert shown.exit_code == 0 and "PKI_CA_NO_FEDERATION" in shown.output


# --- tls: configuration and options ---------------------------------------------------------------------


def test_tls_config_resolves_relative_paths_against_the_yaml_folder(tmp_path: Path) -> None:
    data = {"ca": "certs/ca.pem", "cert": "/abs/node.pem", "key": "certs/node.key"}
    config = parse_model(tmp_path / "node.yaml", data, tls.TlsConfig)
    assert config.ca == tmp_path / "certs" / "ca.pem"
    assert config.cert == Path("/abs/node.pem")
    assert config.key == tmp_path / "certs" / "node.key"
    with pytest.raises(ConfigError) as info:
        parse_model(tmp_path / "node.yaml", {"ca": "a", "cert": "b"}, tls.TlsConfig)
    assert "key" in info.value.message and "node.yaml" in info.value.message
    with pytest.raises(ConfigError):
        parse_model(tmp_path / "node.yaml", {**data, "kye": "typo"}, tls.TlsConfig)


@pytest.mark.parametrize(
    ("ca", "cert", "key", "missing"),
    [
        ("ca.pem", None, None, "--cert, --key"),
        (None, "n.pem", "n.key", "--ca"),
        ("ca.pem", "n.pem", None, "--key"),
    ],
)
def test_half_given_certificate_options_are_an_error(
    ca: str | None, cert: str | None, key: str | None, missing: str
) -> None:
    for insecure in (False, True):
        with pytest.raises(ConfigError) as info:
            tls.tls_from_options(ca, cert, key, insecure)
        assert info.value.code == "TLS_OPTIONS_INCOMPLETE"
        assert missing in info.value.message


def test_no_certificates_without_insecure_is_an_error() -> None:
    with pytest.raises(ConfigError) as info:
        tls.tls_from_options(None, None, None, False)
    assert info.value.code == "TLS_REQUIRED"
    assert "hpf pki init" in str(info.value)


def test_certificates_and_insecure_together_are_an_error() -> None:
    with pytest.raises(ConfigError) as info:
        tls.tls_from_options("ca.pem", "n.pem", "n.key", True)
    assert info.value.code == "TLS_OPTIONS_CONFLICT"


def test_insecure_logs_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="hpf.tls"):
        assert tls.tls_from_options(None, None, None, True) is None
    [record] = [r for r in caplog.records if r.name == "hpf.tls"]
    assert record.levelno == logging.WARNING
    assert "unencrypted" in record.getMessage() and "unauthenticated" in record.getMessage()


def test_full_options_give_a_config_without_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="hpf.tls"):
        config = tls.tls_from_options("ca.pem", Path("n.pem"), "n.key")
    assert config == tls.TlsConfig(ca=Path("ca.pem"), cert=Path("n.pem"), key=Path("n.key"))
    assert not caplog.records


# --- tls: certificate checks ----------------------------------------------------------------------------


def test_good_material_passes_and_hides_the_key(fed: pki.FederationFiles) -> None:
    node = fed["nodes"]["hangzhou"]
    material = tls_material.load_material(_config(node), "server")
    assert material.key == node.key.read_bytes()
    assert "PRIVATE" not in repr(material)
    assert isinstance(servers.server_credentials(_config(node)), grpc.ServerCredentials)
    assert isinstance(channels.channel_credentials(_config(fed["people"]["alice"])), grpc.ChannelCredentials)


def test_missing_file(fed: pki.FederationFiles, tmp_path: Path) -> None:
    err = _raises(_config(fed["nodes"]["hangzhou"], cert=tmp_path / "nope.pem"), "server", "TLS_FILE_MISSING")
    assert isinstance(err, ConfigError)
    assert "nope.pem" in err.message and "hpf pki init" in str(err)
    _raises(_config(fed["nodes"]["hangzhou"], ca=tmp_path), "server", "TLS_FILE_MISSING")


def test_invalid_pem(fed: pki.FederationFiles, tmp_path: Path) -> None:
    node = fed["nodes"]["hangzhou"]
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("hello\n")
    err = _raises(_config(node, cert=garbage), "server", "TLS_PEM_INVALID")
    assert isinstance(err, AuthError) and "garbage.pem" in err.message
    err = _raises(_config(node, ca=node.key), "server", "TLS_PEM_INVALID")
    assert "looks like a private key" in str(err)
    assert node.key.read_text().splitlines()[1] not in str(err)
    _raises(_config(node, key=node.cert), "server", "TLS_PEM_INVALID")
    key = serialization.load_pem_private_key(node.key.read_bytes(), password=None)
    encrypted = tmp_path / "enc.key"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    assert "encrypted" in _raises(_config(node, key=encrypted), "server", "TLS_PEM_INVALID").message


def test_key_mismatch(fed: pki.FederationFiles) -> None:
    node = fed["nodes"]["hangzhou"]
    wrong = fed["nodes"]["shanghai"].key
    err = _raises(_config(node, key=wrong), "server", "TLS_KEY_MISMATCH")
    assert str(wrong) in err.message and str(node.cert) in err.message
    assert wrong.read_text().splitlines()[1] not in str(err)


def test_expired_certificate(fed: pki.FederationFiles, tmp_path: Path) -> None:
    files = pki.issue_certificate(fed["ca"], tmp_path, "old", "node", region="hangzhou", valid_days=-1)
    err = _raises(_config(files), "server", "TLS_CERT_EXPIRED")
    assert "old.pem" in err.message and "hpf pki issue" in str(err)


def test_not_yet_valid_certificate(fed: pki.FederationFiles, tmp_path: Path) -> None:
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=3)
    files = pki.issue_certificate(fed["ca"], tmp_path, "future", "person", role="analyst", not_before=later)
    err = _raises(_config(files), "client", "TLS_CERT_NOT_YET_VALID")
    assert "future.pem" in err.message and "clock" in str(err)


def test_wrong_ca(fed: pki.FederationFiles, other: pki.FederationFiles) -> None:
    node = fed["nodes"]["hangzhou"]
    err = _raises(_config(node, ca=other["ca"].cert), "server", "TLS_WRONG_CA")
    assert str(node.cert) in err.message and str(other["ca"].cert) in err.message
    err = _raises(_config(node, ca=fed["nodes"]["shanghai"].cert), "server", "TLS_WRONG_CA")
    assert "not a CA" in err.message


def test_person_certificate_cannot_serve(fed: pki.FederationFiles) -> None:
    _raises(_config(fed["people"]["alice"]), "server", "TLS_WRONG_PURPOSE")
    with pytest.raises(AuthError):
        servers.server_credentials(_config(fed["people"]["alice"]))


def test_add_port_reports_bind_failure() -> None:
    server = servers.new_server(max_workers=1)
    try:
        with pytest.raises(ConfigError) as info:
            servers.add_port(server, "256.1.1.1:1", None)
        assert info.value.code == "SERVER_BIND_FAILED"
    finally:
        server.stop(None)


# --- hpf pki ----------------------------------------------------------------------------------------------


@pytest.fixture()
def cli() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def test_cli_init_show_issue(cli: typer.Typer, tmp_path: Path) -> None:
    runner = CliRunner()
    args = [
        "pki",
        "init",
        "--dir",
        str(tmp_path),
        "--federation",
        "test",
        "--nodes",
        "hangzhou, ningbo",
        "--person",
        "alice:analyst:hangzhou",
        "--person",
        "bob:auditor",
        "--host",
        "node.example",
    ]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert certificates.read_identity((tmp_path / "people" / "alice.pem").read_bytes()).region == "hangzhou"
    assert (tmp_path / "nodes" / "ningbo.key").is_file()
    assert "kept" in runner.invoke(cli, args).output

    shown = runner.invoke(cli, ["pki", "show", str(tmp_path / "people" / "alice.pem")])
    assert shown.exit_code == 0
    assert "analyst" in shown.output and "hangzhou" in shown.output and "valid (" in shown.output

    issued = runner.invoke(
        cli,
        [
            "pki",
            "issue",
            "--ca-dir",
            str(tmp_path),
            "--out",
            str(tmp_path / "extra"),
            "--name",
            "gw",
            "--kind",
            "coordinator",
            "--host",
            "gw.example",
        ],
    )
    assert issued.exit_code == 0, issued.output
    assert "gw.example" in runner.invoke(cli, ["pki", "show", str(tmp_path / "extra" / "gw.pem")]).output


@pytest.mark.parametrize(
    "args",
    [
        ["pki", "init", "--dir", "{d}", "--person", "alice"],
        ["pki", "init", "--dir", "{d}", "--person", "alice:boss"],
        ["pki", "issue", "--ca-dir", "{d}/none", "--out", "{d}", "--name", "x", "--kind", "node"],
        ["pki", "issue", "--ca-dir", "{d}", "--out", "{d}", "--name", "x", "--kind", "robot"],
        ["pki", "show", "{d}/missing.pem"],
    ],
)
def test_cli_errors_print_one_line_and_exit_2(cli: typer.Typer, tmp_path: Path, args: list[str]) -> None:
    result = CliRunner().invoke(cli, [a.format(d=tmp_path) for a in args])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: [")
    assert "Traceback" not in result.output


# --- malformed certificates: a stable code wherever one is read, never an escaping exception -------------------


def _pem(der: bytes, label: str = "CERTIFICATE") -> bytes:
    body = "\n".join(textwrap.wrap(base64.b64encode(der).decode(), 64))
    return f"-----BEGIN {label}-----\n{body}\n-----END {label}-----\n".encode()


def _malformed(der: bytes, form: str) -> bytes:
    """A real certificate (DER) made malformed in one way."""
    find, offset, byte = {
        "version 5": (bytes.fromhex("a003020102"), 4, 0x05),  # X.509 v3 (2) -> 5: no such version
        "duplicate extension": (bytes.fromhex("0603551d0e"), 4, 0x23),  # subject key id's OID -> authority key id's
    }[form]
    at = der.find(find)
    assert at > 0
    return der[: at + offset] + bytes([byte]) + der[at + offset + 1 :]


@pytest.mark.parametrize("form", ["version 5", "duplicate extension"])
def test_a_malformed_certificate_gets_a_stable_code_wherever_it_is_read(
    fed: pki.FederationFiles, tmp_path: Path, form: str
) -> None:
    files = fed["people"]["alice"]
    der = _malformed(_cert(files.cert).public_bytes(serialization.Encoding.DER), form)
    bad = _pem(der)
    path = tmp_path / "bad.pem"
    path.write_bytes(bad)
    for data, as_der in ((bad, False), (der, True)):
        with pytest.raises(ValueError):
            certificates.load_certificate(data, der=as_der)
    checks: list[tuple[str, Callable[[], object]]] = [
        (
            "TLS_PEM_INVALID",
            lambda: certificates.read_identity(bad),
        ),  # a peer's certificate, `hpf pki revoke`'s argument
        ("TLS_PEM_INVALID", lambda: tls_material.load_material(_config(files, cert=path), "client")),  # a party's own
        ("TLS_PEM_INVALID", lambda: tls_material.load_material(_config(files, ca=path), "client")),  # a party's CA
        ("AUTH_SIGNER_INVALID", lambda: Signer(bad, files.key.read_bytes())),  # a client's signing certificate
        ("TLS_PEM_INVALID", lambda: EnvelopeVerifier.from_files(path, "test", None)),  # a verifier's CA
        ("PKI_BAD_CERTIFICATE", lambda: revocation.revoke(files.ca.parent, bad)),  # what the operator revokes
        ("TLS_PEM_INVALID", lambda: describe(bad)),  # `hpf pki show`
    ]
    for code, call in checks:
        with pytest.raises(FederationError) as info:
            call()
        assert info.value.code == code, (code, info.value)
    if form == "duplicate extension":  # it loads (extensions are read later): read by identity_of directly
        with pytest.raises(AuthError) as err:
            certificates.identity_of(x509.load_pem_x509_certificate(bad))
        assert err.value.code == "IDENTITY_INVALID"


def test_a_revocation_list_with_a_malformed_version_is_refused(fed: pki.FederationFiles, tmp_path: Path) -> None:
    der = x509.load_pem_x509_crl((fed["ca"].cert.parent / "crl.pem").read_bytes()).public_bytes(
        serialization.Encoding.DER
    )
    at = der.find(bytes.fromhex("020101"))  # v2 (1) -> 5
    path = tmp_path / "crl.pem"
    path.write_bytes(_pem(der[: at + 2] + b"\x05" + der[at + 3 :], "X509 CRL"))
    with pytest.raises(AuthError) as err:
        RevocationList(path, _cert(fed["ca"].cert))
    assert err.value.code == "AUTH_CRL_INVALID"


# --- the CA's own record of its revocation lists ----------------------------------------------------------------


def _list(path: Path) -> tuple[int | None, set[int]]:
    crl = x509.load_pem_x509_crl(path.read_bytes())
    return revocation.crl_number(crl), {entry.serial_number for entry in crl}


def _serial(files: key_files.CertFiles) -> int:
    return certificates.read_identity(files.cert.read_bytes()).serial


def test_the_ca_keeps_a_private_record_of_every_list_and_revocation(tmp_path: Path) -> None:
    own = pki.init_federation(tmp_path, [], federation="test", clients=[("zoe", "caseworker", None)])
    record_path = tmp_path / ca_record.RECORD_FILE
    assert stat.S_IMODE(record_path.stat().st_mode) == 0o600  # next to ca.key, as private as it
    revocation.revoke(tmp_path, own["people"]["zoe"].cert.read_bytes(), reason=x509.ReasonFlags.key_compromise)
    assert stat.S_IMODE(record_path.stat().st_mode) == 0o600
    record = ca_record.load(record_path, _cert(own["ca"].cert))
    assert record is not None and record.number == 2 and record.serials == {_serial(own["people"]["zoe"])}
    revocation.refresh(tmp_path)  # the record keeps why, and the next list says so again
    entry = x509.load_pem_x509_crl((tmp_path / "crl.pem").read_bytes())[0]
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == x509.ReasonFlags.key_compromise
    assert not list(tmp_path.glob(".ca-revocations.json.*"))  # written atomically: no temporary file left


def test_a_ca_from_before_the_record_starts_one_from_its_list_once_then_trusts_only_the_record(
    cli: typer.Typer, tmp_path: Path
) -> None:
    people = [("zoe", "caseworker", None), ("yan", "caseworker", None)]
    own = pki.init_federation(tmp_path, [], federation="test", clients=people)
    crl, record_path = tmp_path / "crl.pem", tmp_path / ca_record.RECORD_FILE
    older = crl.read_bytes()  # list 1: nobody revoked
    revocation.revoke(tmp_path, own["people"]["zoe"].cert.read_bytes())  # list 2: zoe
    record_path.unlink()  # as a CA made before CAs kept a record
    result = CliRunner().invoke(cli, ["pki", "crl", "--ca-dir", str(tmp_path)])
    assert result.exit_code == 0 and "number 3" in result.stdout and "note:" not in result.stderr
    assert _list(crl) == (3, {_serial(own["people"]["zoe"])})  # started from list 2, as it stood
    assert stat.S_IMODE(record_path.stat().st_mode) == 0o600
    crl.write_bytes(older)  # from now on crl.pem is only what the CA publishes: list 1 put back counts for nothing
    result = CliRunner().invoke(cli, ["pki", "crl", "--ca-dir", str(tmp_path)])
    assert result.exit_code == 0 and "number 4" in result.stdout and "not the newest list" in result.stderr
    assert _list(crl) == (4, {_serial(own["people"]["zoe"])})
    revocation.revoke(tmp_path, own["people"]["yan"].cert.read_bytes())
    assert _list(crl) == (5, {_serial(own["people"]["zoe"]), _serial(own["people"]["yan"])})


def test_a_ca_without_a_record_and_an_unreadable_list_signs_nothing(tmp_path: Path, other: pki.FederationFiles) -> None:
    own = pki.init_federation(tmp_path, [], federation="test", clients=[("zoe", "caseworker", None)])
    crl, record_path = tmp_path / "crl.pem", tmp_path / ca_record.RECORD_FILE
    record_path.unlink()
    for bad in (b"garbage", (other["ca"].cert.parent / "crl.pem").read_bytes()):  # unreadable, another CA's
        crl.write_bytes(bad)
        for sign in (
            lambda: revocation.refresh(tmp_path),
            lambda: revocation.revoke(tmp_path, own["people"]["zoe"].cert.read_bytes()),
            lambda: pki.init_federation(tmp_path, []),
        ):
            with pytest.raises(ConfigError) as info:
                sign()
            assert info.value.code == "PKI_CRL_INVALID" and "newest crl.pem" in (info.value.hint or "")
            assert crl.read_bytes() == bad and not record_path.exists()  # it could not tell what it revoked


def test_a_broken_or_foreign_record_is_refused_and_nothing_is_signed(
    tmp_path: Path, other: pki.FederationFiles
) -> None:
    own = pki.init_federation(tmp_path, [], federation="test", clients=[("zoe", "caseworker", None)])
    crl, record_path = tmp_path / "crl.pem", tmp_path / ca_record.RECORD_FILE
    listed = crl.read_bytes()
    good = record_path.read_text()
    doc = json.loads(good)
    for broken in (
        "not json",
        "[]",
        json.dumps({**doc, "crl_number": -1}),
        json.dumps({**doc, "crl_number": "1"}),
        json.dumps({**doc, "revoked": [{"serial": "1f\n", "revoked_at": "2026-01-01T00:00:00Z", "reason": None}]}),
        json.dumps({**doc, "revoked": [{"serial": "1f", "revoked_at": "yesterday", "reason": None}]}),
        json.dumps({**doc, "revoked": [{"serial": "1f", "revoked_at": "2026-01-01T00:00:00Z", "reason": "whim"}]}),
        json.dumps({**doc, "revoked": [{"serial": "1f", "revoked_at": "2026-01-01T00:00:00Z", "reason": None}] * 2}),
        (other["ca"].cert.parent / ca_record.RECORD_FILE).read_text(),  # another CA's record
    ):
        record_path.write_text(broken)
        with pytest.raises(ConfigError) as info:
            revocation.revoke(tmp_path, own["people"]["zoe"].cert.read_bytes())
        assert info.value.code == "PKI_CA_RECORD_INVALID", broken
        assert crl.read_bytes() == listed and record_path.read_text() == broken
    record_path.write_text(good)
    revocation.revoke(tmp_path, own["people"]["zoe"].cert.read_bytes())
    assert _list(crl) == (2, {_serial(own["people"]["zoe"])})


def test_a_deeply_nested_record_or_state_is_refused_with_its_code(tmp_path: Path) -> None:
    """A CA record or a party's revocation state made of nothing but brackets is malformed, not a crash."""
    from cryptography import x509

    from hpf.federation.trust import ca_record, revocation

    nested = b"[" * 200_000 + b"]" * 200_000
    with pytest.raises(ConfigError) as info:
        ca_record.parse(nested, "ab" * 32)
    assert info.value.code == "PKI_CA_RECORD_INVALID"
    own = pki.init_federation(tmp_path / "pki", [], federation="test")
    state = tmp_path / "state.json"
    state.write_bytes(nested)
    ca_cert = x509.load_pem_x509_certificate(own["ca"].cert.read_bytes())
    with pytest.raises(ConfigError) as info:
        revocation.RevocationList(tmp_path / "pki" / revocation.CRL_FILE, ca_cert, state)
    assert info.value.code == "REVOCATION_STATE_INVALID"
