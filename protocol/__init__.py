"""Wire protocol shared by hub and agent: mesh.proto and its generated code, the Chunk codec,
the sans-IO credit window, stream integrity, agent tokens and the gRPC options both ends use.

Imports neither end. Everything here but the generated ``mesh_pb2_grpc`` is free of I/O and
of any event loop, so it runs under asyncio and trio alike."""
