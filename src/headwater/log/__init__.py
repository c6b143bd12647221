"""The durable log: ports and adapters (embedded file log, in-memory, NATS JetStream)."""
