"""Publishing committed change events: outbox relay, push hub, Redis Stream."""
