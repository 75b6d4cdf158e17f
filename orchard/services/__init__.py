"""Business rules, one module per resource noun. Functions take a session and the owner's user
id, enforce the rules and return store rows; the gRPC layer converts. Nothing here does network
I/O."""
