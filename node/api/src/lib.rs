//! gRPC API definitions shared by the node agent and the provider.
