"""A centre's consent service over gRPC: its own systems get tokens every region accepts; a bank, another centre's
systems or the coordinator are refused; bad input is refused by its code and the next honest request answered."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from hpf.federation.consent import tokens as consent
from hpf.federation.consent.issuer import Issuer, make_issuer, public_raw
from hpf.federation.consent.service import GrantHandler, request_grants, serving
from hpf.federation.consent.verifier import ConsentVerifier
from hpf.federation.errors import FederationError
from hpf.federation.person_id import check_char
from hpf.federation.trust import certificates, pki
from hpf.federation.trust.channels import node_target
from hpf.federation.trust.tls import TlsConfig

FEDERATION = "test"
PEOPLE = (
    ("desk", "caseworker", "shanghai"),  # a counter of the service's own centre
    ("ops", "operator", "shanghai"),
    ("hz-desk", "caseworker", "hangzhou"),  # another centre's counter
    ("bank", "integrator", None),
)
IDS = [f"31010119900101{n:03d}" + check_char(f"31010119900101{n:03d}") for n in range(1, 4)]
TERMS = {"purpose": "loan-review", "facts": ["duplicate_loans", "loan_cities"], "days": 30}


class Service:
    def __init__(self, root: Path, port: int, issuer: Issuer) -> None:
        self.root, self.port, self.issuer = root, port, issuer

    def tls(self, name: str, kind: str = "people") -> TlsConfig:
        d = self.root / "pki"
        return TlsConfig(ca=d / "ca.pem", cert=d / kind / f"{name}.pem", key=d / kind / f"{name}.key")

    def grantee(self, person: str = "bank") -> bytes:
        return consent.grantee_of(
            certificates.load_certificate((self.root / "pki" / "people" / f"{person}.pem").read_bytes())
        )

    def grant(self, caller: str = "desk", kind: str = "people", **overrides: object) -> list[str]:
        tls = self.tls(caller, kind)
        asked = {"person_ids": IDS, "grantee": self.grantee(), **TERMS, **overrides}
        reply = request_grants(
            f"127.0.0.1:{self.port}",
            tls,
            server_name=node_target(tls, "shanghai"),
            **asked,  # type: ignore[arg-type]
        )
        assert reply.issuer == self.issuer.id and len(reply.grant_ids) == len(reply.tokens)
        return list(reply.tokens)

    def refused(self, caller: str = "desk", kind: str = "people", **overrides: object) -> FederationError:
        with pytest.raises(FederationError) as err:
            self.grant(caller, kind, **overrides)
        return err.value


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    root = tmp_path_factory.mktemp("consent-service")
    pki.init_federation(root / "pki", ["shanghai", "hangzhou"], federation=FEDERATION, clients=PEOPLE)
    issuer, _ = make_issuer(root / "issuer", "shanghai-consent")
    tls = TlsConfig(
        ca=root / "pki" / "ca.pem", cert=root / "pki/nodes/shanghai.pem", key=root / "pki/nodes/shanghai.key"
    )
    with serving(GrantHandler(issuer, "shanghai"), "127.0.0.1:0", tls) as port:
        yield Service(root, port, issuer)


def test_the_centres_own_systems_get_tokens_every_region_accepts(service: Service) -> None:
    verifier = ConsentVerifier({service.issuer.id: public_raw(service.issuer.key)})
    for caller in ("desk", "ops"):
        tokens = service.grant(caller)
        assert len(tokens) == len(IDS)
        for pid, token in zip(IDS, tokens, strict=True):
            raw = consent.parse_token_text(token).encode()
            ask = {"grantee": service.grantee(), "purpose": "loan-review", "facts": ["duplicate_loans"]}
            assert verifier.check(raw, pid, **ask) is None  # type: ignore[arg-type]
            assert verifier.check(raw, IDS[0] if pid != IDS[0] else IDS[1], **ask) == "CONSENT_PERSON_MISMATCH"  # type: ignore[arg-type]
            assert pid not in token
        expiry = consent.parse_token_text(tokens[0]).grant.not_after
        assert abs(expiry - (time.time() + 30 * 86_400)) < 120


@pytest.mark.parametrize(("caller", "kind"), [("bank", "people"), ("hz-desk", "people"), ("coordinator", "")])
def test_anyone_but_the_centres_own_systems_is_refused(service: Service, caller: str, kind: str) -> None:
    if kind == "":  # the coordinator's certificate sits at the top of the pki folder
        d = service.root / "pki"
        tls = TlsConfig(ca=d / "ca.pem", cert=d / "coordinator.pem", key=d / "coordinator.key")
        with pytest.raises(FederationError) as info:
            request_grants(
                f"127.0.0.1:{service.port}",
                tls,
                server_name=node_target(tls, "shanghai"),
                person_ids=IDS,
                grantee=service.grantee(),
                purpose="loan-review",
                facts=["duplicate_loans"],
                days=1,
            )
        err = info.value
    else:
        err = service.refused(caller, kind)
    assert err.code == "PARTY_NOT_ALLOWED"
    assert err.status == grpc.StatusCode.PERMISSION_DENIED
    assert service.grant("desk")  # the service keeps serving


@pytest.mark.parametrize(
    ("overrides", "code", "says"),
    [
        ({"person_ids": [IDS[0], IDS[1][:-1] + ("0" if IDS[1][-1] != "0" else "1")]}, "PERSON_ID_INVALID", "person 2"),
        ({"person_ids": []}, "CONSENT_TERMS_INVALID", "1 to"),
        ({"days": 0}, "CONSENT_TERMS_INVALID", "days"),
        ({"days": 400}, "CONSENT_TERMS_INVALID", "days"),
        ({"facts": ["everything"]}, "CONSENT_TERMS_INVALID", ""),
        ({"purpose": "Loan Review!"}, "CONSENT_TERMS_INVALID", ""),
        ({"grantee": b"short"}, "CONSENT_TERMS_INVALID", "grantee"),
    ],
)
def test_bad_input_is_refused_by_its_code_and_the_next_request_answered(
    service: Service, overrides: dict[str, object], code: str, says: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="hpf.consent.service"):
        err = service.refused(**overrides)
    assert err.code == code and says in err.message
    assert not any(pid[:17] in err.message + caplog.text for pid in IDS)  # never an identifier
    assert len(service.grant()) == len(IDS)


def test_bad_input_travels_as_invalid_argument(service: Service) -> None:
    from hpf.federation.generated import hpf_consent_pb2 as cpb
    from hpf.federation.generated import hpf_consent_pb2_grpc as cpb_grpc
    from hpf.federation.trust.channels import secure_channel

    tls = service.tls("desk")
    with secure_channel(f"127.0.0.1:{service.port}", tls, server_name=node_target(tls, "shanghai")) as channel:
        stub = cpb_grpc.ConsentIssuerStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.Grant(cpb.GrantRequest(person_ids=IDS, grantee=service.grantee(), purpose="loan-review", days=0))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as info:  # bytes that are no GrantRequest
            channel.unary_unary("/hpf.consent.v1.ConsentIssuer/Grant")(b"\xff\xff\xff")
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
