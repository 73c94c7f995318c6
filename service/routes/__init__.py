"""HTTP routers: `/v1` identify and models, `/v2` Open Inference Protocol, `/metrics`."""
