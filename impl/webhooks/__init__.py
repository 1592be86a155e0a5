"""The `webhooks` tag: a user's subscriptions, and the signed deliveries of their events."""
