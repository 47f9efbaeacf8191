"""The gRPC and HTTP edges: translate, validate, delegate."""
