"""What every StoryShort gRPC service shares: config, logging, deadlines, retry policy,
error mapping, metrics and the server bootstrap."""
