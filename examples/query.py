"""Ask a running sidecar a few questions: ``python examples/query.py [host:port]``."""

from __future__ import annotations

import asyncio
import sys

import grpc

from sidecar.pb import sidecar_pb2 as pb
from sidecar.pb import sidecar_pb2_grpc as pb_grpc


async def main(target: str) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.SidecarServiceStub(channel)
        metered = await stub.GetMeteredEntitlement(
            pb.GetMeteredEntitlementRequest(
                customer_id="customer-demo",
                feature_id="api-calls",
                options=pb.MeteredEntitlementOptions(requested_usage=10),
            )
        )
        print("GetMeteredEntitlement(api-calls, requested_usage=10):")
        print(metered)
        state = await stub.GetEntitlementsStateV2(
            pb.GetEntitlementsStateV2Request(customer_id="customer-demo")
        )
        print(f"GetEntitlementsStateV2: {len(state.entitlements)} entitlements")
        for ent in state.entitlements:
            variant = ent.WhichOneof("entitlement")
            if variant == "credit":
                name = ent.credit.currency.currency_id
                detail = f"remaining={ent.credit.remaining:g} of {ent.credit.usage_limit:g}"
            elif variant == "metered":
                name = ent.metered.feature.id
                limit = "unlimited" if ent.metered.is_unlimited else f"{ent.metered.usage_limit:g}"
                detail = f"usage={ent.metered.current_usage:g} / {limit}"
            else:
                name = getattr(ent, str(variant)).feature.id
                detail = ""
            print(f"  {name:20} {variant:8} has_access={ent.has_access!s:5} {detail}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:50051"))
