"""Wire protocol shared by hub and agent: mesh.proto, generated code, sans-IO credit window."""
