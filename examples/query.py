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
            feature = getattr(ent, variant).feature.id if variant else "?"
            print(f"  {feature:20} {variant:8} has_access={ent.has_access} fallback={ent.is_fallback}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:50051"))
