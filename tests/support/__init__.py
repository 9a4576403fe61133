"""What the tests share: a scripted gRPC server, one client for every call path, and engine test callables."""
