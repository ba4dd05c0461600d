"""Notification channels: each takes a message (one event, or a route's group of them) and
delivers it to one far side. Thin senders: what goes where is the router's business
(:mod:`vigil.notify.config`), retries and at-least-once the sender's
(:mod:`vigil.notify.sender`)."""
