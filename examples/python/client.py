"""A Python client of the credits billing service over gRPC, on Debian's python3-grpcio.

Generate the code first (README, "Calling from another language"):

    npx buf generate --template examples/python/buf.gen.yaml -o examples/python

then run, with the generated folder on the path:

    PYTHONPATH=examples/python/gen BILLING_TARGET=127.0.0.1:8080 BILLING_TOKEN=... \
        /usr/bin/python3 examples/python/client.py alice

It grants credits, charges some, reads the balance, then makes two calls the service refuses
and prints the typed ErrorDetail of each, read from the `grpc-status-details-bin` trailer.
Every step prints one JSON line; money stays in integer milli-credits throughout.
test/server/python-client.test.ts runs this file against a real server.
"""

import json
import os
import sys
import uuid

import grpc

from billing.v1 import billing_service_pb2 as billing
from billing.v1 import billing_service_pb2_grpc as billing_grpc
from billing.v1 import errors_pb2 as errors
from google.rpc import status_pb2

STATUS_DETAILS_KEY = "grpc-status-details-bin"


def error_detail(error: grpc.RpcError):
    """The billing.v1.ErrorDetail a refused call carries, or None.

    gRPC servers send a google.rpc.Status, serialized, in the `grpc-status-details-bin`
    trailer; its `details` are Any messages, and this service puts one ErrorDetail there.
    grpcio hands binary (`-bin`) metadata over already base64-decoded.
    """
    for key, value in error.trailing_metadata() or ():
        if key != STATUS_DETAILS_KEY:
            continue
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            if detail.Is(errors.ErrorDetail.DESCRIPTOR):
                unpacked = errors.ErrorDetail()
                detail.Unpack(unpacked)
                return unpacked
    return None


def describe_refusal(error: grpc.RpcError) -> dict:
    detail = error_detail(error)
    out = {"code": error.code().name, "message": error.details()}
    if detail is not None:
        out["reason"] = errors.ErrorReason.Name(detail.reason)
        out["field"] = detail.field
        out["required_millicredits"] = detail.required_millicredits
        out["available_millicredits"] = detail.available_millicredits
    return out


def emit(step: str, **fields) -> None:
    print(json.dumps({"step": step, **fields}), flush=True)


def main() -> int:
    user = sys.argv[1] if len(sys.argv) > 1 else "python-example"
    target = os.environ.get("BILLING_TARGET", "127.0.0.1:8080")
    token = os.environ.get("BILLING_TOKEN")
    # The bearer token goes in the metadata of every call; never print it.
    metadata = (("authorization", f"Bearer {token}"),) if token else ()

    with grpc.insecure_channel(target) as channel:
        stub = billing_grpc.BillingServiceStub(channel)

        granted = stub.Grant(
            billing.GrantRequest(
                user_id=user,
                idempotency_key=f"py-{uuid.uuid4()}",
                amount_millicredits=5_000,
                reason="python example",
            ),
            metadata=metadata,
            timeout=10,
        )
        emit("grant", balance_millicredits=granted.balance.balance_millicredits)

        charged = stub.Charge(
            billing.ChargeRequest(
                user_id=user,
                idempotency_key=f"py-{uuid.uuid4()}",
                product="muse",
                amount_millicredits=1_250,
                reference="python-run-1",
            ),
            metadata=metadata,
            timeout=10,
        )
        emit(
            "charge",
            charged_millicredits=charged.charged_millicredits,
            transaction_id=charged.transaction.id,
        )

        balance = stub.GetBalance(billing.GetBalanceRequest(user_id=user), metadata=metadata, timeout=10)
        emit(
            "balance",
            balance_millicredits=balance.balance.balance_millicredits,
            available_millicredits=balance.balance.available_millicredits,
        )

        # Refused: more than the user has.
        try:
            stub.Charge(
                billing.ChargeRequest(
                    user_id=user,
                    idempotency_key=f"py-{uuid.uuid4()}",
                    product="muse",
                    amount_millicredits=1_000_000,
                ),
                metadata=metadata,
                timeout=10,
            )
            emit("overdraft", refused=False)
        except grpc.RpcError as error:
            emit("overdraft", refused=True, **describe_refusal(error))

        # Refused: a malformed field, named in the detail.
        try:
            stub.GetBalance(billing.GetBalanceRequest(user_id=""), metadata=metadata, timeout=10)
            emit("bad_field", refused=False)
        except grpc.RpcError as error:
            emit("bad_field", refused=True, **describe_refusal(error))
    return 0


if __name__ == "__main__":
    sys.exit(main())
