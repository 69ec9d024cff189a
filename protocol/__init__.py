"""Wire protocol shared by hub and agent: mesh.proto and its generated code, the Chunk codec,
the sans-IO credit window, stream integrity, agent tokens and the gRPC options both ends use.

Imports neither end. Nothing here needs an event loop (the generated ``mesh_pb2_grpc`` stubs
aside, which are gRPC's), so it serves asyncio and trio alike; the only I/O is the token
secret file the hub loads at startup."""
