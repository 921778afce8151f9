"""Features: Spark preprocessing, each entity's online features, the Ignite feature cache and its connection, Kafka events and the stream that keeps the cache fresh."""
